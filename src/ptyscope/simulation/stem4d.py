"""4D-STEM simulation: a focused probe scanned over a specimen, multislice per position.

The same probe builder, propagator and forward model as the reconstruction are used
(:mod:`ptyscope.physics`), so simulated data and reconstructions share every convention:

1. The specimen's cell is sampled on a periodic grid (:func:`specimen_grid`); each frozen
   phonon configuration gives potential slices and transmission functions exp(iσv).
2. Transmission functions and the propagator are band-limited to ``antialias_fraction``
   of the Nyquist frequency (2/3 by default: the product of two band-limited functions
   then does not alias; Kirkland 2020, Sec. 6.8).
3. For each scan position the probe (centred by a sub-pixel Fourier shift) is transmitted
   and propagated slice by slice through a window of the periodic specimen; the far-field
   intensity is cropped to the detector's angular range and binned. A finite source
   (partial spatial coherence) makes the probe the source's exact mixed state: orthogonal
   modes whose patterns add incoherently (:func:`ptyscope.physics.probe.source_modes`).
4. Configurations are averaged (frozen phonons), then Poisson noise is drawn at the
   requested dose.

Scan positions and tilts follow :mod:`ptyscope.data.dataset` and DESIGN.md: (y, x) in Å in
the specimen's frame (ase x = array axis −1, ase y = axis −2); the tilt (θ_y, θ_x) [mrad]
has the meaning pinned in ``docs/conventions.md``. A tilt map gives one tilt per scan
position (shape (scan_y, scan_x, 2)).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import ase
import numpy as np
import torch
from tqdm.auto import tqdm

from ptyscope._validation import require_in_range, require_int_pair, require_positive_pair
from ptyscope.data.dataset import Calibration, Dataset4D, scan_grid_positions
from ptyscope.physics.constants import wavelength_ang
from ptyscope.physics.grids import Grid, fft_friendly_span
from ptyscope.physics.multislice import (
    far_field_intensity,
    fourier_shift,
    multislice_exit_waves,
    multislice_forward,
)
from ptyscope.physics.probe import build_probe, source_modes
from ptyscope.physics.propagator import fresnel_propagator
from ptyscope.physics.transmission import transmission_function

from .acquisition import apply_dose
from .potential import PotentialSlices, slice_potential, specimen_grid

__all__ = [
    "DetectorCrop",
    "DetectorSettings",
    "ProbeSettings",
    "ScanSettings",
    "SimulationResult",
    "band_limit_mask",
    "detector_crop",
    "simulate_4dstem",
]


@dataclass(frozen=True)
class ProbeSettings:
    """Probe: beam energy [eV], convergence semiangle [mrad] and aberrations.

    ``aberrations`` uses the names of :mod:`ptyscope.physics.aberrations`
    (``defocus`` [Å], positive = underfocus; ``C30`` [Å]; ...).
    """

    energy_ev: float
    semiangle_mrad: float
    aberrations: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ScanSettings:
    """Rectangular scan: number of points (y, x), step [Å], origin (y, x) [Å], rotation.

    See :mod:`ptyscope.data.dataset` for the meaning of ``rotation_deg``.
    """

    shape: tuple[int, int]
    step_ang: tuple[float, float]
    origin_ang: tuple[float, float] = (0.0, 0.0)
    rotation_deg: float = 0.0

    def positions_ang(self) -> np.ndarray:
        """float64 (scan_y, scan_x, 2): (y, x) of every scan point [Å]."""
        shape = require_int_pair("scan shape", self.shape)
        step = require_positive_pair("scan step_ang", self.step_ang, "Å")
        return scan_grid_positions(shape, step, self.rotation_deg, self.origin_ang)


@dataclass(frozen=True)
class DetectorSettings:
    """Detector: angular range kept (square crop) and integer binning.

    ``max_angle_mrad=None`` keeps everything inside the band limit.
    """

    max_angle_mrad: float | None = None
    binning: int = 1


@dataclass
class SimulationResult:
    """Simulated data and everything known about how it was made."""

    dataset: Dataset4D
    ground_truth: dict[str, Any]


def band_limit_mask(
    grid: Grid, fraction: float | None, device: torch.device, taper_fraction: float = 0.02
) -> torch.Tensor:
    """Circular band limit at k_c = fraction · Nyquist with a cosine roll-off.

    A(k) = 1 for |k| <= k_c − τ, ½(1 + cos(π(|k| − k_c + τ)/τ)) up to k_c, 0 beyond, with
    τ = taper_fraction · Nyquist (Nyquist = 1/(2·max pixel)). The smooth edge limits
    ringing; its default width equals abTEM's, so both simulators cut the same band.

    Returns
    -------
    torch.Tensor
        float32 (ny, nx) in FFT order; all ones when ``fraction`` is None.
    """
    ky, kx = grid.frequencies(device=device, dtype=torch.float64)
    if fraction is None:
        return torch.ones(grid.shape, device=device)
    require_in_range("antialias_fraction", fraction, 0.0, 1.0)
    require_in_range("taper_fraction", taper_fraction, 0.0, 1.0)
    if fraction == 0:
        raise ValueError("antialias_fraction must be > 0 (or None for no band limit), got 0")
    nyquist = 0.5 / max(grid.pixel_size_ang)
    cutoff = fraction * nyquist
    taper = taper_fraction * nyquist
    k = torch.sqrt(ky**2 + kx**2)
    if taper == 0:
        return (k <= cutoff).to(torch.float32)
    ramp = 0.5 * (1 + torch.cos(torch.pi * (k - cutoff + taper) / taper))
    mask = torch.where(k <= cutoff - taper, torch.ones_like(k), ramp)
    return torch.where(k <= cutoff, mask, torch.zeros_like(k)).to(torch.float32)


def _window_shape(
    grid: Grid, window_ang: float | tuple[float, float] | None, even: bool
) -> tuple[int, int]:
    if window_ang is None:
        return grid.shape
    wy, wx = require_positive_pair("window_ang", window_ang, "Å")
    dy, dx = grid.pixel_size_ang
    return fft_friendly_span(wy, dy, even=even), fft_friendly_span(wx, dx, even=even)


@dataclass(frozen=True)
class DetectorCrop:
    """The detector's view of a centred pattern on ``window``: a square crop and binning."""

    window: Grid
    rows: slice
    cols: slice
    binning: int

    @property
    def shape(self) -> tuple[int, int]:
        return (
            (self.rows.stop - self.rows.start) // self.binning,
            (self.cols.stop - self.cols.start) // self.binning,
        )

    def apply(self, patterns: torch.Tensor) -> torch.Tensor:
        """(B, ny, nx) centred patterns -> (B, det_y, det_x) cropped and binned."""
        kept = patterns[:, self.rows, self.cols]
        if self.binning == 1:
            return kept
        b, ny, nx = kept.shape
        f = self.binning
        return kept.reshape(b, ny // f, f, nx // f, f).sum(dim=(2, 4))

    def calibration(self, probe: ProbeSettings, scan: ScanSettings) -> Calibration:
        """Calibration of data recorded through this crop with this probe and scan."""
        dk = self.window.reciprocal_pixel_inv_ang
        centre = [
            ((n // 2 - r.start) + 0.5) / self.binning - 0.5
            for n, r in zip(self.window.shape, (self.rows, self.cols), strict=True)
        ]
        return Calibration(
            energy_ev=probe.energy_ev,
            scan_step_ang=scan.step_ang,
            detector_pixel_inv_ang=(dk[0] * self.binning, dk[1] * self.binning),
            scan_rotation_deg=scan.rotation_deg,
            scan_origin_ang=scan.origin_ang,
            semiangle_mrad=probe.semiangle_mrad,
            defocus_ang=float(probe.aberrations.get("defocus", 0.0)),
            detector_center_px=(centre[0], centre[1]),
        )


def detector_crop(
    window: Grid, energy_ev: float, detector: DetectorSettings, fraction: float | None
) -> DetectorCrop:
    """Rows and columns of the centred pattern kept by the detector, and its binning.

    The crop is square in angle, centred on the optical axis (pixel n//2), with a whole
    number of bins on each side; without ``max_angle_mrad`` it reaches the band limit.
    """
    if not isinstance(detector.binning, int) or detector.binning < 1:
        raise ValueError(f"detector binning must be an integer >= 1, got {detector.binning!r}")
    dk = window.reciprocal_pixel_inv_ang
    if detector.max_angle_mrad is not None:
        require_positive_pair("detector max_angle_mrad", detector.max_angle_mrad, "mrad")
        k_max = detector.max_angle_mrad * 1e-3 / wavelength_ang(energy_ev)
    else:
        k_max = (fraction or 1.0) * min(window.nyquist_inv_ang)
    ranges = []
    for n, step in zip(window.shape, dk, strict=True):
        half = min(math.floor(k_max / step + 1e-9), n // 2)
        half -= half % detector.binning  # whole bins on each side of the centre
        if half == 0:
            raise ValueError(
                f"the detector keeps no pixels: max angle {detector.max_angle_mrad} mrad "
                f"with binning {detector.binning} on a window of {n} px"
            )
        ranges.append(slice(n // 2 - half, n // 2 + half))
    return DetectorCrop(window, ranges[0], ranges[1], detector.binning)


#: On the CPU, batches whose waves fill about this many bytes stay in cache and run
#: fastest (measured: 240² px, 42 slices, 1-2 threads: batches of 2-4 beat 16-64 by 15-30%).
_CPU_WAVE_BYTES = 2**21


def _batch_size(
    num_slices: int,
    window: tuple[int, int],
    num_modes: int,
    whole_cell: bool,
    memory_limit_gb: float,
    device: torch.device,
) -> int:
    """Positions per batch: bounded by ``memory_limit_gb``; cache-sized on the CPU."""
    wave = window[0] * window[1] * 8  # one complex64 wave
    # Per position: the gathered patches of every slice (unless the probe is shifted over
    # the whole cell instead), plus ~6 waves of FFT workspace per probe mode.
    per_position = ((0 if whole_cell else num_slices) + 6 * num_modes) * wave
    batch = max(1, int(memory_limit_gb * 2**30 // per_position))
    if device.type == "cpu":
        batch = min(batch, max(1, _CPU_WAVE_BYTES // (wave * num_modes)))
    return batch


def _tilt_array(tilt_mrad: Any, scan_shape: tuple[int, int]) -> np.ndarray:
    tilt = np.asarray(tilt_mrad, dtype=np.float64)
    if tilt.shape not in ((2,), (*scan_shape, 2)):
        raise ValueError(
            f"tilt_mrad must be a (θ_y, θ_x) pair or a map of shape (scan_y, scan_x, 2) = "
            f"{(*scan_shape, 2)}, got shape {tilt.shape}"
        )
    if not np.all(np.isfinite(tilt)) or np.abs(tilt).max(initial=0.0) >= 1000:
        raise ValueError(
            f"tilt_mrad must be finite and below 1000 mrad in magnitude, got largest "
            f"|tilt| {np.abs(tilt).max()}"
        )
    return tilt


def _transmission(slices: PotentialSlices, energy_ev: float, mask: torch.Tensor) -> torch.Tensor:
    trans = transmission_function(slices.slices_vang, energy_ev)
    limited: torch.Tensor = torch.fft.ifft2(torch.fft.fft2(trans) * mask)
    return limited


def simulate_4dstem(
    atoms: ase.Atoms,
    probe: ProbeSettings,
    scan: ScanSettings,
    *,
    sampling_ang: float = 0.05,
    slice_thickness_ang: float = 2.0,
    window_ang: float | tuple[float, float] | None = None,
    tilt_mrad: tuple[float, float] | np.ndarray = (0.0, 0.0),
    displacements_ang: np.ndarray | None = None,
    antialias_fraction: float | None = 2.0 / 3.0,
    detector: DetectorSettings | None = None,
    source_sigma_ang: float = 0.0,
    source_tolerance: float = 1e-3,
    dose_e_per_ang2: float | None = None,
    seed: int | None = None,
    memory_limit_gb: float = 1.0,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> SimulationResult:
    """Simulate a 4D-STEM dataset of a specimen.

    Parameters
    ----------
    atoms:
        Specimen with an orthorhombic cell (lateral period and thickness), beam along +z.
    probe, scan:
        Probe and scan settings.
    sampling_ang:
        Largest real-space pixel [Å]; the detector reaches λ/(2·pixel) before band limiting.
    slice_thickness_ang:
        Δz [Å].
    window_ang:
        Probe window [Å] (sets the detector's angular sampling 1/window); ``None`` uses
        the whole cell (like abTEM). Larger than the cell is allowed (periodic crystal).
    tilt_mrad:
        Specimen tilt (θ_y, θ_x) [mrad], or a map (scan_y, scan_x, 2).
    displacements_ang:
        Frozen-phonon configurations, float (configs, atoms, 3) in ase (x, y, z) order [Å]
        (see :mod:`ptyscope.simulation.phonons`); ``None`` = the static specimen.
    antialias_fraction:
        Band limit as a fraction of the Nyquist frequency; ``None`` disables it, and the
        grid and window then have even numbers of pixels, all of which the detector keeps
        (a reconstruction of the data then has the simulation's pixel).
    detector:
        Angular crop and binning; default keeps everything inside the band limit.
    source_sigma_ang:
        Standard deviation of the demagnified incoherent Gaussian source [Å] (0 = fully
        coherent). The probe becomes the source's exact mixed state, as orthogonal modes
        (:func:`ptyscope.physics.probe.source_modes`), and each pattern the incoherent sum
        of theirs. The time grows with the number of modes: 25 mrad at 300 kV needs 8
        for σ = 0.1 Å and 17 for σ = 0.2 Å.
    source_tolerance:
        Fraction of the source's power the dropped modes may hold (``metadata`` records
        the modes kept and the power dropped).
    dose_e_per_ang2:
        Electron dose [e/Å²] for Poisson noise; ``None`` returns noise-free probabilities.
    seed:
        Seed of the noise generator (only used with a dose).
    memory_limit_gb:
        Bound on the working memory of one batch of positions.
    device:
        Torch device for the multislice.
    progress:
        Show a progress bar.

    Returns
    -------
    SimulationResult
        ``dataset.data`` is float32 (scan_y, scan_x, det_y, det_x): noise-free patterns sum
        to the fraction of the beam inside the detector (1 in vacuum).
    """
    device = torch.device(device)
    detector = detector or DetectorSettings()
    # Without a band limit the detector would keep the whole window, but its crop is
    # centred with as many pixels on each side: of an odd window it drops one row and
    # column, and a reconstruction (pixel = window / detector pixels) then works on other
    # pixels than the simulation's, where the true object is not representable. Even grids
    # keep every pixel, so the simulated data are consistent with the reconstruction model.
    even = antialias_fraction is None
    grid = specimen_grid(atoms, sampling_ang, even=even)
    window = Grid(_window_shape(grid, window_ang, even), grid.pixel_size_ang)
    scan_positions = scan.positions_ang()
    scan_shape = scan_positions.shape[:2]
    tilt = _tilt_array(tilt_mrad, scan_shape)
    crop = detector_crop(window, probe.energy_ev, detector, antialias_fraction)
    configs = (
        np.zeros((1, len(atoms), 3))
        if displacements_ang is None
        else np.asarray(displacements_ang, dtype=np.float64)
    )
    if configs.ndim != 3 or configs.shape[1:] != (len(atoms), 3):
        raise ValueError(
            f"displacements_ang must have shape (configs, atoms, 3) = (M, {len(atoms)}, 3), "
            f"got {configs.shape}"
        )

    require_in_range("source_tolerance", source_tolerance, 0.0, 1.0, inclusive=False)
    lam = wavelength_ang(probe.energy_ev)
    coherent = build_probe(
        window, probe.energy_ev, probe.semiangle_mrad, dict(probe.aberrations), device=device
    )
    probe_modes, source_dropped = source_modes(
        coherent[0], window, source_sigma_ang, tolerance=source_tolerance
    )
    window_mask = band_limit_mask(window, antialias_fraction, device)
    grid_mask = band_limit_mask(grid, antialias_fraction, device)
    ky, kx = window.frequencies(device=device)
    positions_px = torch.as_tensor(
        scan_positions.reshape(-1, 2) / np.asarray(grid.pixel_size_ang), device=device
    ).to(torch.float32)
    tilts = torch.as_tensor(tilt.reshape(-1, 2) if tilt.ndim == 3 else tilt, device=device)
    tilts = tilts.to(torch.float32)

    static = slice_potential(atoms, grid, slice_thickness_ang, device=device)
    whole_cell = window.shape == grid.shape
    batch = _batch_size(
        static.num_slices, window.shape, len(probe_modes), whole_cell, memory_limit_gb, device
    )
    num_positions = positions_px.shape[0]
    global_propagator = None
    if tilt.ndim == 1:
        global_propagator = (
            fresnel_propagator(ky, kx, lam, slice_thickness_ang, tilts) * window_mask
        )
    valid = torch.fft.fftshift(window_mask)
    centre = torch.tensor([window.shape[0] // 2, window.shape[1] // 2], device=device)
    det_shape = crop.shape
    total = torch.zeros((num_positions, *det_shape), dtype=torch.float64)
    steps = len(configs) * math.ceil(num_positions / batch)
    with tqdm(total=steps, desc="4D-STEM", unit="batch", disable=not progress) as bar:
        for config in configs:
            slices = (
                static
                if displacements_ang is None
                else slice_potential(
                    atoms, grid, slice_thickness_ang, displacements_ang=config, device=device
                )
            )
            obj = _transmission(slices, probe.energy_ev, grid_mask)[None]  # (1, L, Ny, Nx)
            for start in range(0, num_positions, batch):
                stop = min(start + batch, num_positions)
                propagator = global_propagator
                if propagator is None:
                    propagator = (
                        fresnel_propagator(ky, kx, lam, slice_thickness_ang, tilts[start:stop])
                        * window_mask
                    )
                if whole_cell:
                    # The window is the cell: shift the probe, not the object (no gather).
                    shifted = fourier_shift(probe_modes, positions_px[start:stop] - centre)
                    exit_waves = multislice_exit_waves(shifted, obj[None], propagator)
                    patterns = far_field_intensity(exit_waves)
                else:
                    patterns = multislice_forward(
                        probe_modes, obj, positions_px[start:stop], propagator, periodic=True
                    )
                # Beyond the band limit the pattern is not valid (the last transmission
                # is not followed by a band-limited propagation): zero it.
                kept = crop.apply(patterns * valid)
                total[start:stop] += kept.to("cpu", torch.float64)
                bar.update()
    data = (total / len(configs)).to(torch.float32).reshape(*scan_shape, *det_shape)
    step = require_positive_pair("scan step_ang", scan.step_ang, "Å")
    if dose_e_per_ang2 is not None:
        generator = torch.Generator().manual_seed(seed if seed is not None else 0)
        data = apply_dose(data, dose_e_per_ang2, step, generator)

    calibration = crop.calibration(probe, scan)
    dataset = Dataset4D(
        data.numpy(),
        calibration,
        scan_positions,
        metadata={
            "source": "ptyscope.simulation.simulate_4dstem",
            "frozen_phonon_configs": len(configs),
            "dose_e_per_ang2": float(dose_e_per_ang2) if dose_e_per_ang2 is not None else 0.0,
            "source_sigma_ang": float(source_sigma_ang),
            "source_modes": len(probe_modes),
            "source_power_dropped": source_dropped,
        },
    )
    ground_truth: dict[str, Any] = {
        "atoms": {
            "positions_ang": np.asarray(atoms.positions),
            "numbers": np.asarray(atoms.numbers),
            "cell_ang": np.asarray(atoms.cell[:]),
            "pbc": np.asarray(atoms.pbc, dtype=np.int8),
            "coordinates": "ase Cartesian (x, y, z) [Å]; beam along +z",
        },
        "potential": {
            "slices_vang": static.slices_vang.cpu().numpy(),
            "pixel_size_ang": np.asarray(grid.pixel_size_ang),
            "slice_thickness_ang": float(slice_thickness_ang),
            "description": "static (undisplaced) specimen, before band limiting",
        },
        "thickness_ang": float(static.thickness_ang),
        "tilt_mrad": tilt,
        "probe": {
            "wave": coherent[0].cpu().numpy(),
            "pixel_size_ang": np.asarray(window.pixel_size_ang),
            "energy_ev": float(probe.energy_ev),
            "semiangle_mrad": float(probe.semiangle_mrad),
            **{f"aberration_{k}": float(v) for k, v in probe.aberrations.items()},
        },
        "simulation": {
            "sampling_ang": np.asarray(grid.pixel_size_ang),
            "window_px": np.asarray(window.shape),
            "antialias_fraction": float(antialias_fraction or 0.0),
            "frozen_phonon_configs": len(configs),
        },
    }
    if source_sigma_ang > 0:
        ground_truth["probe"]["source_modes"] = probe_modes.cpu().numpy()
    if displacements_ang is not None:
        ground_truth["displacements_ang"] = configs
    return SimulationResult(dataset, ground_truth)
