"""Differentiable tomographic projector: rotate a volume, integrate it along the beam.

Conventions (shared by every module of :mod:`ptyscope.tomography`)
------------------------------------------------------------------
* A volume is a real tensor ``(nz, ny, nx)``, axes (z, y, x), with isotropic voxels of
  ``voxel_ang`` [Å]. Voxel (k, i, j) is centred at (z, y, x) = (k·v, i·v, j·v) in the
  specimen frame, as in :func:`ptyscope.simulation.tilt_series.potential_volume`.
* Tilt t rotates the specimen actively about the centre c (ase order (x, y, z) [Å];
  default the centre of the box, n·v/2 per axis): r → R_t (r − c) + c, with
  R_t = Rz(φ) Ry(θ) Rz(ψ) for the intrinsic Z-Y-Z Euler angles (φ, θ, ψ) [deg] of
  :func:`ptyscope.simulation.specimens.rotation_matrix`. A single-axis series about y
  is (0, θ, 0). The beam travels along +z.
* The projection of tilt t is the line integral of the rotated volume along z,

      P_t(y, x) = ∫ V(R_tᵀ (r − c) + c) dz,    r = (x − s_x, y − s_y, z),

  sampled at the volume's lateral pixels (i·v, j·v): units of the volume times Å
  (for a potential in V, the projected potential in V·Å; the phase of a weak object is
  σ P). The shift s_t = (s_y, s_x) [Å] moves the projection image by +s: a feature at
  (y, x) in the unshifted projection appears at (y + s_y, x + s_x).

The rotated volume is sampled by trilinear interpolation (``grid_sample``) at depth steps
of one voxel over the box diagonal, so no part of the box is cut at any angle, and the
sum is multiplied by v. Everything is differentiable in the volume, the angles and the
shifts, which the joint alignment (:mod:`ptyscope.tomography.alignment`) uses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch.nn.functional import grid_sample

from ptyscope._validation import require_positive

__all__ = ["box_center_ang", "project", "rotation_matrices"]

#: Voxels sampled per grid_sample call; bounds the (depth, ny, nx, 3) coordinate buffer.
_SAMPLES_PER_CHUNK = 2**23


def rotation_matrices(euler_deg: torch.Tensor) -> torch.Tensor:
    """Active rotations R = Rz(φ) Ry(θ) Rz(ψ) for each row (φ, θ, ψ) [deg], differentiable.

    Parameters
    ----------
    euler_deg:
        Real tensor (tilts, 3): (φ, θ, ψ) [deg].

    Returns
    -------
    torch.Tensor
        (tilts, 3, 3) in the dtype of ``euler_deg``, acting on (x, y, z) column vectors;
        equal to :func:`ptyscope.simulation.specimens.rotation_matrix` row by row.
    """
    if euler_deg.ndim != 2 or euler_deg.shape[1] != 3:
        raise ValueError(
            f"euler_deg must have shape (tilts, 3) with rows (φ, θ, ψ) [deg], "
            f"got shape {tuple(euler_deg.shape)}"
        )
    angles = torch.deg2rad(euler_deg)
    cos, sin = torch.cos(angles), torch.sin(angles)
    zero, one = torch.zeros_like(angles[:, 0]), torch.ones_like(angles[:, 0])

    def rz(c: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        rows = (c, -s, zero, s, c, zero, zero, zero, one)
        return torch.stack(rows, dim=-1).reshape(-1, 3, 3)

    def ry(c: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        rows = (c, zero, s, zero, one, zero, -s, zero, c)
        return torch.stack(rows, dim=-1).reshape(-1, 3, 3)

    return rz(cos[:, 0], sin[:, 0]) @ ry(cos[:, 1], sin[:, 1]) @ rz(cos[:, 2], sin[:, 2])


def box_center_ang(shape: Sequence[int], voxel_ang: float) -> tuple[float, float, float]:
    """Default rotation centre (x, y, z) [Å] of a volume (nz, ny, nx): n·v/2 per axis.

    For even sizes this is the centre of voxel n/2, the origin of a centred FFT grid.
    """
    nz, ny, nx = (int(n) for n in shape)
    return (nx * voxel_ang / 2, ny * voxel_ang / 2, nz * voxel_ang / 2)


def _check_inputs(
    volume: torch.Tensor,
    euler_deg: torch.Tensor,
    voxel_ang: float,
    shifts_ang: torch.Tensor | None,
) -> None:
    if volume.ndim != 3 or min(volume.shape) < 2:
        raise ValueError(
            f"volume must be a real tensor (nz, ny, nx) with every size >= 2, got shape "
            f"{tuple(volume.shape)}"
        )
    if volume.is_complex() or not volume.is_floating_point():
        raise ValueError(f"volume must be a real floating tensor, got dtype {volume.dtype}")
    require_positive("voxel_ang", voxel_ang, "Å")
    if euler_deg.ndim != 2 or euler_deg.shape[1] != 3 or euler_deg.shape[0] < 1:
        raise ValueError(
            f"euler_deg must have shape (tilts, 3) with rows (φ, θ, ψ) [deg], got shape "
            f"{tuple(euler_deg.shape)}"
        )
    if shifts_ang is not None and tuple(shifts_ang.shape) != (euler_deg.shape[0], 2):
        raise ValueError(
            f"shifts_ang must have shape (tilts, 2) = ({euler_deg.shape[0]}, 2) with rows "
            f"(s_y, s_x) [Å], got shape {tuple(shifts_ang.shape)}"
        )
    for name, tensor in (("euler_deg", euler_deg), ("shifts_ang", shifts_ang)):
        if tensor is not None and not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{name} must be finite, got NaN or Inf entries")


def project(
    volume: torch.Tensor,
    euler_deg: torch.Tensor,
    voxel_ang: float,
    *,
    shifts_ang: torch.Tensor | None = None,
    center_ang: Sequence[float] | None = None,
) -> torch.Tensor:
    """Projections of a volume at each tilt (module docstring for the conventions).

    Parameters
    ----------
    volume:
        Real tensor (nz, ny, nx), axes (z, y, x), voxel ``voxel_ang``.
    euler_deg:
        Real tensor (tilts, 3): (φ, θ, ψ) [deg] of each tilt.
    voxel_ang:
        Voxel size v [Å].
    shifts_ang:
        Real tensor (tilts, 2): (s_y, s_x) [Å] by which each projection is moved; none
        by default.
    center_ang:
        Rotation centre (x, y, z) [Å]; default :func:`box_center_ang`.

    Returns
    -------
    torch.Tensor
        (tilts, ny, nx) on the volume's device and dtype: ∫ V dz [volume units × Å].

    Examples
    --------
    >>> volume = torch.zeros(8, 8, 8); volume[4, 4, 4] = 1.0
    >>> p = project(volume, torch.tensor([[0.0, 90.0, 0.0]]), 0.5)
    >>> round(float(p.sum()), 3), tuple(p.shape)
    (0.5, (1, 8, 8))
    """
    _check_inputs(volume, euler_deg, voxel_ang, shifts_ang)
    nz, ny, nx = volume.shape
    dtype, device = volume.dtype, volume.device
    center = box_center_ang(volume.shape, voxel_ang) if center_ang is None else center_ang
    c = torch.as_tensor(tuple(float(v) for v in center), dtype=dtype, device=device)
    if c.shape != (3,) or not bool(torch.isfinite(c).all()):
        raise ValueError(f"center_ang must be three finite numbers (x, y, z) [Å], got {center}")
    rotations = rotation_matrices(euler_deg.to(device=device, dtype=dtype))
    shifts = (
        torch.zeros(euler_deg.shape[0], 2, dtype=dtype, device=device)
        if shifts_ang is None
        else shifts_ang.to(device=device, dtype=dtype)
    )

    # Lab-frame sample points relative to the centre: depth over the box diagonal.
    depth_count = math.ceil(math.sqrt(nx * nx + ny * ny + nz * nz)) + 1
    z = (torch.arange(depth_count, dtype=dtype, device=device) - (depth_count - 1) / 2) * voxel_ang
    y = torch.arange(ny, dtype=dtype, device=device) * voxel_ang - c[1]
    x = torch.arange(nx, dtype=dtype, device=device) * voxel_ang - c[0]
    scale = torch.tensor(
        [2 / ((nx - 1) * voxel_ang), 2 / ((ny - 1) * voxel_ang), 2 / ((nz - 1) * voxel_ang)],
        dtype=dtype,
        device=device,
    )
    source = volume[None, None]  # (1, 1, nz, ny, nx)
    chunk = max(1, _SAMPLES_PER_CHUNK // (ny * nx))
    projections = []
    for t in range(euler_deg.shape[0]):
        lab_x = (x - shifts[t, 1])[None, None, :].expand(1, ny, nx)
        lab_y = (y - shifts[t, 0])[None, :, None].expand(1, ny, nx)
        total = volume.new_zeros(ny, nx)
        for start in range(0, depth_count, chunk):
            depth = z[start : start + chunk]
            lab = torch.stack(
                (
                    lab_x.expand(depth.numel(), ny, nx),
                    lab_y.expand(depth.numel(), ny, nx),
                    depth[:, None, None].expand(depth.numel(), ny, nx),
                ),
                dim=-1,
            )  # (depth, ny, nx, 3), (x, y, z) relative to c
            # Rᵀ (r − c) + c, then Å → grid_sample's [-1, 1] (align_corners=True).
            specimen = lab @ rotations[t] + c  # row-vector form of Rᵀ r
            grid = specimen * scale - 1.0
            sampled = grid_sample(
                source, grid[None], mode="bilinear", padding_mode="zeros", align_corners=True
            )
            total = total + sampled[0, 0].sum(dim=0)
        projections.append(total * voxel_ang)
    return torch.stack(projections)
