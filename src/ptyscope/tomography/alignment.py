"""Tilt-series alignment: pre-alignment of shifts, then joint refinement with the volume.

Conventions are those of :mod:`ptyscope.tomography.projector`: a shift s_t = (s_y, s_x)
[Å] says that the measured projection D_t is the model projection moved by +s, so the
shifts found here are passed unchanged as ``shifts_ang`` to the projector and to
:func:`~ptyscope.tomography.volume.reconstruct_volume`.

Pre-alignment
-------------
* :func:`center_of_mass_shifts`: a projection conserves mass, so the centre of mass
  of every projection is the projection of the specimen's 3D centre of mass. Moving each
  one to the rotation centre puts that 3D centre on the rotation centre: exact for a
  particle wholly inside every field of view, with no need of a volume.
* :func:`common_line_shifts`: in a single-axis series every projection, integrated
  across the tilt axis, gives the same profile along the axis (the projection of the
  specimen onto the axis). Cross-correlating these profiles aligns the shifts along the
  axis, independently of the volume.
* :func:`cross_correlation_shifts`: sub-pixel phase correlation of each projection with a
  reference (the reprojection of the current volume: projection matching).

Joint refinement (:func:`refine_alignment`)
-------------------------------------------
Outer loop over the alignment, inner loop over the volume, coarse to fine: at each level
the projections are binned b × b (voxel b·v); the volume is reconstructed with the
current angles and shifts (FISTA, warm started within a level), then every tilt's angles
and shift take one damped Gauss-Newton step on its own misfit,

    (JᵀJ + μ diag JᵀJ) δ_t = −Jᵀ r_t,    r_t = P_t(V; p_t) − D_t,

with J by central differences of the projector (tilts are independent given V, so all
tilts' columns come from the same few projections). Rigid motions of the volume cannot
be told from alignment errors (a gauge): a common rotation about the tilt axis (the mean
θ change, with ψ fixed) and a translation d of the volume, which moves projection t by
(R_t d)_{y,x}, are removed from every update, so the volume stays where it started.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as functional

from ptyscope._validation import require_positive

from .atom_projection import GAUSSIAN, project_atoms
from .projector import box_center_ang, project, rotation_matrices
from .volume import VolumeSettings, gaussian_smooth, reconstruct_volume

__all__ = [
    "AlignmentResult",
    "AlignmentSettings",
    "AtomAlignmentResult",
    "center_of_mass_shifts",
    "common_line_shifts",
    "cross_correlation_shifts",
    "refine_alignment",
    "refine_alignment_with_atoms",
    "rotation_errors_deg",
    "translation_modes",
]

_PARAMETERS = ("phi", "theta", "psi")


def _stack(name: str, projections: torch.Tensor | np.ndarray) -> torch.Tensor:
    images = torch.as_tensor(projections)
    if images.ndim != 3 or images.is_complex() or min(images.shape[1:]) < 4:
        raise ValueError(
            f"{name} must be a real array (tilts, ny, nx) with ny, nx >= 4, got shape "
            f"{tuple(images.shape)} and dtype {images.dtype}"
        )
    if not bool(torch.isfinite(images).all()):
        raise ValueError(f"{name} must be finite, got NaN or Inf (give such pixels weight 0)")
    return images


def center_of_mass_shifts(
    projections: torch.Tensor | np.ndarray,
    voxel_ang: float,
    *,
    center_ang: Sequence[float] | None = None,
) -> torch.Tensor:
    """Shifts that put each projection's centre of mass on the rotation centre.

    Parameters
    ----------
    projections:
        Real (tilts, ny, nx), non-negative where the specimen is (vacuum level removed).
    voxel_ang:
        Pixel size [Å].
    center_ang:
        Rotation centre (x, y, z) [Å]; default the centre of a (nx, ny, nx) box.

    Returns
    -------
    torch.Tensor
        float64 (tilts, 2): (s_y, s_x) [Å] = centre of mass − centre.
    """
    images = _stack("projections", projections).double()
    require_positive("voxel_ang", voxel_ang, "Å")
    _, ny, nx = images.shape
    cx, cy, _ = box_center_ang((nx, ny, nx), voxel_ang) if center_ang is None else center_ang
    mass = images.sum(dim=(1, 2))
    if bool((mass <= 0).any()):
        bad = torch.nonzero(mass <= 0).flatten().tolist()
        raise ValueError(
            f"projections must have a positive integral to have a centre of mass; tilts "
            f"{bad} do not (remove the vacuum level so that the specimen is positive)"
        )
    y = torch.arange(ny, dtype=torch.float64) * voxel_ang
    x = torch.arange(nx, dtype=torch.float64) * voxel_ang
    com_y = (images.sum(dim=2) * y).sum(dim=1) / mass
    com_x = (images.sum(dim=1) * x).sum(dim=1) / mass
    return torch.stack((com_y - cy, com_x - cx), dim=1)


def _axis_profiles(images: torch.Tensor, phi_rad: float, voxel_ang: float) -> torch.Tensor:
    """(tilts, bins) integral of each image across the tilt axis, along u = Rz(φ) ŷ.

    Linear binning of every pixel's coordinate along u, one bin per pixel size.
    """
    _, ny, nx = images.shape
    y = torch.arange(ny, dtype=torch.float64)[:, None]
    x = torch.arange(nx, dtype=torch.float64)[None, :]
    along = (-math.sin(phi_rad) * x + math.cos(phi_rad) * y).flatten()  # pixels along u
    along = along - along.min()
    bins = math.ceil(float(along.max())) + 2
    low = torch.floor(along).long()
    frac = along - low
    profiles = torch.zeros(images.shape[0], bins, dtype=torch.float64)
    flat = images.reshape(images.shape[0], -1).double()
    profiles.index_add_(1, low, flat * (1 - frac))
    profiles.index_add_(1, low + 1, flat * frac)
    return profiles


def _correlation_shift(reference: np.ndarray, moving: np.ndarray, upsample: int = 50) -> np.ndarray:
    """d (pixels, per axis) such that ``moving`` is ``reference`` moved by +d, sub-pixel.

    Plain cross-correlation (no apodisation: a specimen in vacuum has no edges to hide,
    and a window would pull the estimate towards zero), its peak refined to 1/upsample
    pixel by a local upsampled DFT of the cross-power spectrum. Works in 1D and 2D.
    """
    a = np.fft.fftn(reference - reference.mean())
    b = np.fft.fftn(moving - moving.mean())
    product = b * a.conj()
    correlation = np.fft.ifftn(product).real
    peak = np.array(np.unravel_index(np.argmax(correlation), correlation.shape), dtype=float)
    sizes = np.array(correlation.shape)
    peak = np.where(peak > sizes / 2, peak - sizes, peak)
    offsets = (np.arange(3 * upsample) - 3 * upsample // 2) / upsample
    local = product
    for axis, n in enumerate(correlation.shape):  # the inverse DFT on a local fine grid
        kernel = np.exp(2j * np.pi * np.outer(peak[axis] + offsets, np.fft.fftfreq(n)))
        local = np.moveaxis(np.tensordot(kernel, np.moveaxis(local, axis, 0), axes=(1, 0)), 0, axis)
    best = np.unravel_index(np.argmax(local.real), local.shape)
    shift: np.ndarray = peak + offsets[list(best)]
    return shift


def common_line_shifts(
    projections: torch.Tensor | np.ndarray,
    euler_deg: torch.Tensor | np.ndarray,
    voxel_ang: float,
    *,
    rounds: int = 3,
) -> torch.Tensor:
    """Shifts along the tilt axis from the common line of a single-axis series.

    The tilt axis of (φ, θ, ψ) lies along u = Rz(φ) ŷ in the image; every tilt shares φ
    and ψ (a single-axis series). Each projection is integrated across u; the profiles
    along u are aligned to their mean (iterated ``rounds`` times, the mean re-formed each
    time), and the mean shift is removed (a translation of the volume along the axis).

    Returns
    -------
    torch.Tensor
        float64 (tilts, 2): (s_y, s_x) [Å], each along u.
    """
    images = _stack("projections", projections)
    angles = torch.as_tensor(euler_deg, dtype=torch.float64)
    require_positive("voxel_ang", voxel_ang, "Å")
    if tuple(angles.shape) != (images.shape[0], 3):
        raise ValueError(
            f"euler_deg must have shape (tilts, 3) = ({images.shape[0]}, 3), got "
            f"{tuple(angles.shape)}"
        )
    for column, name in ((0, "φ"), (2, "ψ")):
        spread = float(angles[:, column].max() - angles[:, column].min())
        if spread > 10.0:
            raise ValueError(
                f"common_line_shifts needs a single-axis series (one {name} for every tilt, "
                f"within 10°); euler_deg[:, {column}] spans {spread:.2f}°"
            )
    phi = math.radians(float(angles[:, 0].mean()))
    profiles = _axis_profiles(images, phi, voxel_ang).numpy()
    along = np.zeros(images.shape[0])
    for _ in range(rounds):
        moved = [
            np.interp(np.arange(p.size) - a, np.arange(p.size), p)
            for p, a in zip(profiles, along, strict=True)
        ]
        reference = np.mean(moved, axis=0)
        along = np.array([_correlation_shift(reference, p)[0] for p in profiles])
        along -= along.mean()
    u = np.array([math.cos(phi), -math.sin(phi)])  # (y, x) components of Rz(φ) ŷ
    return torch.as_tensor(along[:, None] * u[None, :] * voxel_ang)


def cross_correlation_shifts(
    projections: torch.Tensor | np.ndarray,
    references: torch.Tensor | np.ndarray,
    voxel_ang: float,
    *,
    upsample: int = 20,
    max_shift_ang: float | None = None,
) -> torch.Tensor:
    """Shift of each projection relative to its reference (e.g. a reprojection), [Å].

    Returns float64 (tilts, 2): s_t such that the projection is the reference moved by +s.
    """
    images = _stack("projections", projections).double().numpy()
    refs = _stack("references", references).double().numpy()
    require_positive("voxel_ang", voxel_ang, "Å")
    if images.shape != refs.shape:
        raise ValueError(
            f"references must have the projections' shape {images.shape}, got {refs.shape}"
        )
    pairs = zip(refs, images, strict=True)
    shifts = np.array([_correlation_shift(r, p, upsample) for r, p in pairs]) * voxel_ang
    if max_shift_ang is not None and bool((np.abs(shifts) > max_shift_ang).any()):
        raise ValueError(
            f"a shift of {float(np.abs(shifts).max()):.3f} Å exceeds max_shift_ang = "
            f"{max_shift_ang} Å: the references do not match the projections (wrong angles "
            "or a bad volume?)"
        )
    return torch.as_tensor(shifts)


def translation_modes(euler_deg: torch.Tensor) -> torch.Tensor:
    """(tilts·2, 3): the image shifts (s_y, s_x) per tilt that a volume translation makes.

    Translating the volume by d = (dx, dy, dz) moves projection t by (R_t d)_{y,x}.
    """
    rotations = rotation_matrices(euler_deg.double())
    return rotations[:, [1, 0], :].reshape(-1, 3)


def rotation_errors_deg(estimated_deg: torch.Tensor, true_deg: torch.Tensor) -> torch.Tensor:
    """Per-tilt angle [deg] between estimated and true orientations, gauge removed.

    A common rotation Q of the volume (R_est,t = R_true,t Q) is not an error: Q is the
    rotation nearest to the mean of R_true,tᵀ R_est,t (polar decomposition), and each
    tilt's error is the geodesic angle of R_true,t Q versus R_est,t.
    """
    estimated = rotation_matrices(torch.as_tensor(estimated_deg).double())
    true = rotation_matrices(torch.as_tensor(true_deg).double())
    relative = true.transpose(1, 2) @ estimated
    u, _, vh = torch.linalg.svd(relative.mean(dim=0))
    gauge = u @ torch.diag(torch.tensor([1.0, 1.0, float(torch.det(u @ vh))], dtype=u.dtype)) @ vh
    difference = (true @ gauge).transpose(1, 2) @ estimated
    trace = difference.diagonal(dim1=1, dim2=2).sum(dim=1)
    return torch.rad2deg(torch.arccos(((trace - 1) / 2).clamp(-1.0, 1.0)))


@dataclass(frozen=True)
class AlignmentSettings:
    """How :func:`refine_alignment` alternates between volume and alignment.

    Attributes
    ----------
    levels:
        Binning factors, coarse to fine (e.g. (4, 2, 1)).
    outer_iterations:
        Alignment updates per level.
    volume_iterations:
        FISTA iterations of the volume before each update (warm started).
    fit_angles:
        Which Euler angles are refined: a subset of ("phi", "theta", "psi"). ψ of a
        single-axis series is the specimen's in-plane orientation (a gauge): leave it.
    fit_shifts:
        Refine the shifts.
    max_angle_step_deg, max_shift_step_ang:
        Largest change per update (a trust region) [deg], [Å].
    damping:
        μ of the Levenberg-Marquardt step.
    support_threshold:
        After the first volume of a level, voxels of its 1 Å Gaussian-smoothed copy above
        this fraction of the maximum, dilated by ``support_dilate_ang`` [Å], become the
        support of the next volumes: fewer free voxels leave less room for the volume to
        absorb an alignment error. None: no support.
    volume:
        Settings of the volume reconstruction (its ``iterations`` is replaced by
        ``volume_iterations``).
    """

    levels: tuple[int, ...] = (4, 2, 1)
    outer_iterations: int = 6
    volume_iterations: int = 15
    fit_angles: tuple[str, ...] = ("phi", "theta")
    fit_shifts: bool = True
    max_angle_step_deg: float = 1.0
    max_shift_step_ang: float = 1.0
    damping: float = 1e-2
    support_threshold: float | None = 0.1
    support_dilate_ang: float = 1.5
    volume: VolumeSettings = field(default_factory=VolumeSettings)

    def __post_init__(self) -> None:
        if not self.levels or any(int(b) != b or b < 1 for b in self.levels):
            raise ValueError(f"levels must be binning factors >= 1, got {self.levels!r}")
        unknown = set(self.fit_angles) - set(_PARAMETERS)
        if unknown:
            raise ValueError(
                f"fit_angles must be a subset of {_PARAMETERS}, got unknown {sorted(unknown)}"
            )
        for name in ("outer_iterations", "volume_iterations"):
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        require_positive("max_angle_step_deg", self.max_angle_step_deg, "deg")
        require_positive("max_shift_step_ang", self.max_shift_step_ang, "Å")
        require_positive("damping", self.damping)


@dataclass
class AlignmentResult:
    """The refined alignment and the volume reconstructed with it.

    Attributes
    ----------
    volume:
        (nz, ny, nx) at the finest level.
    euler_deg, shifts_ang:
        float64 (tilts, 3) and (tilts, 2): the refined angles [deg] and shifts [Å].
    history:
        One entry per update: level, relative residual before the update, and the RMS
        angle and shift changes.
    """

    volume: torch.Tensor
    euler_deg: torch.Tensor
    shifts_ang: torch.Tensor
    history: list[dict[str, float]] = field(default_factory=list)


def _bin(images: torch.Tensor, factor: int) -> torch.Tensor:
    """Mean over factor × factor pixels (after cropping to a multiple of it)."""
    if factor == 1:
        return images
    ny, nx = (n // factor * factor for n in images.shape[-2:])
    return functional.avg_pool2d(images[None, :, :ny, :nx], factor)[0]


def _support(volume: torch.Tensor, voxel: float, settings: AlignmentSettings) -> torch.Tensor:
    """Voxels near the specimen: smoothed volume above a threshold, dilated."""
    smooth = gaussian_smooth(volume, 1.0 / voxel)
    threshold = settings.support_threshold or 0.0
    inside = smooth > threshold * float(smooth.max())
    radius = max(1, round(settings.support_dilate_ang / voxel))
    grown = functional.max_pool3d(inside[None, None].float(), 2 * radius + 1, 1, radius)
    return grown[0, 0] > 0


def _remove_gauge(
    delta: torch.Tensor, euler: torch.Tensor, columns: list[int], fit_shifts: bool
) -> torch.Tensor:
    """Remove a common θ change and the translation modes from an update (tilts, 5)."""
    if 1 in columns:
        delta[:, 1] -= delta[:, 1].mean()
    if fit_shifts:
        modes = translation_modes(euler)  # (tilts·2, 3)
        flat = delta[:, 3:].reshape(-1)
        coefficients = torch.linalg.lstsq(modes, flat[:, None]).solution
        delta[:, 3:] = (flat - (modes @ coefficients)[:, 0]).reshape(-1, 2)
    return delta


def _volume_model(
    volume: torch.Tensor, voxel: float, center: Sequence[float]
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Projections of a volume as a function of the (tilts, 5) parameters."""

    def model(p: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return project(volume, p[:, :3], voxel, shifts_ang=p[:, 3:], center_ang=center)

    return model


def _gauss_newton_step(
    model: Callable[[torch.Tensor], torch.Tensor],
    data: torch.Tensor,
    weights: torch.Tensor,
    euler: torch.Tensor,
    shifts: torch.Tensor,
    steps: tuple[float, float],
    columns: list[int],
    settings: AlignmentSettings,
) -> tuple[torch.Tensor, float]:
    """One damped Gauss-Newton step per tilt; returns (delta (tilts, 5), residual).

    ``model`` maps the (tilts, 5) parameters (φ, θ, ψ [deg], s_y, s_x [Å]) to projections;
    its derivatives are central differences with ``steps`` = (angle [deg], shift [Å]).
    """
    params = torch.cat((euler, shifts), dim=1)  # (tilts, 5): φ, θ, ψ, s_y, s_x
    base = model(params)
    residual = (base - data) * weights.sqrt()
    jacobian = []
    for column in columns:
        step = steps[0] if column < 3 else steps[1]
        offset = torch.zeros_like(params)
        offset[:, column] = step
        derivative = (model(params + offset) - model(params - offset)) / (2 * step)
        jacobian.append((derivative * weights.sqrt()).flatten(1))
    j = torch.stack(jacobian, dim=2)  # (tilts, pixels, k)
    normal = j.transpose(1, 2) @ j
    gradient = j.transpose(1, 2) @ residual.flatten(1)[:, :, None]
    damped = normal + settings.damping * torch.diag_embed(normal.diagonal(dim1=1, dim2=2))
    solution = -torch.linalg.solve(damped, gradient)[:, :, 0]
    delta = torch.zeros_like(params)
    delta[:, columns] = solution
    delta[:, :3] = delta[:, :3].clamp(-settings.max_angle_step_deg, settings.max_angle_step_deg)
    delta[:, 3:] = delta[:, 3:].clamp(-settings.max_shift_step_ang, settings.max_shift_step_ang)
    # Keep a tilt's step only where it lowers that tilt's misfit (halving it up to 3 times):
    # the projector is piecewise linear, so a Gauss-Newton step can overshoot.
    before = residual.pow(2).sum(dim=(1, 2))
    accepted = torch.zeros_like(delta)
    pending = torch.ones(len(delta), dtype=torch.bool)
    for _ in range(4):
        trial = ((model(params + delta) - data) * weights.sqrt()).pow(2).sum(dim=(1, 2))
        better = pending & (trial < before)
        accepted[better] = delta[better]
        pending &= ~better
        if not bool(pending.any()):
            break
        delta = delta * 0.5
    relative = float(residual.norm() / (data * weights.sqrt()).norm().clamp_min(1e-30))
    return accepted, relative


def refine_alignment(
    projections: torch.Tensor,
    euler_deg: torch.Tensor,
    voxel_ang: float,
    *,
    shifts_ang: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    depth: int | None = None,
    settings: AlignmentSettings | None = None,
) -> AlignmentResult:
    """Refine angles and shifts jointly with the volume (module docstring).

    Parameters
    ----------
    projections:
        Real (tilts, ny, nx) on the volume's lateral grid.
    euler_deg:
        (tilts, 3) starting (φ, θ, ψ) [deg].
    voxel_ang:
        Voxel (= pixel) size at full resolution [Å].
    shifts_ang:
        (tilts, 2) starting shifts [Å] (e.g. from :func:`center_of_mass_shifts`).
    weights:
        (tilts, ny, nx) ≥ 0 per-pixel weights; 1 by default.
    depth:
        nz at full resolution; default max(ny, nx).
    settings:
        :class:`AlignmentSettings`.

    Returns
    -------
    AlignmentResult
    """
    settings = settings or AlignmentSettings()
    data = _stack("projections", projections).float()
    require_positive("voxel_ang", voxel_ang, "Å")
    tilts, ny, nx = data.shape
    euler = torch.as_tensor(euler_deg, dtype=torch.float64).clone()
    if tuple(euler.shape) != (tilts, 3):
        raise ValueError(f"euler_deg must have shape ({tilts}, 3), got {tuple(euler.shape)}")
    shifts = (
        torch.zeros(tilts, 2, dtype=torch.float64)
        if shifts_ang is None
        else torch.as_tensor(shifts_ang, dtype=torch.float64).clone()
    )
    if tuple(shifts.shape) != (tilts, 2):
        raise ValueError(f"shifts_ang must have shape ({tilts}, 2), got {tuple(shifts.shape)}")
    w = torch.ones_like(data) if weights is None else torch.as_tensor(weights).float()
    nz = int(depth) if depth is not None else max(ny, nx)
    center = np.asarray(box_center_ang((nz, ny, nx), voxel_ang))
    columns = [_PARAMETERS.index(name) for name in settings.fit_angles]
    columns += [3, 4] if settings.fit_shifts else []
    result = AlignmentResult(torch.zeros(nz, ny, nx), euler, shifts)
    volume_settings = VolumeSettings(
        **{**settings.volume.__dict__, "iterations": settings.volume_iterations}
    )
    for level in settings.levels:
        level_data, level_weights = _bin(data, level), _bin(w, level)
        voxel = voxel_ang * level
        # The mean of voxels kb .. kb+b−1 sits (b−1)v/2 beyond the binned voxel's origin.
        level_center = (center - (level - 1) * voxel_ang / 2).tolist()
        level_depth = nz // level
        volume, support = None, None
        for _ in range(settings.outer_iterations):
            volume = reconstruct_volume(
                level_data,
                euler.float(),
                voxel,
                depth=level_depth,
                shifts_ang=shifts.float(),
                weights=level_weights,
                initial=volume,
                support=support,
                center_ang=level_center,
                settings=volume_settings,
            ).volume
            if support is None and settings.support_threshold is not None:
                support = _support(volume, voxel, settings)
            if not columns:
                break
            # The bilinear projector is piecewise linear: differences over 1/4° and v/2.
            delta, residual = _gauss_newton_step(
                _volume_model(volume, voxel, level_center),
                level_data,
                level_weights,
                euler.float(),
                shifts.float(),
                (0.25, 0.5 * voxel),
                columns,
                settings,
            )
            delta = _remove_gauge(delta.double(), euler, columns, settings.fit_shifts)
            euler += delta[:, :3]
            shifts += delta[:, 3:]
            result.history.append(
                {
                    "level": float(level),
                    "relative_residual": residual,
                    "angle_change_deg": float(delta[:, :3].pow(2).sum(1).mean().sqrt()),
                    "shift_change_ang": float(delta[:, 3:].pow(2).sum(1).mean().sqrt()),
                }
            )
    final = reconstruct_volume(
        data,
        euler.float(),
        voxel_ang,
        depth=nz,
        shifts_ang=shifts.float(),
        weights=w,
        settings=settings.volume,
    )
    result.volume, result.euler_deg, result.shifts_ang = final.volume, euler, shifts
    return result


@dataclass
class AtomAlignmentResult:
    """Atoms and alignment refined together (:func:`refine_alignment_with_atoms`).

    Attributes
    ----------
    positions_ang:
        float64 (N, 3): refined (x, y, z) [Å].
    euler_deg, shifts_ang:
        float64 (tilts, 3) and (tilts, 2).
    amplitudes, widths_ang:
        float64 (S,): per species, from the last atom refinement.
    history:
        Per round: relative residual of the atom model, RMS angle and shift changes.
    """

    positions_ang: np.ndarray
    euler_deg: torch.Tensor
    shifts_ang: torch.Tensor
    amplitudes: np.ndarray
    widths_ang: np.ndarray
    history: list[dict[str, float]] = field(default_factory=list)


def _atom_model(
    refined: Any,
    labels: np.ndarray,
    shape: tuple[int, int, int],
    voxel: float,
    center: Sequence[float],
    profiles: Sequence[str] | None,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Projections of refined atoms (a ``RefinedAtoms``) as a function of the (tilts, 5)
    parameters: analytic with ``profiles``, else rendered and projected."""
    from .refine import render_gaussians

    positions = torch.as_tensor(refined.positions_ang)
    amplitudes = torch.as_tensor(refined.atom_amplitudes)
    if profiles is None:
        volume = render_gaussians(
            positions, amplitudes, torch.as_tensor(refined.widths_ang[labels]), shape, voxel
        )
        return _volume_model(volume, voxel, center)
    label = torch.as_tensor(labels)
    widths = torch.as_tensor(refined.widths_ang)

    def model(p: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return project_atoms(
                positions,
                label,
                amplitudes,
                widths,
                p[:, :3],
                shape[1:],
                voxel,
                profiles=profiles,
                center_ang=center,
                shifts_ang=p[:, 3:],
            )

    return model


def refine_alignment_with_atoms(
    projections: torch.Tensor,
    euler_deg: torch.Tensor,
    voxel_ang: float,
    positions: np.ndarray,
    labels: np.ndarray,
    *,
    shifts_ang: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    depth: int | None = None,
    rounds: int = 12,
    atom_iterations: int = 25,
    fit_angles: Sequence[str] = ("phi", "theta"),
    fit_shifts: bool = True,
    settings: AlignmentSettings | None = None,
    profiles: Sequence[str] | None = None,
) -> AtomAlignmentResult:
    """Alternate atom refinement and alignment against the projections (AET practice).

    Each round refines the atoms' positions and per-species amplitudes and widths with
    the current angles and shifts
    (:func:`~ptyscope.tomography.refine.refine_atoms_against_projections`), renders the
    atomic model, and takes one Gauss-Newton step per tilt on its angles and shift
    against that model (gauge removed, as in :func:`refine_alignment`). The model has
    3 N + 2 S unknowns instead of a volume's voxels, so it cannot absorb an angle error.

    Parameters
    ----------
    projections, euler_deg, voxel_ang, shifts_ang, weights, depth:
        As for :func:`refine_alignment` (full resolution).
    positions, labels:
        (N, 3) (x, y, z) [Å] and (N,) species of the traced atoms.
    rounds:
        Alignment updates (each after one atom refinement); a final atom refinement
        follows.
    atom_iterations:
        L-BFGS iterations of each atom refinement.
    fit_angles, fit_shifts:
        What the alignment updates refine (none: the atoms are refined once).
    settings:
        Trust region and damping (:class:`AlignmentSettings`); its levels are unused.
    profiles:
        None: the model is rendered into voxels and projected by the bilinear projector;
        one element symbol or ``"gaussian"`` per species: projected analytically
        (:func:`~ptyscope.tomography.atom_projection.project_atoms`), which keeps the
        projector's tilt-dependent blur out of the angles (recommended; the pipeline
        uses the element profiles).
    """
    from .refine import refine_atoms_against_projections

    settings = settings or AlignmentSettings()
    data = _stack("projections", projections).double()
    tilts, ny, nx = data.shape
    euler = torch.as_tensor(euler_deg, dtype=torch.float64).clone()
    shifts = (
        torch.zeros(tilts, 2, dtype=torch.float64)
        if shifts_ang is None
        else torch.as_tensor(shifts_ang, dtype=torch.float64).clone()
    )
    w = torch.ones_like(data) if weights is None else torch.as_tensor(weights).double()
    nz = int(depth) if depth is not None else max(ny, nx)
    center = list(box_center_ang((nz, ny, nx), voxel_ang))
    unknown = set(fit_angles) - set(_PARAMETERS)
    if unknown:
        raise ValueError(f"fit_angles must be a subset of {_PARAMETERS}, got {sorted(unknown)}")
    columns = [_PARAMETERS.index(name) for name in fit_angles] + ([3, 4] if fit_shifts else [])
    labels = np.asarray(labels)
    current = np.asarray(positions, dtype=np.float64)
    amplitudes: Any = None
    widths: Any = None
    history: list[dict[str, float]] = []
    for round_index in range(rounds + 1):
        refined = refine_atoms_against_projections(
            data,
            euler,
            voxel_ang,
            current,
            labels,
            shifts_ang=shifts,
            weights=w,
            depth=nz,
            iterations=atom_iterations,
            initial_amplitudes=amplitudes,
            initial_widths_ang=widths,
            profiles=profiles,
        )
        current = refined.positions_ang
        # Start the next round where this one ended (widths kept above the v/4 floor).
        amplitudes = refined.amplitudes.tolist()
        floor = 0.3 * voxel_ang if profiles is None or GAUSSIAN in profiles else 1e-3
        widths = np.maximum(refined.widths_ang, floor).tolist()
        if round_index == rounds or not columns:
            break
        delta, residual = _gauss_newton_step(
            _atom_model(refined, labels, (nz, ny, nx), voxel_ang, center, profiles),
            data,
            w,
            euler,
            shifts,
            (0.25, 0.5 * voxel_ang) if profiles is None else (0.01, 0.01),
            columns,
            settings,
        )
        delta = _remove_gauge(delta, euler, columns, fit_shifts)
        euler += delta[:, :3]
        shifts += delta[:, 3:]
        history.append(
            {
                "relative_residual": residual,
                "angle_change_deg": float(delta[:, :3].pow(2).sum(1).mean().sqrt()),
                "shift_change_ang": float(delta[:, 3:].pow(2).sum(1).mean().sqrt()),
            }
        )
    return AtomAlignmentResult(
        current, euler, shifts, refined.amplitudes, refined.widths_ang, history
    )
