"""Tilt series: one finite specimen simulated by 4D-STEM in several orientations.

For multislice ptychographic tomography (Romanov et al. 2025) and atomic electron
tomography (Zhou et al. 2020), tilt t rotates the specimen actively about a fixed centre c,

    r → R_t (r − c) + c,    R_t = Rz(φ_t) Ry(θ_t) Rz(ψ_t)   (intrinsic Z-Y-Z, degrees)

(:func:`~ptyscope.simulation.specimens.rotation_matrix`), keeps the cell, and runs
:func:`~ptyscope.simulation.stem4d.simulate_4dstem` with the same probe, scan and settings.
The beam stays along +z; positions are ase Cartesian (x, y, z) [Å].

The specimen (a nanoparticle in vacuum) must stay inside the cell: along each
non-periodic axis that a rotation changes, every atom stays ``CELL_MARGIN_ANG`` inside.
A laterally periodic slab may not be tilted (θ ≠ 0): a rotated crystal is not periodic.

References
----------
A. Romanov et al., multislice electron ptychographic tomography (2025).
J. Zhou, Y. Yang, P. Ercius and J. Miao, "Atomic electron tomography in three and four
dimensions", MRS Bulletin 45, 290-297 (2020).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import ase
import numpy as np
import torch
from tqdm.auto import tqdm

from ptyscope._validation import require_positive
from ptyscope.data.dataset import Dataset4D
from ptyscope.physics.grids import Grid, fft_friendly_span
from ptyscope.physics.potential import (
    POTENTIAL_PREFACTOR_V_ANG2,
    electron_scattering_factor,
    projected_potential,
)

from .potential import cell_lengths_ang, specimen_grid
from .specimens import rotate_atoms, rotation_matrix
from .stem4d import ProbeSettings, ScanSettings, simulate_4dstem

__all__ = [
    "CELL_MARGIN_ANG",
    "TiltSeriesResult",
    "potential_volume",
    "projected_potential_series",
    "simulate_tilt_series",
]

#: Smallest distance [Å] between a rotated atom and a non-periodic face of the cell.
CELL_MARGIN_ANG = 1.0
#: Atoms per chunk of the 3D structure factor (bounds the (nz, ny, chunk) temporary).
_ATOM_CHUNK = 64
_EULER_CONVENTION = (
    "intrinsic ZYZ (phi, theta, psi) [deg], active: R = Rz(phi) Ry(theta) Rz(psi), "
    "r' = R (r - c) + c, c = rotation_center_ang (ptyscope.simulation.specimens)"
)


@dataclass
class TiltSeriesResult:
    """Simulated tilt series and its ground truth.

    Attributes
    ----------
    datasets:
        One :class:`Dataset4D` per tilt, in the order of ``euler_deg``.
    euler_deg:
        float64 (tilts, 3): (φ, θ, ψ) [deg] of each tilt.
    ground_truth:
        Nested mapping for :func:`ptyscope.io.datafile.write_tilt_series`.
    """

    datasets: list[Dataset4D]
    euler_deg: np.ndarray
    ground_truth: dict[str, Any]


def _euler_array(euler_deg: Any) -> np.ndarray:
    angles = np.asarray(euler_deg, dtype=np.float64)
    if angles.ndim != 2 or angles.shape[0] < 1 or angles.shape[1] != 3:
        raise ValueError(
            f"euler_deg must have shape (tilts, 3) with rows (φ, θ, ψ) [deg] and at least one "
            f"tilt, got shape {angles.shape}"
        )
    if not np.all(np.isfinite(angles)):
        raise ValueError("euler_deg must be finite, got NaN or Inf entries")
    return angles


def _cell_lengths(atoms: ase.Atoms) -> np.ndarray:
    if not isinstance(atoms, ase.Atoms) or len(atoms) == 0:
        raise ValueError(f"atoms must be an ase.Atoms with at least one atom, got {atoms!r}")
    return cell_lengths_ang(atoms)


def _check_tilt(
    atoms: ase.Atoms, turned: ase.Atoms, rotation: np.ndarray, lengths: np.ndarray, what: str
) -> None:
    """Refuse tilting a laterally periodic specimen, and atoms leaving the cell."""
    pbc = np.asarray(atoms.pbc, dtype=bool)
    tilted = abs(rotation[2, 2] - 1.0) > 1e-12  # cos θ ≠ 1
    if pbc[:2].any() and (tilted or not np.array_equal(np.asarray(turned.pbc, bool), pbc)):
        raise ValueError(
            f"{what} rotates a specimen that is periodic along x or y (pbc = {pbc.tolist()}); "
            "such a specimen allows only θ = 0 (and turns about z that keep its lattice), "
            "because rotating a periodic crystal breaks its periodicity. Use a finite "
            "specimen with vacuum around it, e.g. fcc_cluster(..., vacuum_ang=...)"
        )
    positions = np.asarray(turned.positions)
    for axis in range(3):  # the non-periodic axes along which the rotation moved atoms
        if pbc[axis] or np.array_equal(positions[:, axis], atoms.positions[:, axis]):
            continue
        low, high = positions[:, axis].min(), positions[:, axis].max()
        if low < CELL_MARGIN_ANG or high > lengths[axis] - CELL_MARGIN_ANG:
            raise ValueError(
                f"{what} moves atoms to {'xyz'[axis]} in [{low:.3f}, {high:.3f}] Å; every "
                f"atom must stay >= {CELL_MARGIN_ANG} Å inside the cell [0, "
                f"{lengths[axis]:.3f}] Å. Add vacuum around the specimen (or move center_ang)"
            )


def potential_volume(
    atoms: ase.Atoms, voxel_ang: float, device: torch.device | str | None = None
) -> dict[str, Any]:
    """Electrostatic potential of a specimen averaged over each voxel, V [V].

    Laterally the voxels are the pixels of :func:`specimen_grid`; z follows the same rule
    (FFT-friendly count, size <= ``voxel_ang``), so a cubic cell has cubic voxels. Voxel
    (k, i, j) is centred at (z, y, x) = (k·dz, i·dy, j·dx) like the slices' pixels and
    holds the 3D form of :func:`~ptyscope.physics.potential.projected_potential` (Kirkland
    2020, Eq. 5.9; the cell is periodic in 3D) averaged over the voxel box:

        V = (1/Ω) Σ_g 47.878 f_e(|g|) sinc(g_z dz) sinc(g_y dy) sinc(g_x dx)
                      Σ_j exp(2πi g·(r − r_j))    [V],  Ω = cell volume,

    over the grid's frequencies: Σ V·(voxel volume) = Σ_atoms 47.878 f_e(0) exactly, and
    z is resolved like x and y. Cost: atoms × voxels complex products.

    Returns
    -------
    dict
        ``potential_v``: float32 (nz, ny, nx), axes (z, y, x); ``voxel_size_ang``:
        (dz, dy, dx) [Å]; ``axis_order`` and ``description`` strings.
    """
    require_positive("volume_voxel_ang", voxel_ang, "Å")
    grid = specimen_grid(atoms, voxel_ang)
    lengths = _cell_lengths(atoms)
    shape = (fft_friendly_span(lengths[2], voxel_ang), *grid.shape)
    voxel = (lengths[2] / shape[0], *grid.pixel_size_ang)
    gz, gy, gx = (
        torch.fft.fftfreq(n, d=d, dtype=torch.float64, device=device)
        for n, d in zip(shape, voxel, strict=True)
    )
    g = torch.sqrt(gz[:, None, None] ** 2 + gy[:, None] ** 2 + gx**2)
    zyx = np.remainder(np.asarray(atoms.positions)[:, ::-1], lengths[::-1])
    symbols = np.asarray(atoms.get_chemical_symbols())
    spectrum = torch.zeros(shape, dtype=torch.complex128, device=device)
    for symbol in sorted(set(symbols.tolist())):
        form = POTENTIAL_PREFACTOR_V_ANG2 * electron_scattering_factor(symbol, g)
        members = np.flatnonzero(symbols == symbol)
        # (nz, ny, chunk) complex128 temporaries: keep them near 256 MiB.
        chunk = max(1, min(_ATOM_CHUNK, 2**24 // (shape[0] * shape[1])))
        for start in range(0, len(members), chunk):
            r = torch.as_tensor(zyx[members[start : start + chunk]], device=device)
            ez, ey, ex = (
                torch.exp(-2j * math.pi * f[:, None] * r[:, a]) for a, f in enumerate((gz, gy, gx))
            )
            spectrum += ((ez[:, None, :] * ey[None]) @ ex.T) * form  # Σ_j over this chunk
    box = torch.sinc(gz * voxel[0])[:, None, None] * torch.sinc(gy * voxel[1])[:, None]
    spectrum *= box * torch.sinc(gx * voxel[2])
    volume = torch.fft.ifftn(spectrum).real * (spectrum.numel() / float(np.prod(lengths)))
    return {
        "potential_v": volume.to(torch.float32).cpu().numpy(),
        "voxel_size_ang": tuple(float(v) for v in voxel),
        "axis_order": "(z, y, x)",
        "description": "unrotated specimen; voxel (k, i, j) centred at (k dz, i dy, j dx)",
    }


def projected_potential_series(
    atoms: ase.Atoms,
    euler_deg: Any,
    image_shape: Sequence[int],
    pixel_ang: float,
    *,
    center_ang: Sequence[float],
    shifts_ang: Any = None,
    blur_ang: float = 0.0,
    pad_ang: float = 4.0,
) -> np.ndarray:
    """Projected potential of a rotated specimen at each tilt, exact, averaged over pixels.

    For tilt t the atoms are turned to R_t (r − c) + c (module docstring), moved by
    (s_y, s_x), and their projected potential (Kirkland 2020, Eq. 5.9, as
    :func:`~ptyscope.physics.potential.projected_potential`) is formed on a field padded
    by ``pad_ang`` on every side (against wrap-around), multiplied in Fourier space by
    the pixel box sinc(q_y v) sinc(q_x v) and by exp(−2π² b² q²) (a Gaussian blur of
    standard deviation b = ``blur_ang``, e.g. the resolution of the per-tilt
    reconstruction), and cropped. No voxel grid is involved: these are the projections
    a perfect instrument would record, against which tomography is validated. Pixel
    (i, j) sits at (y, x) = (i·v, j·v), as in :mod:`ptyscope.tomography.projector`.

    Parameters
    ----------
    atoms:
        The specimen in the frame of tilt (0, 0, 0).
    euler_deg:
        (tilts, 3) (φ, θ, ψ) [deg], intrinsic Z-Y-Z, active.
    image_shape:
        (ny, nx) of each projection.
    pixel_ang:
        Pixel size v [Å].
    center_ang:
        Rotation centre c (x, y, z) [Å].
    shifts_ang:
        (tilts, 2) (s_y, s_x) [Å] moving each projection; none by default.
    blur_ang:
        Gaussian blur b >= 0 [Å].
    pad_ang:
        Margin [Å] >= 0 of the computation field beyond the image.

    Returns
    -------
    numpy.ndarray
        float64 (tilts, ny, nx) [V·Å].
    """
    angles = _euler_array(euler_deg)
    tilts = angles.shape[0]
    ny, nx = (int(n) for n in image_shape)
    require_positive("pixel_ang", pixel_ang, "Å")
    v = float(pixel_ang)
    if not (math.isfinite(blur_ang) and blur_ang >= 0):
        raise ValueError(f"blur_ang must be a finite number >= 0 Å, got {blur_ang!r}")
    if not (math.isfinite(pad_ang) and pad_ang >= 0):
        raise ValueError(f"pad_ang must be a finite number >= 0 Å, got {pad_ang!r}")
    shifts = np.zeros((tilts, 2)) if shifts_ang is None else np.asarray(shifts_ang, float)
    if shifts.shape != (tilts, 2) or not np.all(np.isfinite(shifts)):
        raise ValueError(
            f"shifts_ang must be finite with shape ({tilts}, 2) (s_y, s_x) [Å], got shape "
            f"{shifts.shape}"
        )
    pad = math.ceil(pad_ang / v)
    grid = Grid((ny + 2 * pad, nx + 2 * pad), (v, v))
    qy = np.fft.fftfreq(grid.shape[0], d=v)[:, None]
    qx = np.fft.fftfreq(grid.shape[1], d=v)[None, :]
    transfer = (
        np.sinc(qy * v) * np.sinc(qx * v) * np.exp(-2 * np.pi**2 * blur_ang**2 * (qy**2 + qx**2))
    )
    symbols = atoms.get_chemical_symbols()
    center = np.asarray(center_ang, dtype=np.float64)
    images = np.empty((tilts, ny, nx))
    for t in range(tilts):
        turned = (np.asarray(atoms.positions) - center) @ rotation_matrix(angles[t]).T + center
        yx = turned[:, [1, 0]] + shifts[t] + pad * v
        field = projected_potential(torch.as_tensor(yx), symbols, grid, dtype=torch.float64)
        blurred = np.fft.ifft2(np.fft.fft2(field.numpy()) * transfer).real
        images[t] = blurred[pad : pad + ny, pad : pad + nx]
    return images


def simulate_tilt_series(
    atoms: ase.Atoms,
    euler_deg: np.ndarray | Sequence[Sequence[float]],
    probe: ProbeSettings,
    scan: ScanSettings,
    *,
    center_ang: Sequence[float] | None = None,
    volume_voxel_ang: float | None = None,
    progress: bool = False,
    **simulate_kwargs: Any,
) -> TiltSeriesResult:
    """Simulate 4D-STEM of a specimen rotated to each orientation of a tilt series.

    Parameters
    ----------
    atoms:
        Finite specimen (e.g. :func:`~ptyscope.simulation.specimens.fcc_cluster`) in an
        orthorhombic cell with vacuum around it; beam along +z.
    euler_deg:
        float (tilts, 3): (φ, θ, ψ) [deg] of each tilt (module docstring).
    probe, scan:
        Probe and scan, the same for every tilt.
    center_ang:
        Rotation centre (x, y, z) [Å]; default the centre of the cell.
    volume_voxel_ang:
        Voxel of the ground-truth volume [Å]; default the larger of the simulation's
        ``sampling_ang`` and 0.2 Å (a tomographic voxel; memory grows as its inverse
        cube: 200³ voxels for a 40 Å cell at 0.2 Å, 800³ at 0.05 Å).
    progress:
        Show a progress bar over tilts.
    **simulate_kwargs:
        Passed to :func:`simulate_4dstem` for every tilt. ``displacements_ang``
        (configs, atoms, 3) belongs to the unrotated specimen and is rotated with it; a
        ``seed`` s becomes s + t at tilt t (0 + t without one) so noise differs per tilt.

    Returns
    -------
    TiltSeriesResult
        Ground truth: ``atoms`` (unrotated), ``euler_deg``, ``euler_convention``,
        ``rotation_center_ang`` (3,), ``rotated_positions_ang`` (tilts, atoms, 3),
        ``potential_volume`` (:func:`potential_volume`), and from the simulation of
        tilt 0 (the same for every tilt): ``thickness_ang``, ``tilt_mrad`` (beam tilt),
        ``probe`` and ``simulation``.

    Examples
    --------
    >>> from ptyscope.simulation.specimens import fcc_cluster
    >>> cluster = fcc_cluster("Au", 4.08, radius_ang=3.0, vacuum_ang=3.0)
    >>> result = simulate_tilt_series(
    ...     cluster, [(0, 0, 0), (0, 30, 0)], ProbeSettings(300e3, 20.0),
    ...     ScanSettings((1, 1), (1.0, 1.0), (6.0, 6.0)), sampling_ang=0.25)
    >>> len(result.datasets), result.ground_truth["rotated_positions_ang"].shape
    (2, (2, 13, 3))
    """
    angles = _euler_array(euler_deg)
    lengths = _cell_lengths(atoms)
    center = 0.5 * lengths if center_ang is None else np.asarray(center_ang, dtype=np.float64)
    if center.shape != (3,) or not np.all(np.isfinite(center)):
        raise ValueError(
            f"center_ang must be three finite numbers (x, y, z) [Å], got {center_ang!r}"
        )
    if volume_voxel_ang is None:
        default = inspect.signature(simulate_4dstem).parameters["sampling_ang"].default
        volume_voxel_ang = max(float(simulate_kwargs.get("sampling_ang", default)), 0.2)
    require_positive("volume_voxel_ang", volume_voxel_ang, "Å")

    rotations = [rotation_matrix(row) for row in angles.tolist()]
    turned_specimens = []
    for index, rotation in enumerate(rotations):
        # An identity keeps positions bit-identical ((r - c) + c may differ from r).
        turned = atoms.copy()
        if not np.array_equal(rotation, np.eye(3)):
            turned = rotate_atoms(atoms, angles[index].tolist(), center.tolist())
        what = f"euler_deg[{index}] = {angles[index].tolist()} deg"
        _check_tilt(atoms, turned, rotation, lengths, what)
        turned_specimens.append(turned)

    displacements = simulate_kwargs.pop("displacements_ang", None)
    seed = simulate_kwargs.pop("seed", None)
    results = []
    for index, turned in enumerate(tqdm(turned_specimens, desc="tilts", disable=not progress)):
        kwargs = dict(simulate_kwargs, seed=(seed or 0) + index)
        if displacements is not None:  # d → R d, ase (x, y, z) order
            kwargs["displacements_ang"] = np.asarray(displacements) @ rotations[index].T
        results.append(simulate_4dstem(turned, probe, scan, **kwargs))
    first = results[0].ground_truth
    ground_truth: dict[str, Any] = {
        "atoms": first["atoms"]
        | {"positions_ang": np.asarray(atoms.positions), "pbc": np.asarray(atoms.pbc, np.int8)},
        "euler_deg": angles,
        "euler_convention": _EULER_CONVENTION,
        "rotation_center_ang": center,
        "rotated_positions_ang": np.stack([np.asarray(t.positions) for t in turned_specimens]),
        "potential_volume": potential_volume(
            atoms, volume_voxel_ang, simulate_kwargs.get("device")
        ),
        **{key: first[key] for key in ("thickness_ang", "tilt_mrad", "probe", "simulation")},
    }
    if displacements is not None:
        ground_truth["displacements_ang"] = np.asarray(displacements, dtype=np.float64)
    return TiltSeriesResult([r.dataset for r in results], angles, ground_truth)
