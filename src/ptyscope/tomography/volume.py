"""Volume reconstruction from projections by the differentiable projector.

The volume V minimises the weighted projection misfit plus an optional total variation,

    f(V) = ½ Σ_t Σ_yx w_t (P_t(V) − D_t)² + λ L Σ_voxels √(|∇V|² + ε²),

subject to V ≥ 0 (positivity) and V = 0 outside a support, where P_t is
:func:`~ptyscope.tomography.projector.project`, D_t the measured projections and w_t
per-pixel weights (0 where a projection has no data). The misfit is linear in V, so the
iteration is FISTA (Beck & Teboulle 2009): a gradient step of 1/L, where L is the largest
eigenvalue of the data term's Hessian AᵀA (found by power iteration), then the projection
onto the constraints, with Nesterov momentum. λ is therefore dimensionless: the TV weight
relative to the data term's curvature. An optional Gaussian smoothing of σ [Å] after each
step is the "Gaussian regularisation" of tomographic practice (it damps the
unconstrained missing-wedge frequencies that the data leave free).

The gradients are those of the projector (autograd), so the same code runs on CUDA.

References
----------
A. Beck and M. Teboulle, "A fast iterative shrinkage-thresholding algorithm for linear
inverse problems", SIAM J. Imaging Sci. 2, 183-202 (2009).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as functional

from ptyscope._validation import require_positive

from .projector import ProjectionOperator

#: Maps a (nz, ny, nx) volume to (tilts, ny, nx) projections.
Projector = Callable[[torch.Tensor], torch.Tensor]

__all__ = [
    "VolumeResult",
    "VolumeSettings",
    "gaussian_smooth",
    "projection_norm",
    "reconstruct_volume",
]


@dataclass(frozen=True)
class VolumeSettings:
    """How :func:`reconstruct_volume` iterates.

    Attributes
    ----------
    iterations:
        FISTA iterations (each one projection and one back-projection of every tilt).
    positivity:
        Clip negative voxels to zero (a potential or a phase is non-negative).
    tv_weight:
        λ, the total-variation weight relative to the data curvature L (0: none; 1e-3 to
        1e-2 suppresses noise without rounding atoms at 0.3-0.5 Å voxels).
    tv_epsilon:
        ε of the smoothed TV, relative to the largest projection value divided by the
        box depth (the mean voxel value of a column through the densest part).
    gaussian_sigma_ang:
        σ [Å] of a Gaussian smoothing applied after each step (0: none).
    power_iterations:
        Iterations of the power method that estimates L.
    """

    iterations: int = 60
    positivity: bool = True
    tv_weight: float = 0.0
    tv_epsilon: float = 1e-2
    gaussian_sigma_ang: float = 0.0
    power_iterations: int = 12

    def __post_init__(self) -> None:
        if int(self.iterations) != self.iterations or self.iterations < 1:
            raise ValueError(f"iterations must be an integer >= 1, got {self.iterations!r}")
        if not math.isfinite(self.tv_weight) or self.tv_weight < 0:
            raise ValueError(f"tv_weight must be >= 0 (0: no TV), got {self.tv_weight!r}")
        require_positive("tv_epsilon", self.tv_epsilon)
        if not math.isfinite(self.gaussian_sigma_ang) or self.gaussian_sigma_ang < 0:
            raise ValueError(
                f"gaussian_sigma_ang must be >= 0 Å (0: no smoothing), got "
                f"{self.gaussian_sigma_ang!r}"
            )
        if self.power_iterations < 1:
            raise ValueError(f"power_iterations must be >= 1, got {self.power_iterations!r}")


@dataclass
class VolumeResult:
    """A reconstructed volume and how the misfit went.

    Attributes
    ----------
    volume:
        Real tensor (nz, ny, nx), axes (z, y, x), in the projections' units per Å.
    relative_residual:
        ‖√w (P(V) − D)‖ / ‖√w D‖ at each iteration (at the extrapolated point).
    lipschitz:
        L, the largest eigenvalue of AᵀA (weighted).
    """

    volume: torch.Tensor
    relative_residual: list[float] = field(default_factory=list)
    lipschitz: float = float("nan")


def gaussian_smooth(volume: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """Separable Gaussian smoothing of a (nz, ny, nx) tensor, σ in voxels, zero padded.

    Zero padding keeps the integral of content away from the faces (a specimen in
    vacuum) and leaks nothing in from outside.
    """
    if sigma_px <= 0:
        return volume
    radius = max(1, math.ceil(4 * sigma_px))  # 4σ: the variance is 99.9 % of σ²
    x = torch.arange(-radius, radius + 1, dtype=volume.dtype, device=volume.device)
    kernel = torch.exp(-0.5 * (x / sigma_px) ** 2)
    kernel = kernel / kernel.sum()
    out = volume[None, None]
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = kernel.numel()
        padding = [0, 0, 0]
        padding[axis] = radius
        out = functional.conv3d(out, kernel.reshape(shape), padding=tuple(padding))
    return out[0, 0]


def _data_term(
    volume: torch.Tensor, data: torch.Tensor, weights: torch.Tensor, operator: Projector
) -> torch.Tensor:
    return 0.5 * (weights * (operator(volume) - data) ** 2).sum()


def projection_norm(
    operator: Projector,
    shape: Sequence[int],
    weights: torch.Tensor,
    *,
    iterations: int = 12,
    seed: int = 0,
) -> float:
    """L = largest eigenvalue of AᵀWA by power iteration (A: the projector, W: weights).

    ``operator`` maps a (nz, ny, nx) volume of ``shape`` to (tilts, ny, nx) projections
    (:class:`~ptyscope.tomography.projector.ProjectionOperator`). Returns the estimate
    after ``iterations`` steps, raised by 5 % as a safety margin for the FISTA step 1/L
    (the power method approaches L from below).
    """
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(tuple(shape), generator=generator, dtype=weights.dtype).to(weights.device)
    zero = torch.zeros_like(weights)
    estimate = 0.0
    for _ in range(iterations):
        x = x / x.norm()
        x.requires_grad_(True)
        # ∇ of ½‖√W A x‖² is AᵀWAx.
        value = _data_term(x, zero, weights, operator)
        (hx,) = torch.autograd.grad(value, x)
        estimate = float(hx.norm())
        x = hx.detach()
    return 1.05 * estimate


def _smoothed_tv(volume: torch.Tensor, epsilon: float) -> torch.Tensor:
    dz = torch.diff(volume, dim=0, append=volume[-1:])
    dy = torch.diff(volume, dim=1, append=volume[:, -1:])
    dx = torch.diff(volume, dim=2, append=volume[:, :, -1:])
    return torch.sqrt(dz**2 + dy**2 + dx**2 + epsilon**2).sum()


def _check(
    projections: torch.Tensor,
    euler_deg: torch.Tensor,
    weights: torch.Tensor | None,
    support: torch.Tensor | None,
    shape: tuple[int, int, int],
) -> None:
    if projections.ndim != 3 or projections.is_complex():
        raise ValueError(
            f"projections must be a real tensor (tilts, ny, nx), got shape "
            f"{tuple(projections.shape)} and dtype {projections.dtype}"
        )
    if tuple(euler_deg.shape) != (projections.shape[0], 3):
        raise ValueError(
            f"euler_deg must have shape (tilts, 3) = ({projections.shape[0]}, 3) to match "
            f"the projections, got {tuple(euler_deg.shape)}"
        )
    if not bool(torch.isfinite(projections).all()):
        raise ValueError(
            "projections must be finite, got NaN or Inf; give pixels without data weight 0 "
            "(weights) and any finite value"
        )
    if weights is not None and (weights.shape != projections.shape or bool((weights < 0).any())):
        raise ValueError(
            f"weights must be >= 0 with the projections' shape {tuple(projections.shape)}, "
            f"got shape {tuple(weights.shape)}"
        )
    if support is not None and tuple(support.shape) != shape:
        raise ValueError(
            f"support must be a boolean volume of shape {shape}, got {tuple(support.shape)}"
        )


def reconstruct_volume(
    projections: torch.Tensor,
    euler_deg: torch.Tensor,
    voxel_ang: float,
    *,
    depth: int | None = None,
    shifts_ang: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    support: torch.Tensor | None = None,
    initial: torch.Tensor | None = None,
    center_ang: Sequence[float] | None = None,
    settings: VolumeSettings | None = None,
) -> VolumeResult:
    """Reconstruct a volume from projections (module docstring for the objective).

    Parameters
    ----------
    projections:
        Real tensor (tilts, ny, nx): D_t on the volume's lateral grid (pixel = voxel).
    euler_deg:
        Real tensor (tilts, 3): (φ, θ, ψ) [deg] (:mod:`ptyscope.tomography.projector`).
    voxel_ang:
        Voxel size [Å].
    depth:
        nz; default max(ny, nx), so that a particle seen at every tilt fits.
    shifts_ang:
        (tilts, 2) (s_y, s_x) [Å] of each projection; none by default.
    weights:
        (tilts, ny, nx) ≥ 0 per-pixel weights w_t; 1 by default (0: no data there).
    support:
        Boolean (nz, ny, nx): voxels allowed to be non-zero; everywhere by default.
    initial:
        Starting volume (nz, ny, nx); zeros by default.
    center_ang:
        Rotation centre (x, y, z) [Å]; default the centre of the box.
    settings:
        :class:`VolumeSettings`.

    Returns
    -------
    VolumeResult
    """
    settings = settings or VolumeSettings()
    require_positive("voxel_ang", voxel_ang, "Å")
    ny, nx = int(projections.shape[-2]), int(projections.shape[-1])
    shape = (int(depth) if depth is not None else max(ny, nx), ny, nx)
    _check(projections, euler_deg, weights, support, shape)
    data = projections.detach()
    dtype, device = data.dtype, data.device
    euler = euler_deg.detach().to(device=device, dtype=dtype)
    shifts = None if shifts_ang is None else shifts_ang.detach().to(device=device, dtype=dtype)
    w = torch.ones_like(data) if weights is None else weights.detach().to(device, dtype)
    allowed = None if support is None else support.to(device=device, dtype=torch.bool)

    operator = ProjectionOperator(
        shape,
        euler,
        voxel_ang,
        shifts_ang=shifts,
        center_ang=center_ang,
        device=device,
        dtype=dtype,
    )
    lipschitz = projection_norm(operator, shape, w, iterations=settings.power_iterations)
    epsilon = settings.tv_epsilon * float(data.abs().max()) / (shape[0] * voxel_ang)
    tv_scale = settings.tv_weight * lipschitz
    step = 1.0 / (lipschitz + (12.0 * tv_scale / epsilon if tv_scale > 0 else 0.0))
    sigma_px = settings.gaussian_sigma_ang / voxel_ang
    norm = float(torch.sqrt((w * data**2).sum()))

    def constrain(volume: torch.Tensor) -> torch.Tensor:
        volume = gaussian_smooth(volume, sigma_px)
        if settings.positivity:
            volume = volume.clamp_min(0.0)
        if allowed is not None:
            volume = volume * allowed
        return volume

    if initial is not None and tuple(initial.shape) != shape:
        raise ValueError(f"initial must have shape {shape}, got {tuple(initial.shape)}")
    x = (
        torch.zeros(shape, dtype=dtype, device=device)
        if initial is None
        else constrain(initial.detach().to(device=device, dtype=dtype))
    )
    y, momentum = x.clone(), 1.0
    result = VolumeResult(x, lipschitz=lipschitz)
    for _ in range(settings.iterations):
        y.requires_grad_(True)
        misfit = _data_term(y, data, w, operator)
        objective = misfit + (tv_scale * _smoothed_tv(y, epsilon) if tv_scale > 0 else 0.0)
        (gradient,) = torch.autograd.grad(objective, y)
        result.relative_residual.append(math.sqrt(2 * float(misfit.detach())) / max(norm, 1e-30))
        with torch.no_grad():
            x_next = constrain(y - step * gradient)
            next_momentum = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * momentum**2))
            y = x_next + ((momentum - 1.0) / next_momentum) * (x_next - x)
            x, momentum = x_next, next_momentum
    result.volume = x.detach()
    return result
