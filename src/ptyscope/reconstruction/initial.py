"""Start a reconstruction from earlier results: the ``[init]`` section of a run.

* :func:`initialise_from_result`: an earlier ptyscope result of the same data. This is what
  the two-stage mixed-object preset needs (Gladyshev et al. 2023, 2025): a first run with
  one object state and several probe modes lets the modes absorb the partial spatial
  coherence; the second run starts each of its object states from that object, with its
  own small random phases (states that start equal stay equal), and keeps the modes.
* :func:`import_probe`, :func:`import_object`: a probe or an object from another
  reconstruction (ptyscope, PtyRAD or py4DSTEM, read by :mod:`ptyscope.io.foreign`),
  resampled to this run's pixel size and probe window (:func:`resample_probe`,
  :func:`resample_object`) and placed on its object grid.
* :func:`initialise`: all of the ``[init]`` section of a config.

Resampling (when the pixel sizes differ by more than 1 part in 10⁶) evaluates the
array's discrete Fourier series at the new pixels, cut to the frequencies the new grid
represents: exact for a band-limited probe in its (periodic) window, the band-limited
interpolation of an object (of O − 1, so its vacuum edges match). The probe is centred on
pixel (ny//2, nx//2) in both grids and renormalised to Σ|ψ|² = 1; when less than
:data:`MIN_PROBE_POWER_KEPT` of its intensity falls inside this run's window and band,
resampling is refused (the probe would be cut off). The object is placed so that the
centroid of the foreign run's probe positions lands on the centroid of this run's (a
whole-pixel shift when the pixel sizes agree, so its values are copied exactly); pixels it
does not cover start as vacuum (1). When fewer than :data:`MIN_OBJECT_COVERAGE` of this
run's positions fall on it, the import is refused.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ptyscope.config import InitConfig
from ptyscope.io.foreign import ForeignFormat, read_object, read_probe
from ptyscope.io.hdf5_guard import open_untrusted_hdf5

from .setup import ReconstructionSetup

__all__ = [
    "MIN_OBJECT_COVERAGE",
    "MIN_PROBE_POWER_KEPT",
    "import_object",
    "import_probe",
    "initialise",
    "initialise_from_result",
    "resample_object",
    "resample_probe",
]

#: Least fraction of an imported probe's intensity that must survive the resampling.
MIN_PROBE_POWER_KEPT = 0.9
#: Least fraction of this run's probe positions an imported object must cover.
MIN_OBJECT_COVERAGE = 0.5
#: Pixel sizes closer than this (relative) are taken as equal: no resampling.
_SAME_PIXEL_RTOL = 1e-6


def _read(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    try:
        with open_untrusted_hdf5(path) as handle:
            names = ("object", "probe", "positions_ang", "nominal_positions_ang", "state_weights")
            missing = [name for name in names if name not in handle]
            if missing:
                raise ValueError(
                    f"init.result {os.fspath(path)!r} is not a ptyscope result: it lacks {missing}"
                )
            return {name: handle[name][()] for name in names}
    except OSError as exc:
        raise ValueError(f"init.result: cannot read {os.fspath(path)!r} ({exc})") from None


def _states_from_mean(
    states: np.ndarray, weights: np.ndarray, count: int, noise_rad: float, seed: int
) -> torch.Tensor:
    """``count`` object states, each the weighted mean of ``states`` times exp(i·φ_s).

    states: complex (states, slices, ny, nx); weights: (states,). φ_s ~ N(0, noise_rad²)
    per pixel and state from a generator seeded with ``seed``; no noise when count is 1.
    Returns complex64 (count, slices, ny, nx).
    """
    w = np.asarray(weights, dtype=np.float64).reshape(-1, 1, 1, 1)
    mean = torch.as_tensor((w * states).sum(axis=0).astype(np.complex64))
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn((count, *mean.shape), generator=generator)
    noise *= noise_rad if count > 1 else 0.0
    return mean[None] * torch.polar(torch.ones_like(noise), noise)


def initialise_from_result(
    setup: ReconstructionSetup,
    path: str | os.PathLike[str],
    *,
    obj: bool = True,
    probe: bool = True,
    positions: bool = True,
    state_noise_rad: float = 0.01,
    seed: int = 0,
    states: str = "mean",
) -> None:
    """Overwrite the initial parameters of ``setup`` with those of a result file, in place.

    Parameters
    ----------
    setup:
        From :func:`~ptyscope.reconstruction.setup.prepare` on the same data as the result.
    path:
        The earlier result (``reconstruction.results`` layout).
    obj:
        Every state starts from the weighted mean of the result's states, times
        exp(i·φ_s) with φ_s ~ N(0, ``state_noise_rad``²) per pixel, different per state
        (no noise with one state). Slices and grid must match.
    probe:
        Take the probe modes; their number must match.
    positions:
        Take the fitted scan positions (the nominal ones must match).
    seed:
        Seed of the state phases.
    states:
        ``"mean"``: as above. ``"keep"``: the result's states and weights as they are, to
        go on with other settings (another optimiser, say); their number must equal the
        run's.
    """
    if states not in ("mean", "keep"):
        raise ValueError(f"states must be 'mean' or 'keep', got {states!r}")
    stored = _read(path)
    params = setup.params
    where = f"init.result {os.fspath(path)!r}"
    if obj:
        previous = stored["object"]
        want = tuple(params.object.shape[1:])
        if previous.ndim != 4 or tuple(previous.shape[1:]) != want:
            raise ValueError(
                f"{where}: its object is (states, slices, ny, nx) = {previous.shape}, this run "
                f"needs (*, {want[0]}, {want[1]}, {want[2]}): use the same data, "
                "object.slices and padding"
            )
        if states == "keep":
            if previous.shape[0] != params.num_states:
                raise ValueError(
                    f"{where}: init.states = 'keep' takes its {previous.shape[0]} object "
                    f"states as they are, and this run has object.states = "
                    f"{params.num_states}: set them equal, or init.states = 'mean'"
                )
            start = torch.as_tensor(previous)
            weights = torch.as_tensor(np.asarray(stored["state_weights"], dtype=np.float64))
            params.state_weights.data.copy_(torch.log(weights).to(params.state_weights))
        else:
            start = _states_from_mean(
                previous, stored["state_weights"], params.num_states, state_noise_rad, seed
            )
        params.object.data.copy_(start.to(params.object))
    if probe:
        modes = stored["probe"]
        if tuple(modes.shape) != tuple(params.probe.shape):
            raise ValueError(
                f"{where}: its probe is (modes, ny, nx) = {modes.shape}, this run needs "
                f"{tuple(params.probe.shape)}: set probe.modes = {modes.shape[0]}"
            )
        params.probe.data.copy_(torch.as_tensor(modes).to(params.probe))
    if positions:
        nominal = np.asarray(stored["nominal_positions_ang"], dtype=np.float64)
        mine = setup.positions_ang()
        if nominal.shape != mine.shape or not np.allclose(nominal, mine, atol=1e-3):
            raise ValueError(
                f"{where}: its nominal scan positions differ from this run's data "
                f"({nominal.shape[0]} vs {mine.shape[0]} positions); init.positions needs the "
                "same scan"
            )
        pixel = np.asarray(setup.pixel_size_ang)
        correction = (np.asarray(stored["positions_ang"]) - nominal) / pixel
        params.positions.data.copy_(torch.as_tensor(correction).to(params.positions))


def initialise(
    setup: ReconstructionSetup,
    init: InitConfig,
    *,
    base_dir: str | os.PathLike[str] = ".",
    state_noise_rad: float = 0.01,
    seed: int = 0,
) -> None:
    """Apply a config's ``[init]`` section to ``setup``, in place.

    The earlier result (``init.result``) first, then the imported probe
    (``init.probe_file``) and object (``init.object_file``). Relative paths are relative to
    ``base_dir`` (the config file's folder, like ``data.path``).
    """
    base = Path(base_dir)

    def resolve(path: Path) -> Path:
        return path if path.is_absolute() else base / path

    if init.result is not None:
        initialise_from_result(
            setup,
            resolve(init.result),
            obj=init.object,
            probe=init.probe,
            positions=init.positions,
            state_noise_rad=state_noise_rad,
            seed=seed,
            states=init.states,
        )
    if init.probe_file is not None:
        import_probe(setup, resolve(init.probe_file), file_format=init.format)
    if init.object_file is not None:
        import_object(
            setup,
            resolve(init.object_file),
            file_format=init.format,
            state_noise_rad=state_noise_rad,
            seed=seed,
        )


def import_probe(
    setup: ReconstructionSetup,
    path: str | os.PathLike[str],
    *,
    file_format: ForeignFormat | Literal["auto"] = "auto",
) -> None:
    """Replace the initial probe of ``setup`` by the probe of another result, in place.

    Parameters
    ----------
    setup:
        From :func:`~ptyscope.reconstruction.setup.prepare`.
    path:
        A ptyscope, PtyRAD or py4DSTEM result (:mod:`ptyscope.io.foreign`).
    file_format:
        "auto" or the format of ``path``.

    The number of modes must equal this run's (``probe.modes``); the probe is resampled
    to this run's pixel size and window (module docstring) and keeps Σ|ψ|² = 1.
    """
    where = f"init.probe_file {os.fspath(path)!r}"
    foreign = read_probe(path, file_format)
    params = setup.params
    modes, ny, nx = (int(v) for v in params.probe.shape)
    if foreign.probe.shape[0] != modes:
        raise ValueError(
            f"{where}: its probe has {foreign.probe.shape[0]} modes, this run has "
            f"probe.modes = {modes}: set probe.modes = {foreign.probe.shape[0]}"
        )
    probe = resample_probe(
        foreign.probe, foreign.pixel_size_ang, (ny, nx), setup.pixel_size_ang, name=where
    )
    params.probe.data.copy_(torch.as_tensor(probe).to(params.probe))


def import_object(
    setup: ReconstructionSetup,
    path: str | os.PathLike[str],
    *,
    file_format: ForeignFormat | Literal["auto"] = "auto",
    state_noise_rad: float = 0.01,
    seed: int = 0,
) -> None:
    """Replace the initial object of ``setup`` by the object of another result, in place.

    Parameters
    ----------
    setup:
        From :func:`~ptyscope.reconstruction.setup.prepare`.
    path:
        A ptyscope, PtyRAD or py4DSTEM result (:mod:`ptyscope.io.foreign`).
    file_format:
        "auto" or the format of ``path``.
    state_noise_rad, seed:
        When the numbers of object states differ, every state starts from the weighted
        mean of the imported states times exp(i·φ_s), φ_s ~ N(0, ``state_noise_rad``²)
        per pixel and state (no noise with one state); with equal numbers each state
        starts from its own.

    The number of slices must equal this run's (``object.slices``); a different slice
    thickness only warns. The object is resampled and placed as the module docstring says.
    """
    where = f"init.object_file {os.fspath(path)!r}"
    foreign = read_object(path, file_format)
    params = setup.params
    states, slices, big_y, big_x = (int(v) for v in params.object.shape)
    if foreign.object.shape[1] != slices:
        raise ValueError(
            f"{where}: its object has {foreign.object.shape[1]} slices, this run has "
            f"object.slices = {slices}: set object.slices = {foreign.object.shape[1]}"
        )
    thickness = float(params.thickness.detach())
    dz = foreign.slice_thickness_ang
    if dz is not None and slices > 1 and not math.isclose(dz, thickness, rel_tol=0.01):
        warnings.warn(
            f"{where}: its slices are {dz:.4g} Å thick, this run's object.slice_thickness_ang "
            f"is {thickness:.4g} Å; the imported slices start this run as they are",
            stacklevel=2,
        )
    centres = params.positions_px().detach().cpu().double().numpy()
    placed, coverage = resample_object(
        foreign.object,
        foreign.pixel_size_ang,
        foreign.probe_centres_px,
        (big_y, big_x),
        setup.pixel_size_ang,
        centres,
    )
    if coverage < MIN_OBJECT_COVERAGE:
        raise ValueError(
            f"{where}: only {100 * coverage:.0f}% of this run's scan positions fall on the "
            f"imported object ({foreign.object.shape[-2]} x {foreign.object.shape[-1]} px of "
            f"{foreign.pixel_size_ang[0]:.4g} x {foreign.pixel_size_ang[1]:.4g} Å, placed by "
            "the centroids of the two scans): it covers a smaller area than this run's scan"
        )
    if placed.shape[0] == states:
        start = torch.as_tensor(placed)
    else:
        start = _states_from_mean(placed, foreign.state_weights, states, state_noise_rad, seed)
    params.object.data.copy_(start.to(params.object))


def resample_probe(
    probe: np.ndarray,
    pixel_from: tuple[float, float],
    shape_to: tuple[int, int],
    pixel_to: tuple[float, float],
    *,
    name: str = "probe",
) -> np.ndarray:
    """A probe on another grid, centred on (ny//2, nx//2) in both, with Σ|ψ|² = 1.

    Parameters
    ----------
    probe:
        complex (modes, ny, nx), centred on (ny//2, nx//2).
    pixel_from, pixel_to:
        (dy, dx) [Å] of the two grids.
    shape_to:
        (ny, nx) of the new grid.
    name:
        How errors name the probe.

    Returns
    -------
    numpy.ndarray
        complex64 (modes, *shape_to), the modes' relative powers kept.

    Raises ``ValueError`` when less than :data:`MIN_PROBE_POWER_KEPT` of the intensity
    survives (module docstring).
    """
    probe = np.asarray(probe, dtype=np.complex128)
    total = float((np.abs(probe) ** 2).sum())
    if _same_grid(probe.shape[-2:], pixel_from, shape_to, pixel_to):
        out = probe
    else:
        out = np.stack(
            [_resample_plane(mode, pixel_from, shape_to, pixel_to, 0.0) for mode in probe]
        )
        area_from = pixel_from[0] * pixel_from[1]
        area_to = pixel_to[0] * pixel_to[1]
        kept = float((np.abs(out) ** 2).sum()) * area_to / (total * area_from)
        if not kept >= MIN_PROBE_POWER_KEPT:
            ny, nx = shape_to
            raise ValueError(
                f"{name}: only {100 * kept:.0f}% of its intensity falls inside this run's "
                f"probe window ({ny} x {nx} px of {pixel_to[0]:.4g} x {pixel_to[1]:.4g} Å) "
                f"and band; resampling it from {probe.shape[-2]} x {probe.shape[-1]} px of "
                f"{pixel_from[0]:.4g} x {pixel_from[1]:.4g} Å is not meaningful (it needs "
                f">= {100 * MIN_PROBE_POWER_KEPT:.0f}%)"
            )
    power = float((np.abs(out) ** 2).sum())
    result: np.ndarray = (out / math.sqrt(power)).astype(np.complex64)
    return result


def resample_object(
    obj: np.ndarray,
    pixel_from: tuple[float, float],
    centres_from: np.ndarray | None,
    shape_to: tuple[int, int],
    pixel_to: tuple[float, float],
    centres_to: np.ndarray,
) -> tuple[np.ndarray, float]:
    """An object placed on another grid by the centroids of the two runs' probe positions.

    Parameters
    ----------
    obj:
        complex (states, slices, ny, nx) on the grid of ``pixel_from``.
    pixel_from, pixel_to:
        (dy, dx) [Å] of the two grids.
    centres_from:
        float (N, 2) (y, x) probe centres on ``obj``'s grid [px], or ``None``: then the
        arrays' centres are aligned.
    shape_to:
        (Ny, Nx) of the new grid.
    centres_to:
        float (M, 2) (y, x) probe centres on the new grid [px].

    Returns
    -------
    (numpy.ndarray, float)
        complex64 (states, slices, *shape_to), vacuum (1) where ``obj`` does not reach,
        and the fraction of ``centres_to`` that fall on ``obj``.
    """
    obj = np.asarray(obj, dtype=np.complex128)
    size_from = np.asarray(obj.shape[-2:], dtype=np.float64)
    scale = np.asarray(pixel_to, dtype=np.float64) / np.asarray(pixel_from, dtype=np.float64)
    target = np.asarray(centres_to, dtype=np.float64).reshape(-1, 2).mean(axis=0)
    if centres_from is None:
        anchor = (size_from - 1) / 2
        target = (np.asarray(shape_to, dtype=np.float64) - 1) / 2
    else:
        anchor = np.asarray(centres_from, dtype=np.float64).reshape(-1, 2).mean(axis=0)
    same = bool(np.allclose(scale, 1.0, rtol=0.0, atol=_SAME_PIXEL_RTOL))
    # Our pixel i lies at foreign coordinate (i - target)·scale + anchor.
    offset = anchor - target * scale
    if same:
        offset = np.round(offset)
    mapped = (np.asarray(centres_to, dtype=np.float64).reshape(-1, 2)) * scale + offset
    inside = np.all((mapped >= 0) & (mapped <= size_from - 1), axis=1)
    coverage = float(inside.mean()) if inside.size else 0.0
    if same:
        out = np.ones((*obj.shape[:2], *shape_to), dtype=np.complex128)
        shift = offset.astype(int)
        src_y0, src_x0 = max(shift[0], 0), max(shift[1], 0)
        dst_y0, dst_x0 = src_y0 - shift[0], src_x0 - shift[1]
        height = min(obj.shape[-2] - src_y0, shape_to[0] - dst_y0)
        width = min(obj.shape[-1] - src_x0, shape_to[1] - dst_x0)
        if height > 0 and width > 0:
            out[..., dst_y0 : dst_y0 + height, dst_x0 : dst_x0 + width] = obj[
                ..., src_y0 : src_y0 + height, src_x0 : src_x0 + width
            ]
    else:
        planes = obj.reshape(-1, *obj.shape[-2:])
        out = np.stack(
            [
                _resample_plane(plane, pixel_from, shape_to, pixel_to, 1.0, offset)
                for plane in planes
            ]
        ).reshape(*obj.shape[:2], *shape_to)
    return out.astype(np.complex64), coverage


def _same_grid(
    shape_from: tuple[int, ...],
    pixel_from: tuple[float, float],
    shape_to: tuple[int, int],
    pixel_to: tuple[float, float],
) -> bool:
    return tuple(shape_from) == tuple(shape_to) and all(
        math.isclose(a, b, rel_tol=_SAME_PIXEL_RTOL)
        for a, b in zip(pixel_from, pixel_to, strict=True)
    )


def _resample_plane(
    plane: np.ndarray,
    pixel_from: tuple[float, float],
    shape_to: tuple[int, int],
    pixel_to: tuple[float, float],
    fill: complex,
    offset: np.ndarray | None = None,
) -> np.ndarray:
    """One complex (ny, nx) plane on the new grid by its Fourier series.

    ``plane − fill`` is written as its discrete Fourier series, cut to the frequencies the
    new grid represents (|k| ≤ 1/(2·pixel_to) per axis), and evaluated at the new pixels:
    exact for a band-limited periodic plane (a probe in its window), and the plane's
    band-limited interpolation otherwise. Our pixel i lies at plane coordinate
    i·scale + offset; the default offset centres (ny//2, nx//2) on (ny//2, nx//2)
    (probes). Pixels beyond the plane (more than half a pixel outside) get ``fill``.
    """
    scale = np.asarray(pixel_to, dtype=np.float64) / np.asarray(pixel_from, dtype=np.float64)
    size = np.asarray(plane.shape, dtype=np.float64)
    if offset is None:
        offset = size // 2 - (np.asarray(shape_to) // 2) * scale
    spectrum = np.fft.fft2(np.asarray(plane, dtype=np.complex128) - fill) / plane.size
    factors = []
    for axis in (0, 1):
        k = np.fft.fftfreq(plane.shape[axis])  # cycles per pixel of the plane
        keep = np.abs(k) <= 0.5 / scale[axis] + 1e-12  # the new grid's Nyquist
        at = np.arange(shape_to[axis]) * scale[axis] + offset[axis]
        basis = np.exp(2j * np.pi * np.outer(at, k[keep]))
        basis[(at < -0.5) | (at > size[axis] - 0.5)] = 0.0
        spectrum = np.take(spectrum, np.flatnonzero(keep), axis=axis)
        factors.append(basis)
    out = factors[0] @ spectrum @ factors[1].T
    outside_y = np.all(factors[0] == 0, axis=1)[:, None]
    outside_x = np.all(factors[1] == 0, axis=1)[None, :]
    result: np.ndarray = np.where(outside_y | outside_x, fill, out + fill)
    return result
