"""An interactive viewer of a result file: one self-contained static HTML page.

``write_viewer`` reads a result file (layout in :mod:`ptyscope.reconstruction.results`) one
slice at a time and writes a single HTML file with everything inline (data, CSS, script;
no network, works from ``file://``). The page shows the object phase or amplitude of a
chosen slice (or all slices: the phase summed, the amplitude multiplied) and a chosen
state (or the mean over states, weighted by ``state_weights``), and the intensity of a
chosen probe mode with its share of the power. Sliders pick slice, state and mode; each
image has a scale bar in Å and a colour bar with its value range; hovering shows (y, x) in
Å and the value under the pointer.

Embedding: every image is quantised to 8 bits over its own range and stored as a
greyscale PNG (base64) with that range, ``value = min + q (max - min) / 255``, so a shown
value is within half a step, ``(max - min) / 510``, of the file's. The object takes
``(states + 1) × (slices + 1) × 2`` images (one state or one slice: no mean or sum image).
A 2-state, 5-slice, 200 × 200 px object of white-noise phase, the worst case for PNG,
gives a page of about 1.9 MB; a smooth object much less.

Hooks for tests and scripts: the sliders ``#slice-slider``, ``#state-slider`` and
``#mode-slider`` (1-based), the check boxes ``#slice-sum``, ``#state-mean`` and
``#amplitude-toggle``, the labels ``#slice-label`` ("slice 3 / 5"), ``#state-label`` and
``#mode-label``, and ``<canvas id="object-canvas">`` (one canvas pixel per object pixel,
drawn through the grey colour table, so red = green = blue = q) whose ``data-shown``
attribute names the image painted last, e.g. ``phase/state-1/slice-3``.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import h5py
import matplotlib
import numpy as np
import numpy.typing as npt

from ptyscope import __version__
from ptyscope.io.atomic import atomic_path
from ptyscope.io.hdf5_guard import open_untrusted_hdf5
from ptyscope.report.reconstruction_figures import probe_power_fractions

__all__ = ["encode_image", "nice_scale_length_ang", "view_command", "write_viewer"]

FloatArray = npt.NDArray[np.float64]
ByteArray = npt.NDArray[np.uint8]

#: The attribute ``format`` of a result file.
_RESULT_FORMAT = "ptyscope-result"
#: Colour tables: the object in grey (q → (q, q, q)), the probe intensity in inferno.
_OBJECT_CMAP, _PROBE_CMAP = "gray", "inferno"
#: The scale bar spans about this fraction of the image width.
_SCALE_FRACTION = 0.2


# --------------------------------------------------------------------------- encoding


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_gray8(q: ByteArray) -> bytes:
    """An 8-bit greyscale PNG of ``q`` (ny, nx); of the filters None, Sub and Up applied to
    every row, the one that compresses best (PNG spec, section 9)."""
    ny, nx = q.shape
    rows = q.astype(np.int16)
    sub = np.diff(rows, axis=1, prepend=0) % 256
    up = np.diff(rows, axis=0, prepend=0) % 256
    best = b""
    for kind, filtered in ((0, rows), (1, sub), (2, up)):
        raw = np.empty((ny, nx + 1), dtype=np.uint8)
        raw[:, 0] = kind
        raw[:, 1:] = filtered
        packed = zlib.compress(raw.tobytes(), 9)
        if not best or len(packed) < len(best):
            best = packed
    header = struct.pack(">IIBBBBB", nx, ny, 8, 0, 0, 0, 0)  # 8-bit grey, no interlace
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", best)
        + _png_chunk(b"IEND", b"")
    )


def encode_image(image: npt.ArrayLike) -> dict[str, Any]:
    """Quantise a real image to 8 bits over its range and encode it as a base64 PNG.

    Parameters
    ----------
    image:
        Real array (ny, nx). Non-finite pixels are drawn at the minimum.

    Returns
    -------
    ``{"png": base64 text, "min": float, "max": float}``: the PNG holds
    ``q = round(255 (v - min) / (max - min))`` (0 for a constant image), so
    ``v ≈ min + q (max - min) / 255`` to within half a step.

    Examples
    --------
    >>> encoded = encode_image([[0.0, 1.0], [0.5, 2.0]])
    >>> encoded["min"], encoded["max"], base64.b64decode(encoded["png"])[1:4]
    (0.0, 2.0, b'PNG')
    """
    values = np.asarray(image, dtype=np.float64)
    if values.ndim != 2 or 0 in values.shape:
        raise ValueError(f"image must be a non-empty (ny, nx) array, got shape {values.shape}")
    finite = np.isfinite(values)
    low = float(values[finite].min()) if finite.any() else 0.0
    high = float(values[finite].max()) if finite.any() else 0.0
    q = np.zeros(values.shape, dtype=np.uint8)
    if high > low:
        scaled = np.round((values[finite] - low) / (high - low) * 255.0)
        q[finite] = np.clip(scaled, 0, 255).astype(np.uint8)
    png = base64.b64encode(_png_gray8(q)).decode("ascii")
    return {"png": png, "min": low, "max": high}


def _lut(name: str) -> str:
    """The colour table ``name`` as 256 RGB triples, base64 of 768 bytes."""
    rgba = matplotlib.colormaps[name](np.linspace(0.0, 1.0, 256))
    rgb = np.round(np.asarray(rgba)[:, :3] * 255.0).astype(np.uint8)
    return base64.b64encode(rgb.tobytes()).decode("ascii")


def nice_scale_length_ang(width_ang: float) -> float:
    """A scale-bar length of 1, 2 or 5 × 10^k Å, at most about a fifth of ``width_ang``.

    Examples
    --------
    >>> nice_scale_length_ang(30.0), nice_scale_length_ang(7.0), nice_scale_length_ang(0.4)
    (5.0, 1.0, 0.05)
    """
    if not (math.isfinite(width_ang) and width_ang > 0):
        raise ValueError(f"width_ang must be a finite number > 0 [Å], got {width_ang}")
    target = _SCALE_FRACTION * width_ang
    power = 10.0 ** math.floor(math.log10(target))
    step = max(s for s in (1.0, 2.0, 5.0) if s * power <= target * (1 + 1e-9))
    return float(f"{step * power:.6g}")


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class _Source:
    """The parts of a result file the viewer shows, validated."""

    object_shape: tuple[int, int, int, int]
    object_pixel_ang: tuple[float, float]
    origin_ang: tuple[float, float]
    weights: FloatArray
    probe: npt.NDArray[np.complex64]
    probe_pixel_ang: tuple[float, float]


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes | np.bytes_) else str(value)


def _pair(dataset: Any, name: str, source: Path, *, positive: bool) -> tuple[float, float] | None:
    if name not in dataset.attrs:
        return None
    values = np.atleast_1d(np.asarray(dataset.attrs[name], dtype=np.float64))
    if values.size == 1:
        values = np.repeat(values, 2)
    ok = values.shape == (2,) and bool(np.all(np.isfinite(values)))
    if not ok or (positive and not np.all(values > 0)):
        rule = "two finite values > 0 (y, x) [Å]" if positive else "two finite values (y, x) [Å]"
        raise ValueError(
            f"result {dataset.name} attribute {name} must be {rule}, got {values.tolist()} "
            f"in '{source}'"
        )
    return float(values[0]), float(values[1])


def _open_checks(source: Path) -> None:
    if not source.exists():
        raise FileNotFoundError(
            f"result must be an existing result file, got '{source}' (not found)"
        )
    if source.is_dir():
        raise ValueError(f"result must be a result file, got the directory '{source}'")
    if not h5py.is_hdf5(source):
        raise ValueError(
            f"result must be a ptyscope result file (HDF5), got '{source}': not an HDF5 file"
        )


def _read_source(handle: Any, source: Path) -> _Source:
    fmt = handle.attrs.get("format")
    if fmt is not None and _text(fmt) != _RESULT_FORMAT:
        raise ValueError(
            f"result must be a ptyscope result file (format attribute '{_RESULT_FORMAT}'), "
            f"got format {_text(fmt)!r} in '{source}'"
        )
    missing = [
        name for name in ("object", "probe") if not isinstance(handle.get(name), h5py.Dataset)
    ]
    if missing:
        found = ", ".join(sorted(handle.keys())) or "nothing"
        raise ValueError(
            f"result must be a ptyscope result file holding the datasets object and probe, "
            f"got '{source}' without {' and '.join(missing)} (found: {found})"
        )
    obj, probe = handle["object"], handle["probe"]
    if len(obj.shape) != 4 or 0 in obj.shape or obj.dtype.kind != "c":
        raise ValueError(
            f"result object must be complex (states, slices, ny, nx), got {obj.dtype} "
            f"{obj.shape} in '{source}'"
        )
    if len(probe.shape) != 3 or 0 in probe.shape or probe.dtype.kind != "c":
        raise ValueError(
            f"result probe must be complex (modes, ny, nx), got {probe.dtype} {probe.shape} "
            f"in '{source}'"
        )
    pixel = _pair(obj, "pixel_size_ang", source, positive=True)
    if pixel is None:
        raise ValueError(
            f"result object must have the attribute pixel_size_ang (y, x) [Å] in '{source}'"
        )
    states = int(obj.shape[0])
    weights = np.full(states, 1.0 / states)
    if "state_weights" in handle:
        given = np.asarray(handle["state_weights"], dtype=np.float64)
        if (
            given.shape != (states,)
            or not np.all(np.isfinite(given) & (given >= 0))
            or given.sum() <= 0
        ):
            raise ValueError(
                f"result state_weights must be {states} finite values >= 0 with a positive "
                f"sum, got {given.tolist()} in '{source}'"
            )
        weights = given / given.sum()
    return _Source(
        object_shape=(states, int(obj.shape[1]), int(obj.shape[2]), int(obj.shape[3])),
        object_pixel_ang=pixel,
        origin_ang=_pair(obj, "origin_ang", source, positive=False) or (0.0, 0.0),
        weights=weights,
        probe=np.asarray(probe).astype(np.complex64, copy=False),
        probe_pixel_ang=_pair(probe, "pixel_size_ang", source, positive=True) or pixel,
    )


def _object_images(dataset: Any, weights: FloatArray) -> dict[str, list[list[dict[str, Any]]]]:
    """Encoded phase and amplitude images, indexed [state][slice]; a last state index is the
    weighted mean over states and a last slice index all slices (when there are several).
    Reads ``dataset[s, k]``, one slice at a time."""
    states, slices, ny, nx = (int(n) for n in dataset.shape)
    with_mean, with_sum = states > 1, slices > 1
    rows = states + with_mean
    phase: list[list[dict[str, Any]]] = [[] for _ in range(rows)]
    amplitude: list[list[dict[str, Any]]] = [[] for _ in range(rows)]
    phase_sum = np.zeros((rows, ny, nx))
    amplitude_product = np.ones((rows, ny, nx))
    for k in range(slices):
        mean_phase, mean_amplitude = np.zeros((ny, nx)), np.zeros((ny, nx))
        for s in range(states):
            layer = np.asarray(dataset[s, k])
            slice_phase = np.angle(layer).astype(np.float64)  # arg O in (-π, π] [rad]
            slice_amplitude = np.abs(layer).astype(np.float64)
            phase[s].append(encode_image(slice_phase))
            amplitude[s].append(encode_image(slice_amplitude))
            phase_sum[s] += slice_phase
            amplitude_product[s] *= slice_amplitude
            mean_phase += weights[s] * slice_phase
            mean_amplitude += weights[s] * slice_amplitude
        if with_mean:
            phase[states].append(encode_image(mean_phase))
            amplitude[states].append(encode_image(mean_amplitude))
    if with_mean:
        phase_sum[states] = np.tensordot(weights, phase_sum[:states], axes=1)
        amplitude_product[states] = np.tensordot(weights, amplitude_product[:states], axes=1)
    if with_sum:
        for s in range(rows):
            phase[s].append(encode_image(phase_sum[s]))
            amplitude[s].append(encode_image(amplitude_product[s]))
    return {"phase": phase, "amplitude": amplitude}


# --------------------------------------------------------------------------- page

_CSS = """
body { font-family: sans-serif; margin: 1.5em auto; max-width: 1150px; color: #222; }
h1 { font-size: 1.3em; } p.meta { color: #555; font-size: 0.9em; }
.panels { display: flex; flex-wrap: wrap; gap: 2.5em; align-items: flex-start; }
.panel { flex: 1 1 420px; max-width: 540px; }
.controls { display: grid; grid-template-columns: auto 1fr auto; gap: 0.35em 0.8em;
  align-items: center; margin-bottom: 0.8em; font-size: 0.95em; }
.controls input[type=range] { width: 100%; }
.label { font-variant-numeric: tabular-nums; white-space: nowrap; }
.frame { position: relative; width: 100%; line-height: 0; background: #000; }
.frame canvas { width: 100%; height: auto; image-rendering: pixelated; display: block; }
.scalebar { position: absolute; left: 4%; bottom: 4%; border-bottom: 4px solid #fff;
  color: #fff; font-size: 13px; line-height: 1.2; text-align: center;
  text-shadow: 0 0 3px #000; box-shadow: 0 1px 0 #000; }
.colorbar { display: grid; grid-template-columns: auto 1fr auto; gap: 0.5em;
  align-items: center; margin-top: 0.5em; font-size: 0.85em; }
.colorbar canvas { width: 100%; height: 14px; image-rendering: pixelated; border: 1px solid #888; }
.hover { min-height: 1.3em; font-size: 0.85em; color: #333; margin-top: 0.3em;
  font-variant-numeric: tabular-nums; }
.caption { font-size: 0.9em; color: #555; margin: 0.4em 0; }
"""

_SCRIPT = r"""
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("viewer-data").textContent);
  const byId = (id) => document.getElementById(id);
  function bytes(text) {
    const raw = atob(text), out = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
    return out;
  }
  const luts = {};
  for (const name in data.luts) luts[name] = bytes(data.luts[name]);
  // Decode an embedded PNG once into its 8-bit values q (ny * nx), row-major.
  function decode(image) {
    if (!image.pixels) {
      image.pixels = new Promise((resolve, reject) => {
        const img = new Image();
        img.onload = () => {
          const c = document.createElement("canvas");
          c.width = img.naturalWidth; c.height = img.naturalHeight;
          const ctx = c.getContext("2d", { willReadFrequently: true });
          ctx.drawImage(img, 0, 0);
          const rgba = ctx.getImageData(0, 0, c.width, c.height).data;
          const q = new Uint8Array(c.width * c.height);
          for (let i = 0; i < q.length; i++) q[i] = rgba[4 * i];
          resolve(q);
        };
        img.onerror = () => reject(new Error("cannot decode an embedded image"));
        img.src = "data:image/png;base64," + image.png;
      });
    }
    return image.pixels;
  }
  function paint(canvas, q, lut) {
    const ctx = canvas.getContext("2d");
    const out = ctx.createImageData(canvas.width, canvas.height), px = out.data;
    for (let i = 0; i < q.length; i++) {
      px[4 * i] = lut[3 * q[i]]; px[4 * i + 1] = lut[3 * q[i] + 1];
      px[4 * i + 2] = lut[3 * q[i] + 2]; px[4 * i + 3] = 255;
    }
    ctx.putImageData(out, 0, 0);
  }
  function paintBar(canvas, lut) {
    const ramp = new Uint8Array(256);
    for (let i = 0; i < 256; i++) ramp[i] = i;
    paint(canvas, ramp, lut);
  }
  const fmt = (v) => (v === 0 ? "0" : Math.abs(v) >= 1e4 || Math.abs(v) < 1e-3
    ? v.toExponential(3) : v.toPrecision(4));
  // One displayed image: its canvas, colour table, pixel size, origin and readout elements.
  function view(prefix, lut, pixel, origin) {
    const canvas = byId(prefix + "-canvas"), hover = byId(prefix + "-hover");
    const state = { token: 0, image: null, q: null, unit: "" };
    paintBar(byId(prefix + "-colorbar"), lut);
    canvas.addEventListener("mousemove", (event) => {
      if (!state.q) return;
      const nx = canvas.width, ny = canvas.height;
      const ix = Math.min(nx - 1, Math.floor(event.offsetX / canvas.clientWidth * nx));
      const iy = Math.min(ny - 1, Math.floor(event.offsetY / canvas.clientHeight * ny));
      const im = state.image, q = state.q[iy * nx + ix];
      const value = im.min + q * (im.max - im.min) / 255;
      hover.textContent = "y = " + (origin[0] + iy * pixel[0]).toFixed(2) + " Å, x = " +
        (origin[1] + ix * pixel[1]).toFixed(2) + " Å: " + fmt(value) +
        (state.unit ? " " + state.unit : "");
    });
    canvas.addEventListener("mouseleave", () => { hover.textContent = ""; });
    return function show(image, key, unit) {
      const token = ++state.token;
      byId(prefix + "-min").textContent = fmt(image.min);
      byId(prefix + "-max").textContent = fmt(image.max) + (unit ? " " + unit : "");
      decode(image).then((q) => {
        if (token !== state.token) return;  // a later choice has been made meanwhile
        paint(canvas, q, lut);
        Object.assign(state, { image: image, q: q, unit: unit });
        canvas.dataset.shown = key;
      });
    };
  }
  const obj = data.object, probe = data.probe;
  const [S, K] = obj.shape;
  const showObject = view("object", luts.object, obj.pixel_size_ang, obj.origin_ang);
  const centre = [-probe.shape[1] / 2 * probe.pixel_size_ang[0],
    -probe.shape[2] / 2 * probe.pixel_size_ang[1]];
  const showProbe = view("probe", luts.probe, probe.pixel_size_ang, centre);
  const controls = ["slice-slider", "slice-sum", "state-slider", "state-mean", "amplitude-toggle"];
  function updateObject() {
    const slice = Number(byId("slice-slider").value) - 1;
    const state = Number(byId("state-slider").value) - 1;
    const sum = byId("slice-sum").checked, mean = byId("state-mean").checked;
    const quantity = byId("amplitude-toggle").checked ? "amplitude" : "phase";
    const amp = quantity === "amplitude";
    byId("slice-label").textContent = sum ? (amp ? "product of " : "sum of ") + K + " slices"
      : "slice " + (slice + 1) + " / " + K;
    byId("state-label").textContent = mean ? "mean of " + S + " states"
      : "state " + (state + 1) + " / " + S + " (weight " + obj.weights[state].toFixed(3) + ")";
    byId("object-caption").textContent = (amp ? "Amplitude" : "Phase [rad]") + " of " +
      byId("slice-label").textContent + ", " + byId("state-label").textContent;
    const si = mean ? S : state, ki = sum ? K : slice;
    const key = quantity + "/" + (mean ? "mean" : "state-" + (state + 1)) + "/" +
      (sum ? "sum" : "slice-" + (slice + 1));
    showObject(obj[quantity][si][ki], key, amp ? "" : "rad");
  }
  function updateProbe() {
    const mode = Number(byId("mode-slider").value) - 1;
    byId("mode-label").textContent = "mode " + (mode + 1) + " / " + probe.shape[0] + ": " +
      (100 * probe.power_fraction[mode]).toFixed(1) + " % of power";
    showProbe(probe.intensity[mode], "mode-" + (mode + 1), "");
  }
  // Moving a slider picks one slice (state): it leaves the sum (mean) view.
  byId("slice-slider").addEventListener("input", () => { byId("slice-sum").checked = false; });
  byId("state-slider").addEventListener("input", () => { byId("state-mean").checked = false; });
  for (const id of controls) {
    byId(id).addEventListener("input", updateObject);
    byId(id).addEventListener("change", updateObject);
  }
  byId("mode-slider").addEventListener("input", updateProbe);
  byId("mode-slider").addEventListener("change", updateProbe);
  updateObject();
  updateProbe();
})();
"""


def _slider(name: str, count: int) -> str:
    disabled = " disabled" if count == 1 else ""
    return (
        f'<label for="{name}-slider">{name}</label>'
        f'<input type="range" id="{name}-slider" min="1" max="{count}" value="1" step="1"'
        f"{disabled}>"
        f'<span class="label" id="{name}-label">{name} 1 / {count}</span>'
    )


def _checkbox(element_id: str, text: str, enabled: bool) -> str:
    disabled = "" if enabled else " disabled"
    return (
        f'<span></span><label><input type="checkbox" id="{element_id}"{disabled}> {text}</label>'
        "<span></span>"
    )


def _image_panel(prefix: str, shape: tuple[int, int], pixel_ang: tuple[float, float]) -> str:
    ny, nx = shape
    width_ang, height_ang = nx * pixel_ang[1], ny * pixel_ang[0]
    bar_ang = nice_scale_length_ang(width_ang)
    return (
        f'<div class="frame"><canvas id="{prefix}-canvas" width="{nx}" height="{ny}" '
        f'style="aspect-ratio: {width_ang:.6g} / {height_ang:.6g}"></canvas>'
        f'<div class="scalebar" id="{prefix}-scalebar" '
        f'style="width: {100 * bar_ang / width_ang:.4f}%">{bar_ang:g} Å</div></div>'
        f'<div class="colorbar"><span id="{prefix}-min"></span>'
        f'<canvas id="{prefix}-colorbar" width="256" height="1"></canvas>'
        f'<span id="{prefix}-max"></span></div>'
        f'<div class="hover" id="{prefix}-hover"></div>'
    )


def _page(title: str, meta: str, source: _Source, payload: str) -> str:
    esc = html.escape
    states, slices, ny, nx = source.object_shape
    modes, probe_ny, probe_nx = source.probe.shape
    object_controls = (
        _slider("slice", slices)
        + _checkbox("slice-sum", "all slices (phase summed, amplitude multiplied)", slices > 1)
        + _slider("state", states)
        + _checkbox("state-mean", "mean of states (weighted)", states > 1)
        + _checkbox("amplitude-toggle", "amplitude instead of phase", True)
    )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f'<h1>{esc(title)}</h1>\n<p class="meta">{esc(meta)}</p>\n'
        '<div class="panels">\n<section class="panel"><h2>Object</h2>'
        f'<div class="controls">{object_controls}</div>'
        '<p class="caption" id="object-caption"></p>'
        f"{_image_panel('object', (ny, nx), source.object_pixel_ang)}</section>\n"
        '<section class="panel"><h2>Probe</h2>'
        f'<div class="controls">{_slider("mode", modes)}</div>'
        '<p class="caption">Intensity |ψ|² of the mode; hover (y, x) from the window centre.</p>'
        f"{_image_panel('probe', (probe_ny, probe_nx), source.probe_pixel_ang)}</section>\n"
        "</div>\n"
        f'<script type="application/json" id="viewer-data">{payload}</script>\n'
        f"<script>{_SCRIPT}</script>\n</body>\n</html>\n"
    )


# --------------------------------------------------------------------------- entry points


def write_viewer(
    result: str | os.PathLike[str], output: str | os.PathLike[str] | None = None
) -> Path:
    """Write a self-contained interactive HTML viewer of a result file.

    Parameters
    ----------
    result:
        A result file written by :func:`ptyscope.reconstruction.results.write_result`; it
        needs the datasets ``object``, complex (states, slices, ny, nx) with the attribute
        ``pixel_size_ang`` (y, x) [Å], and ``probe``, complex (modes, ny, nx). Read one
        slice at a time.
    output:
        The HTML file to write (atomically); default: beside ``result``, named
        ``<stem>_viewer.html``.

    Returns
    -------
    The path of the page: one file, no external resources (module docstring).

    Raises
    ------
    FileNotFoundError
        When ``result`` does not exist.
    ValueError
        When ``result`` is not a ptyscope result file (not HDF5, another ``format``, a
        missing or malformed dataset), or ``output`` is a directory or ``result`` itself.

    Examples
    --------
    >>> import tempfile, pathlib, h5py, numpy as np
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "r.h5"
    >>> with h5py.File(path, "w") as f:
    ...     obj = f.create_dataset("object", data=np.ones((1, 2, 8, 8), np.complex64))
    ...     obj.attrs["pixel_size_ang"] = (0.1, 0.1)
    ...     _ = f.create_dataset("probe", data=np.ones((1, 4, 4), np.complex64))
    >>> write_viewer(path).name
    'r_viewer.html'
    """
    source = Path(result)
    _open_checks(source)
    target = Path(output) if output is not None else source.with_name(f"{source.stem}_viewer.html")
    if target.is_dir():
        raise ValueError(f"output must be a file path, got the directory '{target}'")
    if target.resolve() == source.resolve():
        raise ValueError(f"output must differ from result, got '{target}' for both")
    try:
        handle = open_untrusted_hdf5(source)
    except OSError as error:
        raise ValueError(f"result must be a readable HDF5 file, got '{source}': {error}") from None
    with handle:
        run = _read_source(handle, source)
        images = _object_images(handle["object"], run.weights)
        attrs = dict(handle.attrs)
    states, slices, ny, nx = run.object_shape
    intensity = np.abs(run.probe).astype(np.float64) ** 2
    data = {
        "object": {
            "shape": [states, slices, ny, nx],
            "pixel_size_ang": list(run.object_pixel_ang),
            "origin_ang": list(run.origin_ang),
            "weights": run.weights.tolist(),
            **images,
        },
        "probe": {
            "shape": list(run.probe.shape),
            "pixel_size_ang": list(run.probe_pixel_ang),
            "power_fraction": probe_power_fractions(run.probe).tolist(),
            "intensity": [encode_image(mode) for mode in intensity],
        },
        "luts": {"object": _lut(_OBJECT_CMAP), "probe": _lut(_PROBE_CMAP)},
    }
    # "<" never occurs in the payload unescaped, so no "</script>" can end the block early.
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    dy, dx = run.object_pixel_ang
    written = f"Result written by {_text(attrs['software'])}; " if "software" in attrs else ""
    meta = (
        f"{states} state(s) × {slices} slice(s) × {ny} × {nx} px at ({dy:.4g}, {dx:.4g}) Å "
        f"(y, x); probe {run.probe.shape[0]} mode(s) of {run.probe.shape[1]} × "
        f"{run.probe.shape[2]} px. {written}viewer by ptyscope {__version__}. "
        "Images are 8-bit, each over its own range."
    )
    page = _page(f"ptyscope viewer: {source.name}", meta, run, payload)
    with atomic_path(target) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return target


@click.command("view")
@click.argument("result", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="HTML file to write (default: RESULT's name with _viewer.html, beside it).",
)
def view_command(result: Path, output: Path | None) -> None:
    """Write an interactive HTML viewer of a result file and print its path.

    The page is one self-contained file (open it in any browser, no server needed):
    object phase or amplitude per slice and state, probe modes, with sliders.
    """
    try:
        path = write_viewer(result, output)
    except (OSError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(str(path))
