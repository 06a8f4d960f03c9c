"""The HTML report of a reconstruction: figures and key numbers read from the result file.

``write_report`` opens a result file (layout in :mod:`ptyscope.reconstruction.results`),
draws one PNG per figure and writes ``index.html`` beside them, a self-contained page that
refers to the PNGs by relative path, and opens with the failure signs that
:mod:`ptyscope.report.diagnostics` finds, each with what to try. The object is read one
slice at a time, so the report of a large reconstruction never holds more than one slice's
complex array in memory.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ptyscope import __version__
from ptyscope.io.atomic import atomic_path
from ptyscope.io.hdf5_guard import open_untrusted_hdf5
from ptyscope.report import reconstruction_figures as figs
from ptyscope.report.diagnostics import Finding, diagnose, format_findings, read_summary
from ptyscope.report.viewer import write_viewer

__all__ = [
    "REQUIRED_DATASETS",
    "StateImages",
    "format_findings",
    "read_state_images",
    "summed_phase",
    "write_report",
]

FloatArray = npt.NDArray[np.float64]

#: Datasets a result file must hold for a report.
REQUIRED_DATASETS = ("object", "probe", "positions_ang", "nominal_positions_ang")
#: Per-iteration records plotted from ``history/`` (any may be absent).
_HISTORY_KEYS = ("loss", "tilt_x_mrad", "tilt_y_mrad", "slice_thickness_ang", "seconds")
#: Keys ``truth`` may hold.
_TRUTH_KEYS = ("phase_rad",)
#: At most this many slice panels; thicker objects show evenly spaced slices.
_MAX_SLICE_PANELS = 35
#: Largest object (2 · (states + 1) · (slices + 1) · ny · nx pixels) whose interactive viewer
#: the report builds: about 100 MB of embedded 8-bit images at worst.
VIEWER_MAX_PIXELS = 100_000_000
#: Figure captions in the page (the slice-phase one is built per run).
_CAPTIONS = {
    "object_amplitude.png": "Amplitude of the object, the product over slices (state 0).",
    "object_states.png": "Summed phase of each object state; standard deviation across states.",
    "probe_modes.png": "Probe modes |ψ| with their share of the total power.",
    "loss.png": "Loss per iteration.",
    "positions.png": "Position corrections: refined minus nominal scan positions.",
    "parameters.png": "Tilt and slice thickness per iteration.",
    "tilt_map.png": "Local tilt over the scan.",
    "truth.png": "Summed phase against the known truth (means removed).",
}


# --------------------------------------------------------------------------- helpers


def summed_phase(object_slices: npt.ArrayLike) -> FloatArray:
    """Sum over slices of the phase of each slice [rad].

    Parameters
    ----------
    object_slices:
        Complex array (slices, ny, nx): the transmission functions of one object state.

    Returns
    -------
    Real array (ny, nx): Σ_k arg O_k [rad], each arg in (-π, π].

    Examples
    --------
    >>> import numpy as np
    >>> float(summed_phase(np.exp(1j * np.full((3, 2, 2), 0.25)))[0, 0])
    0.75
    """
    slices = np.asarray(object_slices)
    if slices.ndim != 3:
        raise ValueError(f"object_slices must have shape (slices, ny, nx), got {slices.shape}")
    phase: FloatArray = np.angle(slices).astype(np.float64).sum(axis=0)
    return phase


@dataclass(frozen=True)
class StateImages:
    """Images of one object state, built slice by slice.

    Attributes
    ----------
    slice_indices: the slices kept in ``phases`` (all of them up to a panel limit).
    phases: real array (len(slice_indices), ny, nx), arg O_k of those slices [rad].
    phase_sum: real array (ny, nx), Σ_k arg O_k over all slices [rad].
    amplitude: real array (ny, nx), Π_k |O_k| = |Π_k O_k| over all slices.
    """

    slice_indices: tuple[int, ...]
    phases: npt.NDArray[np.float32]
    phase_sum: FloatArray
    amplitude: FloatArray


def read_state_images(
    object_dataset: Any, state: int, *, max_slices: int | None = None
) -> StateImages:
    """Read one object state slice by slice and return its phase and amplitude images.

    Parameters
    ----------
    object_dataset:
        Complex array-like (states, slices, ny, nx), e.g. the ``object`` dataset of an open
        result file; only ``object_dataset[state, k]`` is read, one slice at a time.
    state:
        Index of the state.
    max_slices:
        Keep the phases of at most this many evenly spaced slices (``None``: none kept);
        the sum and the amplitude always cover every slice.
    """
    num_slices, ny, nx = (int(n) for n in object_dataset.shape[1:])
    keep = _spread(num_slices, max_slices) if max_slices else ()
    phases = np.zeros((len(keep), ny, nx), dtype=np.float32)
    phase_sum = np.zeros((ny, nx))
    amplitude = np.ones((ny, nx))
    for k in range(num_slices):
        layer = np.asarray(object_dataset[state, k])
        phase = summed_phase(layer[None])
        phase_sum += phase
        amplitude *= np.abs(layer)
        if k in keep:
            phases[keep.index(k)] = phase
    return StateImages(keep, phases, phase_sum, amplitude)


def _spread(count: int, limit: int) -> tuple[int, ...]:
    """``limit`` evenly spaced indices out of ``range(count)`` (all when count <= limit)."""
    if count <= limit:
        return tuple(range(count))
    return tuple(sorted({round(i) for i in np.linspace(0, count - 1, limit)}))


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class _Run:
    """Everything the report needs from a result file except the object itself."""

    source: Path
    object_shape: tuple[int, int, int, int]
    object_pixel_ang: tuple[float, float]
    probe: npt.NDArray[np.complex64]
    probe_pixel_ang: tuple[float, float]
    positions_ang: FloatArray
    nominal_positions_ang: FloatArray
    state_weights: FloatArray | None
    tilt_map_mrad: FloatArray | None
    history: dict[str, FloatArray]
    attrs: dict[str, Any] = field(default_factory=dict)
    config_text: str | None = None

    def number(self, name: str) -> float | None:
        value = self.attrs.get(name)
        if value is None:
            return None
        try:
            number = float(np.asarray(value, dtype=np.float64))
        except (TypeError, ValueError):
            return None
        return number if math.isfinite(number) else None

    def text(self, name: str) -> str | None:
        value = self.attrs.get(name)
        return None if value is None else _as_str(value)


def _as_str(value: Any) -> str:
    if isinstance(value, bytes | np.bytes_):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _pixel_size(dataset: Any, source: Path) -> tuple[float, float] | None:
    if "pixel_size_ang" not in dataset.attrs:
        return None
    values = np.atleast_1d(np.asarray(dataset.attrs["pixel_size_ang"], dtype=np.float64))
    if values.size == 1:
        values = np.repeat(values, 2)
    if values.shape != (2,) or not np.all(values > 0):
        raise ValueError(
            f"{source}: {dataset.name} attribute pixel_size_ang must be two values > 0 "
            f"(y, x) [Å], got {values.tolist()}"
        )
    return float(values[0]), float(values[1])


def _read_run(handle: Any, source: Path) -> _Run:
    missing = [name for name in REQUIRED_DATASETS if name not in handle]
    if missing:
        raise ValueError(
            f"{source} is not a complete ptyscope result file: missing dataset(s) "
            f"{', '.join(missing)} (found: {', '.join(sorted(handle.keys())) or 'nothing'})"
        )
    fmt = handle.attrs.get("format")
    if fmt is not None and _as_str(fmt) != "ptyscope-result":
        raise ValueError(f"{source}: format attribute must be 'ptyscope-result', got {fmt!r}")
    obj, probe = handle["object"], handle["probe"]
    if len(obj.shape) != 4 or 0 in obj.shape:
        raise ValueError(
            f"{source}: object must have shape (states, slices, ny, nx), got {obj.shape}"
        )
    states, slices, ny, nx = (int(n) for n in obj.shape)
    if len(probe.shape) != 3 or 0 in probe.shape:
        raise ValueError(f"{source}: probe must have shape (modes, ny, nx), got {probe.shape}")
    object_pixel = _pixel_size(obj, source)
    if object_pixel is None:
        raise ValueError(f"{source}: object has no pixel_size_ang attribute (y, x) [Å]")
    positions = np.asarray(handle["positions_ang"], dtype=np.float64)
    nominal = np.asarray(handle["nominal_positions_ang"], dtype=np.float64)
    try:
        figs.position_corrections_ang(positions, nominal)
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from None
    history: dict[str, FloatArray] = {}
    if "history" in handle:
        group = handle["history"]
        for key in _HISTORY_KEYS:
            if key in group:
                history[key] = np.atleast_1d(np.asarray(group[key], dtype=np.float64))
    weights = handle.get("state_weights")
    tilt_map = handle.get("tilt_map_mrad")
    if tilt_map is not None and (len(tilt_map.shape) != 3 or tilt_map.shape[-1] != 2):
        raise ValueError(
            f"{source}: tilt_map_mrad must have shape (scan_y, scan_x, 2), got {tilt_map.shape}"
        )
    config = handle.get("config")
    config_text = (
        _as_str(config.attrs["text"]) if config is not None and "text" in config.attrs else None
    )
    return _Run(
        source=source,
        object_shape=(states, slices, ny, nx),
        object_pixel_ang=object_pixel,
        probe=np.asarray(probe).astype(np.complex64, copy=False),
        probe_pixel_ang=_pixel_size(probe, source) or object_pixel,
        positions_ang=positions,
        nominal_positions_ang=nominal,
        state_weights=None if weights is None else np.asarray(weights, dtype=np.float64),
        tilt_map_mrad=None if tilt_map is None else np.asarray(tilt_map, dtype=np.float64),
        history=history,
        attrs=dict(handle.attrs),
        config_text=config_text,
    )


# --------------------------------------------------------------------------- page


def _fmt(value: float | None, spec: str, unit: str = "") -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:{spec}}{' ' + unit if unit else ''}"


def _table_rows(
    run: _Run, position_rms_ang: float, truth_rms: float | None
) -> list[tuple[str, str]]:
    states, slices, ny, nx = run.object_shape
    modes, probe_ny, probe_nx = run.probe.shape
    loss = run.history.get("loss")
    seconds = run.history.get("seconds")
    thickness = run.number("slice_thickness_ang")
    total = run.number("total_thickness_ang")
    if total is None and thickness is not None:
        total = slices * thickness
    energy = run.number("energy_ev")
    iterations = run.number("iterations")
    if iterations is None and loss is not None:
        iterations = float(len(loss))
    tilt_x, tilt_y = run.number("tilt_x_mrad"), run.number("tilt_y_mrad")
    if "data_shape" in run.attrs:
        data_shape = " × ".join(str(int(n)) for n in np.atleast_1d(run.attrs["data_shape"]))
    else:
        data_shape = f"{len(run.positions_ang)} patterns of {probe_ny} × {probe_nx} px"
    weights = ""
    if run.state_weights is not None and states > 1:
        weights = " (weights " + ", ".join(f"{w:.3f}" for w in run.state_weights) + ")"
    fractions = ", ".join(f"{100 * f:.1f} %" for f in figs.probe_power_fractions(run.probe))
    dy, dx = run.object_pixel_ang
    rows = [
        ("result file", run.source.name),
        ("data shape", data_shape),
        ("object grid", f"{ny} × {nx} px at ({dy:.4g}, {dx:.4g}) Å (y, x)"),
        ("energy", "n/a" if energy is None else f"{energy / 1e3:g} keV"),
        ("probe semiangle", _fmt(run.number("semiangle_mrad"), "g", "mrad")),
        ("slices × thickness", f"{slices} × {_fmt(thickness, '.4g', 'Å')}"),
        ("total thickness", _fmt(total, ".4g", "Å")),
        ("tilt (x, y)", f"{_fmt(tilt_x, '.3f')}, {_fmt(tilt_y, '.3f')} mrad"),
        ("probe modes", f"{modes} ({fractions} of power)"),
        ("object states", f"{states}{weights}"),
        ("iterations", _fmt(iterations, ".0f")),
        ("final loss", "n/a" if loss is None or len(loss) == 0 else f"{loss[-1]:.4g}"),
    ]
    kept = run.number("kept_iteration")
    if kept is not None and iterations is not None and kept != iterations:
        lowest = "" if loss is None or kept >= len(loss) else f" ({loss[int(kept)]:.4g})"
        rows.append(("parameters written", f"after {kept:.0f} iterations, the lowest loss{lowest}"))
    rows += [
        (
            "time per iteration",
            "n/a"
            if seconds is None or len(seconds) == 0
            else f"{np.median(seconds):.3g} s (median; total {seconds.sum():.3g} s)",
        ),
        ("position corrections (RMS)", f"{position_rms_ang:.3g} Å"),
    ]
    if truth_rms is not None:
        rows.append(("phase error vs truth (RMS)", f"{truth_rms:.3g} rad"))
    rows += [
        ("device", run.text("device") or "n/a"),
        ("software", run.text("software") or "n/a"),
        ("report written by", f"ptyscope {__version__}"),
    ]
    return rows


_CSS = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin-bottom: 2em; }
th, td { text-align: left; padding: 0.25em 1em; border-bottom: 1px solid #ddd; }
th { font-weight: normal; color: #555; }
figure { margin: 0 0 2em 0; }
img { max-width: 100%; }
figcaption { color: #555; font-size: 0.9em; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; }
.findings li { margin-bottom: 0.6em; }
.warning .label { color: #b00020; font-weight: bold; }
.info .label { color: #555; }
.try { color: #555; }
"""


def _diagnostics_html(findings: Sequence[Finding]) -> str:
    """The diagnostics section: warnings first, each with what to try, then the notes."""
    esc = html.escape
    warnings = [f for f in findings if f.severity == "warning"]
    lead = "" if warnings else "<p>No failure signs found.</p>\n"
    items = "\n".join(
        f'<li class="{esc(f.severity)}"><span class="label">'
        f"{'warning' if f.severity == 'warning' else 'note'}</span> {esc(f.message)}"
        + (f'<br><span class="try">Try: {esc(f.suggestion)}</span>' if f.suggestion else "")
        + "</li>"
        for f in (*warnings, *(f for f in findings if f.severity != "warning"))
    )
    return lead + (f'<ul class="findings">\n{items}\n</ul>\n' if items else "")


def _page(
    title: str,
    rows: Sequence[tuple[str, str]],
    figures: Sequence[tuple[str, str]],
    config: str | None,
    findings: Sequence[Finding] = (),
    viewer: str | None = None,
) -> str:
    esc = html.escape
    link = (
        f'<p><a href="{esc(viewer)}">Interactive viewer</a>: every slice, object state and '
        "probe mode.</p>\n"
        if viewer
        else "<p>Interactive viewer: too large to build with the report; "
        "run <code>ptyscope view RESULT</code>.</p>\n"
    )
    table = "\n".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows)
    body = "\n".join(
        f'<figure><img src="{esc(name)}" alt="{esc(caption)}">'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
        for name, caption in figures
    )
    config_block = f"<pre>{esc(config)}</pre>" if config else "<p>no config stored</p>"
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<h1>{esc(title)}</h1>\n<h2>Diagnostics</h2>\n{_diagnostics_html(findings)}"
        f"<h2>Run</h2>\n{link}<table>\n{table}\n</table>\n"
        f"<h2>Figures</h2>\n{body}\n<h2>Config</h2>\n{config_block}\n</body>\n</html>\n"
    )


def _truth_phase(truth: Mapping[str, Any] | None, shape: tuple[int, int]) -> FloatArray | None:
    if truth is None:
        return None
    unknown = sorted(set(truth) - set(_TRUTH_KEYS))
    if unknown:
        raise ValueError(
            f"truth has unknown key(s) {', '.join(map(repr, unknown))}; "
            f"valid: {', '.join(_TRUTH_KEYS)}"
        )
    if "phase_rad" not in truth:
        return None
    phase = np.asarray(truth["phase_rad"], dtype=np.float64)
    if phase.shape != shape:
        raise ValueError(
            f"truth['phase_rad'] must be on the object grid, shape (ny, nx)={shape}, "
            f"got {phase.shape}"
        )
    return phase


def write_report(
    result_path: str | os.PathLike[str],
    folder: str | os.PathLike[str],
    *,
    truth: Mapping[str, Any] | None = None,
    measured: npt.ArrayLike | None = None,
) -> Path:
    """Write the figures and ``index.html`` of a reconstruction result into ``folder``.

    Parameters
    ----------
    result_path:
        A result file written by :func:`ptyscope.reconstruction.results.write_result`.
    folder:
        Output folder (created if needed). Written there: ``object_phase.png``,
        ``object_amplitude.png``, ``probe_modes.png``, ``loss.png``, ``positions.png``,
        ``parameters.png``, ``object_states.png`` (more than one object state),
        ``tilt_map.png`` (when the file holds a tilt map), ``truth.png`` (with ``truth``)
        and ``index.html``, which shows them with a table of the run's key numbers. Each
        file is written atomically and ``index.html`` last (an old one is removed first),
        so an interrupted call leaves no page over a mix of old and new figures.
    truth:
        Optional known answers on the object grid: ``{"phase_rad": real (ny, nx)}``, the
        summed phase [rad], compared with state 0's summed phase (means removed).
    measured:
        Optional real (..., ny, nx) patterns the run fitted, in counts: the diagnostics
        then judge the loss against its Poisson noise floor
        (:func:`ptyscope.report.diagnostics.loss_floor`).

    Returns
    -------
    The path of ``index.html``.

    Raises
    ------
    ValueError
        When the file lacks a required dataset (the message names the file and the
        datasets), or ``truth`` does not fit the object grid.
    """
    source, out = Path(result_path), Path(folder)
    with open_untrusted_hdf5(source) as handle:
        run = _read_run(handle, source)
        states, slices, ny, nx = run.object_shape
        truth_phase = _truth_phase(truth, (ny, nx))
        pixel = run.object_pixel_ang
        state0 = read_state_images(handle["object"], 0, max_slices=_MAX_SLICE_PANELS)
        # Only the summed phase of the other states is kept, one slice read at a time.
        other_states = [read_state_images(handle["object"], s) for s in range(1, states)]
        summary = read_summary(handle, phase_sum=state0.phase_sum, amplitude=state0.amplitude)
    findings = diagnose(summary, measured=measured)
    out.mkdir(parents=True, exist_ok=True)
    index = out / "index.html"
    # Each figure is replaced atomically and the index is written last; the old index goes
    # first, so an interrupted rewrite never shows a page over a mix of old and new figures.
    index.unlink(missing_ok=True)
    figs.object_phase_figure(
        out / "object_phase.png",
        phases=state0.phases,
        slice_indices=state0.slice_indices,
        phase_sum=state0.phase_sum,
        pixel_size_ang=pixel,
    )
    figs.object_amplitude_figure(
        out / "object_amplitude.png", amplitude=state0.amplitude, pixel_size_ang=pixel
    )
    figures = ["object_phase.png", "object_amplitude.png"]
    if other_states:
        figs.object_states_figure(
            out / "object_states.png",
            phase_sums=np.stack([im.phase_sum for im in (state0, *other_states)]),
            weights=run.state_weights,
            pixel_size_ang=pixel,
        )
        figures.append("object_states.png")
    figs.probe_figure(out / "probe_modes.png", probe=run.probe, pixel_size_ang=run.probe_pixel_ang)
    figs.loss_figure(out / "loss.png", loss=run.history.get("loss"))
    rms = figs.positions_figure(
        out / "positions.png",
        positions_ang=run.positions_ang,
        nominal_positions_ang=run.nominal_positions_ang,
    )
    figs.parameter_figure(out / "parameters.png", history=run.history)
    figures += ["probe_modes.png", "loss.png", "positions.png", "parameters.png"]
    if run.tilt_map_mrad is not None:
        figs.tilt_map_figure(out / "tilt_map.png", tilt_map_mrad=run.tilt_map_mrad)
        figures.append("tilt_map.png")
    truth_rms = None
    if truth_phase is not None:
        truth_rms = figs.truth_figure(
            out / "truth.png",
            phase_sum=state0.phase_sum,
            truth_phase=truth_phase,
            pixel_size_ang=pixel,
        )
        figures.append("truth.png")
    shown = "all" if len(state0.slice_indices) == slices else f"{len(state0.slice_indices)} of"
    captions = {
        "object_phase.png": f"Phase of the slices ({shown} {slices}, state 0) and their sum.",
        **_CAPTIONS,
    }
    # The interactive viewer embeds every (state, slice) image twice (phase, amplitude) as
    # 8-bit PNGs; past VIEWER_MAX_PIXELS the page would be hundreds of MB, so it is left to
    # `ptyscope view` on request.
    viewer_pixels = 2 * (states + 1) * (slices + 1) * ny * nx
    viewer = None
    if viewer_pixels <= VIEWER_MAX_PIXELS:
        viewer = write_viewer(source, out / "viewer.html").name
    page = _page(
        f"ptyscope reconstruction: {source.name}",
        _table_rows(run, rms, truth_rms),
        [(name, captions[name]) for name in figures],
        run.config_text,
        findings,
        viewer,
    )
    with atomic_path(index) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return index
