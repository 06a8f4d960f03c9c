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

R_t is applied as its three factors, each a bilinear resampling in a plane: ψ turns each
z-slice, θ turns each (z, x) plane about y while the sum over depth (steps of one voxel
along the (z, x) diagonal, so nothing is cut at any angle; times v) projects it, and φ
with the shift moves the 2D projection. A single-axis series (φ = ψ = 0) therefore costs
one 2D resampling per tilt. :func:`project` is differentiable in the volume, the angles
and the shifts (the joint alignment in :mod:`ptyscope.tomography.alignment` uses it);
:class:`ProjectionOperator` caches the same weights as sparse matrices for fixed angles,
about ten times faster in a volume reconstruction's inner loop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch.nn.functional import grid_sample

from ptyscope._validation import require_positive

__all__ = ["ProjectionOperator", "box_center_ang", "project", "rotation_matrices"]

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
    angles = torch.deg2rad(euler_deg.to(device=device, dtype=dtype))
    shifts = (
        torch.zeros(euler_deg.shape[0], 2, dtype=dtype, device=device)
        if shifts_ang is None
        else shifts_ang.to(device=device, dtype=dtype)
    )
    differentiable = angles.requires_grad or shifts.requires_grad
    grid = _Grid(nz, ny, nx, voxel_ang, c)
    projections = []
    for t in range(euler_deg.shape[0]):
        phi, theta, psi = angles[t]
        # R = Rz(φ) Ry(θ) Rz(ψ): ψ turns each z-slice, θ turns each (z, x) plane about y
        # and the sum over depth projects it, φ (and the shift) move the 2D projection.
        turned = volume
        if differentiable or float(psi) != 0.0:
            turned = grid.turn_slices(volume, psi)
        image = grid.project_about_y(turned, theta)
        if differentiable or float(phi) != 0.0 or bool(shifts[t].any()):
            image = grid.move_image(image, phi, shifts[t])
        projections.append(image)
    return torch.stack(projections)


class _Grid:
    """Source coordinates of the three steps of a projection, as fractional voxel indices.

    Shared by :func:`project` (grid_sample, differentiable in angles and shifts) and
    :class:`ProjectionOperator` (the same bilinear weights as a cached sparse matrix).
    """

    def __init__(self, nz: int, ny: int, nx: int, voxel: float, center: torch.Tensor) -> None:
        self.shape, self.voxel = (nz, ny, nx), voxel
        dtype, device = center.dtype, center.device
        # Positions relative to the centre c = (cx, cy, cz) [Å].
        self.x = torch.arange(nx, dtype=dtype, device=device) * voxel - center[0]
        self.y = torch.arange(ny, dtype=dtype, device=device) * voxel - center[1]
        depth = math.ceil(math.hypot(nx, nz)) + 1  # the (z, x) diagonal: nothing is cut
        steps = torch.arange(depth, dtype=dtype, device=device) - (depth - 1) / 2
        self.depth = steps * voxel
        self.center = center

    def index(self, position: torch.Tensor, axis: int) -> torch.Tensor:
        """Å relative to the centre → fractional voxel index along x (0), y (1) or z (2)."""
        return (position + self.center[axis]) / self.voxel

    def normalised(self, index: torch.Tensor, axis: int) -> torch.Tensor:
        """Fractional index → grid_sample's [-1, 1] (align_corners=True)."""
        return index * (2.0 / (self.shape[2 - axis] - 1)) - 1.0

    def slice_source(
        self, angle: torch.Tensor, shift: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(ny, nx) source (x, y) indices of each lateral pixel under Rz(angle)ᵀ after −s."""
        x, y = self.x, self.y
        if shift is not None:
            x, y = x - shift[1], y - shift[0]
        cos, sin = torch.cos(angle), torch.sin(angle)
        source_x = cos * x[None, :] + sin * y[:, None]
        source_y = -sin * x[None, :] + cos * y[:, None]
        return self.index(source_x, 0), self.index(source_y, 1)

    def plane_source(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(depth, nx) source (x, z) indices of the ray samples under Ry(θ)ᵀ."""
        cos, sin = torch.cos(theta), torch.sin(theta)
        x, z = self.x[None, :], self.depth[:, None]
        # Ry(θ)ᵀ = [[c, 0, −s], [0, 1, 0], [s, 0, c]] acting on (x, y, z).
        return self.index(cos * x - sin * z, 0), self.index(sin * x + cos * z, 2)

    def _sample(
        self, image: torch.Tensor, ix: torch.Tensor, iy: torch.Tensor, a: int, b: int
    ) -> torch.Tensor:
        grid = torch.stack((self.normalised(ix, a), self.normalised(iy, b)), dim=-1)
        grid = grid[None].expand(image.shape[0], *grid.shape)
        return grid_sample(
            image[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=True
        )[:, 0]

    def turn_slices(self, volume: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
        """V(Rz(ψ)ᵀ (r − c) + c): every z-slice turned by ψ about (cx, cy)."""
        return self._sample(volume, *self.slice_source(psi), 0, 1)

    def project_about_y(self, volume: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """∫ V(Ry(θ)ᵀ (r − c) + c) dz · v, as (ny, nx): the y rows are independent."""
        rows = volume.permute(1, 0, 2)  # (ny, nz, nx): a (z, x) plane per row
        return self._sample(rows, *self.plane_source(theta), 0, 2).sum(dim=1) * self.voxel

    def move_image(
        self, image: torch.Tensor, phi: torch.Tensor, shift: torch.Tensor
    ) -> torch.Tensor:
        """Q(Rz(φ)ᵀ ((x, y) − s − c) + c): the projection turned by φ and moved by s."""
        return self._sample(image[None], *self.slice_source(phi, shift), 0, 1)[0]


def _bilinear_matrix(
    rows: torch.Tensor, ia: torch.Tensor, ib: torch.Tensor, na: int, nb: int, n_rows: int
) -> torch.Tensor:
    """Sparse (n_rows, nb·na) matrix of the bilinear weights grid_sample would use.

    Sample m adds to row ``rows[m]`` the image at fractional index (ib, ia), axis b slow
    (size nb) and axis a fast (size na); corners outside the image weigh nothing (zero
    padding), as in grid_sample with align_corners=True.
    """
    rows, ia, ib = rows.reshape(-1), ia.reshape(-1), ib.reshape(-1)
    a0, b0 = torch.floor(ia), torch.floor(ib)
    fa, fb = ia - a0, ib - b0
    a0, b0 = a0.long(), b0.long()
    entries = []
    for da, db, weight in (
        (0, 0, (1 - fa) * (1 - fb)),
        (1, 0, fa * (1 - fb)),
        (0, 1, (1 - fa) * fb),
        (1, 1, fa * fb),
    ):
        a, b = a0 + da, b0 + db
        keep = (a >= 0) & (a < na) & (b >= 0) & (b < nb) & (weight != 0)
        entries.append((rows[keep], b[keep] * na + a[keep], weight[keep]))
    r, col, w = (torch.cat(parts) for parts in zip(*entries, strict=True))
    matrix = torch.sparse_coo_tensor(
        torch.stack((r, col)), w, (n_rows, nb * na), check_invariants=False
    )
    return matrix.coalesce()


class ProjectionOperator:
    """:func:`project` for fixed angles and shifts, cached as sparse matrices.

    The same bilinear weights as :func:`project` (equal to rounding), but each tilt's
    sampling is built once, so a projection and its adjoint (the backward pass) are sparse
    matrix products: several times faster in the inner loop of a volume reconstruction.
    Differentiable in the volume only; rebuild it when angles or shifts change.

    Parameters
    ----------
    shape:
        (nz, ny, nx) of the volumes it will project.
    euler_deg, voxel_ang, shifts_ang, center_ang:
        As for :func:`project`; tensors are taken as constants.
    device, dtype:
        Where the matrices live; default those of ``euler_deg`` (float32 at least).

    Examples
    --------
    >>> volume = torch.rand(6, 8, 8)
    >>> angles = torch.tensor([[0.0, 20.0, 0.0], [10.0, -35.0, 5.0]])
    >>> operator = ProjectionOperator(volume.shape, angles, 0.5)
    >>> bool(torch.allclose(operator(volume), project(volume, angles, 0.5), atol=1e-5))
    True
    """

    def __init__(
        self,
        shape: Sequence[int],
        euler_deg: torch.Tensor,
        voxel_ang: float,
        *,
        shifts_ang: torch.Tensor | None = None,
        center_ang: Sequence[float] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if len(shape) != 3:
            raise ValueError(f"shape must be (nz, ny, nx), got {tuple(shape)}")
        nz, ny, nx = (int(n) for n in shape)
        dtype = dtype or torch.promote_types(euler_deg.dtype, torch.float32)
        device = torch.device(device) if device is not None else euler_deg.device
        _check_inputs(torch.zeros(2, 2, 2, dtype=dtype), euler_deg, voxel_ang, shifts_ang)
        if min(nz, ny, nx) < 2:
            raise ValueError(f"shape must have every size >= 2, got {(nz, ny, nx)}")
        center = box_center_ang((nz, ny, nx), voxel_ang) if center_ang is None else center_ang
        c = torch.as_tensor(tuple(float(v) for v in center), dtype=torch.float64)
        if c.shape != (3,) or not bool(torch.isfinite(c).all()):
            raise ValueError(f"center_ang must be three finite numbers (x, y, z) [Å], got {center}")
        self.shape, self.tilts = (nz, ny, nx), int(euler_deg.shape[0])
        grid = _Grid(nz, ny, nx, voxel_ang, c)  # weights in float64, stored in dtype
        angles = torch.deg2rad(euler_deg.detach().double().cpu())
        shifts = (
            torch.zeros(self.tilts, 2, dtype=torch.float64)
            if shifts_ang is None
            else shifts_ang.detach().double().cpu()
        )
        pixels = torch.arange(ny * nx).reshape(ny, nx)
        self._turn: dict[int, torch.Tensor] = {}
        self._move: dict[int, torch.Tensor] = {}
        planes = []
        for t in range(self.tilts):
            phi, theta, psi = angles[t]
            if float(psi) != 0.0:
                ix, iy = grid.slice_source(psi)
                self._turn[t] = _bilinear_matrix(pixels, ix, iy, nx, ny, ny * nx)
            ix, iz = grid.plane_source(theta)
            columns = torch.arange(nx).expand(ix.shape) + t * nx
            planes.append(_bilinear_matrix(columns, ix, iz, nx, nz, self.tilts * nx))
            if float(phi) != 0.0 or bool(shifts[t].any()):
                ix, iy = grid.slice_source(phi, shifts[t])
                self._move[t] = _bilinear_matrix(pixels, ix, iy, nx, ny, ny * nx)
        # (tilts·nx, nz·nx): row t·nx + j sums the ray samples of column j at tilt t.
        plane = torch.sparse_coo_tensor(
            torch.cat([p.indices() for p in planes], dim=1),
            torch.cat([p.values() for p in planes]) * voxel_ang,
            (self.tilts * nx, nz * nx),
            check_invariants=False,
        ).coalesce()
        self._plane = plane.to(device=device, dtype=dtype)
        self._turn = {t: m.to(device=device, dtype=dtype) for t, m in self._turn.items()}
        self._move = {t: m.to(device=device, dtype=dtype) for t, m in self._move.items()}
        self._plane_rows = {t: self._plane_of(t) for t in self._turn}

    def _plane_of(self, tilt: int) -> torch.Tensor:
        nx = self.shape[2]
        return self._plane.index_select(
            0, torch.arange(tilt * nx, (tilt + 1) * nx, device=self._plane.device)
        )

    def __call__(self, volume: torch.Tensor) -> torch.Tensor:
        """Projections (tilts, ny, nx) of a (nz, ny, nx) volume; differentiable in it."""
        if tuple(volume.shape) != self.shape:
            raise ValueError(f"volume must have shape {self.shape}, got {tuple(volume.shape)}")
        nz, ny, nx = self.shape
        volume = volume.to(self._plane.dtype)

        def rays(plane: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            # (rows, nz·nx) @ (nz·nx, ny) → (tilts, nx, ny) → (tilts, ny, nx)
            columns = v.permute(0, 2, 1).reshape(nz * nx, ny)
            product: torch.Tensor = torch.sparse.mm(plane, columns)
            return product.reshape(-1, nx, ny).transpose(1, 2)

        images = list(rays(self._plane, volume).unbind(0))
        for t, turn in self._turn.items():  # tilts with ψ ≠ 0: turn the slices first
            turned = torch.sparse.mm(turn, volume.reshape(nz, ny * nx).T).T.reshape(nz, ny, nx)
            images[t] = rays(self._plane_rows[t], turned)[0]
        for t, move in self._move.items():
            images[t] = torch.sparse.mm(move, images[t].reshape(ny * nx, 1)).reshape(ny, nx)
        return torch.stack(images)
