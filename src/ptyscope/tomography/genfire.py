"""GENFIRE: Fourier-grid iterative reconstruction of a volume from a tilt series.

The algorithm of Pryor et al. (2017), written from its description (no GENFIRE code):

1. **Oversampling.** The volume (nz, ny, nx) is embedded in a grid ``oversampling`` times
   larger per axis, (Nz, Ny, Nx), whose extra space is known to be empty. Each projection
   is zero-padded to (Ny, Nx) and Fourier transformed, so its samples have the spacing of
   the 3D grid, Δk = 1/(N·v) per axis, and the 3D Fourier transform varies slowly enough
   between grid points for local interpolation.
2. **Gridding** (Fourier slice theorem, derived below). Each 2D Fourier sample of tilt t
   lies on the central plane k = R_tᵀ (κ_x, κ_y, 0) of the 3D transform. It is spread to
   every 3D grid point within ``interpolation_radius`` (in grid spacings) with the
   inverse-distance weight 1/d; a grid point's value is the weighted mean of the samples
   that reach it. Grid points that no sample reaches are "unmeasured".
3. **R_free.** A random ``rfree_fraction`` of the measured grid points is withheld: never
   enforced, only compared with the reconstruction (Brünger's free R factor, as GENFIRE
   uses it) to show whether the iteration fits signal or gridding error and noise.
4. **Iteration** (error reduction between two constraint sets). u = irFFT(F) (real by
   construction: the Fourier grid is stored in the Hermitian half, ``torch.fft.rfftn``);
   positivity (u ≥ 0) and support (u = 0 outside ``support`` and in the padding); F =
   rFFT(u); the measured, non-withheld grid values are replaced by the gridded data.

Relaxation schedule (resolution extension)
------------------------------------------
Hard replacement of every measured value from the first iteration pins the gridding
error of the high-frequency values, which is largest there: the central planes of
neighbouring tilts are |k|·Δθ apart, so at high |k| the grid points are furthest from any
measured sample and each is reached by few of them; the same points carry the lowest
signal-to-noise ratio. GENFIRE therefore enforces the data progressively ("resolution
extension"). Here, for the first ``resolution_extension`` fraction of the iterations, the
enforced (and allowed) resolution k_n grows linearly from 10 % to 100 % of the highest
measured frequency: measured values with |k| ≤ k_n are enforced, and every Fourier
component beyond k_n is set to zero. This is a continuation method: the low-pass problem,
whose data are the most accurate and whose missing wedge is narrowest in grid points, is
solved first and seeds the next, finer one, so positivity and support fill the missing
wedge from low to high resolution instead of freezing high-frequency gridding error into
it. The remaining iterations enforce all measured values and leave the unmeasured ones
free. On a 177-atom phantom (64³, ±70° in 5° steps, 100 iterations) this lowered the
RMS error against the truth from 0.165 (hard replacement throughout) to 0.136; a
gridding-distance weighted replacement F ← F + (1 − d/r)(G − F) instead helped a
full-range series (0.108 → 0.097) but not the limited one (0.179).

Fourier slice theorem in the ptyscope convention
------------------------------------------------
With U(u) = V(u + c) (the volume about the rotation centre c) and ρ the lateral position
about the centre, P_t(ρ) = ∫ U(R_tᵀ (ρ, z)) dz (:mod:`ptyscope.tomography.projector`).
Then P̂_t(κ) = ∫ U(R_tᵀ r) e^{−2πi (κ, 0)·r} d³r = ∫ U(u) e^{−2πi (κ, 0)·R_t u} d³u
= Û(R_tᵀ (κ_x, κ_y, 0)): the slice is spanned by the first two rows of R_t, k = κ_x R_t[0]
+ κ_y R_t[1] in (k_x, k_y, k_z). Discretely, with centred transforms (index N/2, the box
centre n·v/2 of an even size, is the origin: ``ifftshift`` before the FFT), the 3D DFT of
the padded volume equals the 2D DFT of the padded projection divided by v (P = v Σ_z V),
exactly at tilt 0 and to within the projector's trilinear sampling otherwise. GENFIRE's
own angles (φ, θ, ψ) are ptyscope's (−ψ, −θ, −φ)
(:func:`ptyscope.simulation.specimens.rotation_matrix`).

Sizes must be even (volume, projections) so that the centre is a grid point.

References
----------
A. Pryor Jr. et al., "GENFIRE: a generalized Fourier iterative reconstruction algorithm
for high-resolution 3D imaging", Sci. Rep. 7, 10409 (2017).
J. Zhou, Y. Yang, P. Ercius and J. Miao, "Atomic electron tomography in three and four
dimensions", MRS Bull. 45, 290 (2020).
A. T. Brünger, "Free R value: a novel statistical quantity for assessing the accuracy of
crystal structures", Nature 355, 472 (1992).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ptyscope._validation import require_finite, require_in_range, require_positive
from ptyscope.tomography.projector import rotation_matrices

__all__ = ["GenfireResult", "GriddedData", "genfire_reconstruct", "grid_projections"]

#: Neighbour entries (sample × grid point) handled per gridding chunk; bounds memory.
_ENTRIES_PER_CHUNK = 2**21
#: Distances below this [grid spacings] count as exact hits (caps the 1/d weight).
_EXACT_DISTANCE = 1e-3
#: Enforced grid points on which R_data is tracked each iteration (a fixed random subset).
_R_DATA_SAMPLE = 2**16
#: Resolution at which the extension schedule starts, as a fraction of the highest one.
_EXTENSION_START = 0.1


@dataclass(frozen=True)
class GriddedData:
    """Measured values on the 3D Fourier grid (the Hermitian half of ``rfftn``).

    Attributes
    ----------
    values:
        complex64 tensor (Nz, Ny, Nx//2 + 1): gridded DFT of the padded volume
        [volume units] (``rfftn`` of the ``ifftshift``-ed padded volume), zero where
        unmeasured. Index (i, j, l) holds frequency (fftfreq(Nz)[i], fftfreq(Ny)[j],
        rfftfreq(Nx)[l]) / v.
    measured:
        bool tensor, same shape: grid points reached by at least one sample.
    distance:
        float32 tensor, same shape: distance [grid spacings] from each point to its
        nearest sample (``inf`` where unmeasured).
    frequency_inv_ang:
        float32 tensor, same shape: |k| [Å⁻¹] of each grid point.
    grid_shape:
        Real-space shape (Nz, Ny, Nx) of the padded grid.
    voxel_ang:
        Voxel size v [Å].
    """

    values: torch.Tensor
    measured: torch.Tensor
    distance: torch.Tensor
    frequency_inv_ang: torch.Tensor
    grid_shape: tuple[int, int, int]
    voxel_ang: float

    @property
    def count(self) -> int:
        """Number of measured grid points (Hermitian half)."""
        return int(self.measured.sum())


@dataclass(frozen=True)
class GenfireResult:
    """Output of :func:`genfire_reconstruct`.

    Attributes
    ----------
    volume:
        float32 tensor (nz, ny, nx) on the projections' device, axes (z, y, x), in the
        units of the projections divided by Å (e.g. V for projected potentials in V·Å).
    rfree:
        float64 array (iterations,): Σ|G − F| / Σ|G| over the withheld grid points, G
        the gridded data and F the transform of the constrained volume at each
        iteration (complex difference, so phase errors count); empty without withheld
        points. Its first value is that of the direct Fourier inversion; while the
        resolution extension suppresses the frequencies beyond k_n, the withheld points
        there count with F = 0, so R_free first rises, then falls as k_n grows and
        flattens at the level set by the gridding error and the noise.
    rfree_shell_inv_ang:
        float64 array (shells,): centre |k| [Å⁻¹] of each resolution shell.
    rfree_shells:
        float64 array (shells,): R_free of the final volume per shell (NaN where a shell
        holds no withheld point).
    r_data:
        float64 array (iterations,): the same R factor over the grid points enforced in
        that iteration, before they are replaced (how far the real-space constraints pull
        away from the data); tracked on a fixed random subset of at most 65 536 of them
        (a relative sampling error below 1 %).
    gridded_points:
        Number of measured grid points in the Hermitian half (withheld ones included).
    withheld_points:
        Number of them withheld for R_free.
    """

    volume: torch.Tensor
    rfree: np.ndarray
    rfree_shell_inv_ang: np.ndarray
    rfree_shells: np.ndarray
    r_data: np.ndarray
    gridded_points: int
    withheld_points: int


# --- input checks -----------------------------------------------------------------------


def _real_tensor(name: str, value: torch.Tensor | np.ndarray, pattern: str) -> torch.Tensor:
    """``value`` as a real floating tensor (its device kept); complex or bool is refused."""
    try:
        tensor = value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name} must be a real array {pattern}, got {value!r}") from None
    if tensor.is_complex() or tensor.dtype == torch.bool:
        raise ValueError(f"{name} must be a real array {pattern}, got dtype {tensor.dtype}")
    return tensor if tensor.is_floating_point() else tensor.double()


def _check_shape(name: str, shape: Sequence[int]) -> tuple[int, int, int]:
    try:
        sizes = tuple(shape)
    except TypeError:
        raise ValueError(
            f"{name} must be three even integers (nz, ny, nx), got {shape!r}"
        ) from None
    if len(sizes) != 3 or not all(
        isinstance(n, int | np.integer) and not isinstance(n, bool) and n >= 4 and n % 2 == 0
        for n in sizes
    ):
        raise ValueError(f"{name} must be three even integers >= 4 (nz, ny, nx), got {shape!r}")
    return int(sizes[0]), int(sizes[1]), int(sizes[2])


def _check_series(
    projections: torch.Tensor | np.ndarray, euler_deg: torch.Tensor | np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    images = _real_tensor("projections", projections, "(tilts, ny, nx)")
    if images.ndim != 3 or images.shape[0] < 1:
        raise ValueError(f"projections must have shape (tilts, ny, nx), got {tuple(images.shape)}")
    ny, nx = images.shape[1:]
    if ny < 4 or nx < 4 or ny % 2 or nx % 2:
        raise ValueError(
            f"projections must have even sizes ny, nx >= 4 (the centre n/2 is the Fourier "
            f"origin), got (ny, nx) = ({ny}, {nx})"
        )
    if not bool(torch.isfinite(images).all()):
        raise ValueError("projections must be finite, got NaN or Inf entries")
    angles = _real_tensor("euler_deg", euler_deg, "(tilts, 3)")
    if angles.ndim != 2 or tuple(angles.shape) != (images.shape[0], 3):
        raise ValueError(
            f"euler_deg must have shape (tilts, 3) = ({images.shape[0]}, 3) with rows "
            f"(φ, θ, ψ) [deg], got {tuple(angles.shape)}"
        )
    if not bool(torch.isfinite(angles).all()):
        raise ValueError("euler_deg must be finite, got NaN or Inf entries")
    return images, angles


# --- gridding -----------------------------------------------------------------------------


def _frequency_radius(
    grid_shape: tuple[int, int, int], voxel_ang: float, device: torch.device
) -> torch.Tensor:
    nz, ny, nx = grid_shape
    kz = torch.fft.fftfreq(nz, voxel_ang, device=device, dtype=torch.float64)
    ky = torch.fft.fftfreq(ny, voxel_ang, device=device, dtype=torch.float64)
    kx = torch.fft.rfftfreq(nx, voxel_ang, device=device, dtype=torch.float64)
    radius = torch.sqrt(kz[:, None, None] ** 2 + ky[None, :, None] ** 2 + kx[None, None, :] ** 2)
    return radius.float()


def grid_projections(
    projections: torch.Tensor | np.ndarray,
    euler_deg: torch.Tensor | np.ndarray,
    voxel_ang: float,
    grid_shape: Sequence[int],
    *,
    interpolation_radius: float = 0.8,
) -> GriddedData:
    """Place the Fourier transforms of a tilt series on a 3D Fourier grid (step 2 above).

    Parameters
    ----------
    projections:
        Real tensor or array (tilts, ny, nx), even sizes, on the volume's lateral pixels
        (the convention of :func:`ptyscope.tomography.projector.project`) [volume × Å].
    euler_deg:
        (tilts, 3): (φ, θ, ψ) [deg] of each tilt, ptyscope convention.
    voxel_ang:
        Voxel size v [Å] (> 0).
    grid_shape:
        Padded real-space grid (Nz, Ny, Nx), even, with Ny ≥ ny and Nx ≥ nx; each
        projection is zero-padded to (Ny, Nx) about its centre.
    interpolation_radius:
        Gridding cutoff r [grid spacings], in (0, 2]: a sample reaches every grid point
        within r, with weight 1/d.

    Returns
    -------
    GriddedData
        On the projections' device; gridding itself runs in float64.

    Examples
    --------
    One voxel of value 1 at the centre of an 8³ box (v = 0.5 Å) projects to 0.5 V·Å at
    tilt 0; its 3D DFT is 1 everywhere on the k_z = 0 plane, 8 × 15 grid points of the
    Hermitian half of a 16³ grid:

    >>> images = torch.zeros(1, 8, 8); images[0, 4, 4] = 0.5
    >>> data = grid_projections(images, torch.zeros(1, 3), 0.5, (16, 16, 16))
    >>> round(float(data.values[0, 3, 5].real), 6), data.count
    (1.0, 120)
    """
    images, angles = _check_series(projections, euler_deg)
    require_positive("voxel_ang", voxel_ang, "Å")
    big_z, big_y, big_x = _check_shape("grid_shape", grid_shape)
    require_in_range("interpolation_radius", interpolation_radius, 0.0, 2.0, "grid spacings")
    if interpolation_radius <= 0:
        raise ValueError(
            f"interpolation_radius must be > 0 grid spacings, got {interpolation_radius!r}"
        )
    tilts, ny, nx = images.shape
    if big_y < ny or big_x < nx:
        raise ValueError(
            f"grid_shape (Nz, Ny, Nx) must hold the projections: Ny >= {ny}, Nx >= {nx}, "
            f"got {tuple(grid_shape)}"
        )
    device = images.device
    f64 = torch.float64

    padded = images.new_zeros((tilts, big_y, big_x), dtype=f64)
    oy, ox = (big_y - ny) // 2, (big_x - nx) // 2
    padded[:, oy : oy + ny, ox : ox + nx] = images.to(f64)
    spectra = torch.fft.fft2(torch.fft.ifftshift(padded, dim=(-2, -1))) / voxel_ang

    # Sample (p, q) of each 2D spectrum; the unpaired Nyquist row and column are dropped
    # so that the sample set is Hermitian-symmetric.
    p = torch.fft.fftfreq(big_y, 1.0 / big_y, device=device, dtype=f64)
    q = torch.fft.fftfreq(big_x, 1.0 / big_x, device=device, dtype=f64)
    keep = (p.abs() < big_y / 2)[:, None] & (q.abs() < big_x / 2)[None, :]
    rows, cols = torch.meshgrid(p, q, indexing="ij")
    kappa_y, kappa_x = rows[keep] / (big_y * voxel_ang), cols[keep] / (big_x * voxel_ang)
    samples_per_tilt = kappa_x.numel()
    rotations = rotation_matrices(angles.to(device=device, dtype=f64))
    to_grid = torch.tensor([big_x, big_y, big_z], device=device, dtype=f64) * voxel_ang

    reach = math.ceil(interpolation_radius)
    offsets_1d = torch.arange(1 - reach, reach + 1, device=device, dtype=f64)
    offsets = torch.stack(
        torch.meshgrid(offsets_1d, offsets_1d, offsets_1d, indexing="ij"), dim=-1
    ).reshape(-1, 3)
    half_x = big_x // 2 + 1
    size = big_z * big_y * half_x
    sum_re = torch.zeros(size, device=device, dtype=f64)
    sum_im = torch.zeros(size, device=device, dtype=f64)
    sum_w = torch.zeros(size, device=device, dtype=f64)
    nearest = torch.full((size,), math.inf, device=device, dtype=f64)

    chunk = max(1, _ENTRIES_PER_CHUNK // (samples_per_tilt * offsets.shape[0]))
    for start in range(0, tilts, chunk):
        rot = rotations[start : start + chunk]  # (c, 3, 3)
        # k = κ_x R[0] + κ_y R[1] (x, y, z) [Å⁻¹] → grid coordinates (x, y, z).
        k = (
            kappa_x[None, :, None] * rot[:, None, 0, :]
            + kappa_y[None, :, None] * rot[:, None, 1, :]
        )
        coords = (k * to_grid).reshape(-1, 3)
        values = spectra[start : start + chunk][:, keep].reshape(-1)
        neighbours = torch.floor(coords)[:, None, :] + offsets[None]  # (S, K, 3)
        distance = torch.linalg.vector_norm(neighbours - coords[:, None, :], dim=-1)
        index = neighbours.long()
        ix, iy, iz = index[..., 0], index[..., 1], index[..., 2]
        inside = (
            (distance <= interpolation_radius)
            & (ix >= 0)
            & (ix <= big_x // 2 - 1)
            & (iy.abs() <= big_y // 2 - 1)
            & (iz.abs() <= big_z // 2 - 1)
        )
        flat = ((iz % big_z) * big_y + (iy % big_y)) * half_x + ix
        flat, distance = flat[inside], distance[inside]
        weight = 1.0 / distance.clamp_min(_EXACT_DISTANCE)
        value = values[:, None].expand(inside.shape)[inside]
        sum_re.index_add_(0, flat, weight * value.real)
        sum_im.index_add_(0, flat, weight * value.imag)
        sum_w.index_add_(0, flat, weight)
        nearest.scatter_reduce_(0, flat, distance, reduce="amin")

    measured = sum_w > 0
    gridded = torch.zeros(size, device=device, dtype=torch.complex128)
    gridded[measured] = torch.complex(sum_re[measured], sum_im[measured]) / sum_w[measured]
    shape = (big_z, big_y, half_x)
    return GriddedData(
        values=gridded.reshape(shape).to(torch.complex64),
        measured=measured.reshape(shape),
        distance=nearest.reshape(shape).float(),
        frequency_inv_ang=_frequency_radius((big_z, big_y, big_x), voxel_ang, device),
        grid_shape=(big_z, big_y, big_x),
        voxel_ang=float(voxel_ang),
    )


# --- iteration ----------------------------------------------------------------------------


def _modulus(values: torch.Tensor) -> torch.Tensor:
    """|z| of a complex tensor (faster than ``abs`` on CPU)."""
    return torch.view_as_real(values).square().sum(-1).sqrt()


def _history(values: list[torch.Tensor]) -> np.ndarray:
    """Per-iteration scalars, gathered once at the end (no device sync per iteration)."""
    if not values:
        return np.zeros(0)
    return torch.stack(values).double().cpu().numpy()


def _shell_r_factors(
    model: torch.Tensor, data: torch.Tensor, radius: torch.Tensor, edges: torch.Tensor
) -> np.ndarray:
    shell = torch.bucketize(radius.double(), edges[1:-1])
    count = len(edges) - 1
    diff = torch.zeros(count, dtype=torch.float64, device=model.device)
    norm = torch.zeros(count, dtype=torch.float64, device=model.device)
    diff.index_add_(0, shell, _modulus(model - data).double())
    norm.index_add_(0, shell, _modulus(data).double())
    out = (diff / norm).cpu().numpy()
    out[norm.cpu().numpy() <= 0] = np.nan
    return out


def _require_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def _require_fraction(name: str, value: float, high: float) -> None:
    require_finite(name, value)
    if not 0.0 <= float(value) < high:
        raise ValueError(f"{name} must lie in [0, {high}), got {value!r}")


def _padded_support(
    support: torch.Tensor | np.ndarray | None,
    volume_shape: tuple[int, int, int],
    grid_shape: tuple[int, int, int],
    box: tuple[slice, ...],
    device: torch.device,
) -> torch.Tensor:
    """float32 (Nz, Ny, Nx) in FFT layout: 1 where the specimen may be, 0 elsewhere."""
    inside = torch.zeros(grid_shape, dtype=torch.float32, device=device)
    if support is None:
        inside[box] = 1.0
    else:
        mask = (
            support if isinstance(support, torch.Tensor) else torch.as_tensor(np.asarray(support))
        )
        if mask.dtype != torch.bool or tuple(mask.shape) != volume_shape:
            raise ValueError(
                f"support must be a bool array of shape (nz, ny, nx) = {volume_shape}, got "
                f"dtype {mask.dtype} and shape {tuple(mask.shape)}"
            )
        inside[box] = mask.to(device=device, dtype=torch.float32)
    shifted: torch.Tensor = torch.fft.ifftshift(inside)
    return shifted


def _split_withheld(
    data: GriddedData, fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat indices of the enforced points (sorted by |k|) and of the withheld ones.

    Points of the k_x = 0 plane are stored together with their Hermitian mirrors
    (−k_z, −k_y, 0); a pair is withheld or enforced together, so that an enforced mirror
    cannot pin a withheld value.
    """
    generator = torch.Generator().manual_seed(int(seed))
    draw = torch.rand(data.measured.shape, generator=generator)
    plane = draw[:, :, 0]
    mirror = torch.roll(torch.flip(plane, dims=(0, 1)), shifts=(1, 1), dims=(0, 1))
    draw[:, :, 0] = torch.minimum(plane, mirror)
    measured = torch.nonzero(data.measured.reshape(-1)).squeeze(1)
    chosen = draw.reshape(-1).to(measured.device)[measured]
    withheld, enforced = measured[chosen < fraction], measured[chosen >= fraction]
    radius = data.frequency_inv_ang.reshape(-1)
    return enforced[torch.argsort(radius[enforced])], withheld


def genfire_reconstruct(
    projections: torch.Tensor | np.ndarray,
    euler_deg: torch.Tensor | np.ndarray,
    voxel_ang: float,
    *,
    shape: Sequence[int] | None = None,
    oversampling: int = 2,
    interpolation_radius: float = 0.8,
    iterations: int = 100,
    positivity: bool = True,
    support: torch.Tensor | np.ndarray | None = None,
    rfree_fraction: float = 0.05,
    rfree_shells: int = 10,
    resolution_extension: float = 0.8,
    seed: int = 0,
) -> GenfireResult:
    """Reconstruct a volume from a tilt series with GENFIRE (module docstring).

    Parameters
    ----------
    projections:
        Real tensor or array (tilts, ny, nx), even sizes, aligned to the rotation centre
        (the box centre n·v/2), as :func:`ptyscope.tomography.projector.project` makes
        them [volume units × Å]. The reconstruction runs on its device.
    euler_deg:
        (tilts, 3): (φ, θ, ψ) [deg] of each tilt; a single-axis series about y is
        (0, θ, 0).
    voxel_ang:
        Voxel size v [Å] (> 0), also the projections' pixel size.
    shape:
        Volume (nz, ny, nx), even sizes, (ny, nx) those of the projections; default
        (nx, ny, nx), the thickness equal to the width across the tilt axis.
    oversampling:
        Integer factor (≥ 1) by which the grid is padded per axis; ≥ 2 makes the padding a
        support constraint and the gridding accurate. Memory and time grow as its cube.
    interpolation_radius:
        Gridding cutoff r [grid spacings] in (0, 2] (:func:`grid_projections`).
    iterations:
        Number of iterations (≥ 1).
    positivity:
        Clip the volume at 0 every iteration (potentials, ADF signals).
    support:
        Optional bool tensor or array (nz, ny, nx): where the specimen may be non-zero.
    rfree_fraction:
        Fraction of measured grid points withheld for R_free, in [0, 0.5). The volume is
        reconstructed without them; use 0 for a final reconstruction from all data.
    rfree_shells:
        Number of equal-width |k| shells, from 0 to the Nyquist frequency 1/(2v), of the
        final R_free (≥ 1).
    resolution_extension:
        Fraction of the iterations, in [0, 1), over which the enforced resolution grows
        from 10 % to 100 % of the highest measured frequency (0: enforce everything from
        the start, plain error reduction).
    seed:
        Seed of the local generator that picks the withheld points.

    Returns
    -------
    GenfireResult
        The volume (float32, (nz, ny, nx)), R_free and R_data per iteration, R_free per
        shell at the end, and the grid-point counts.

    References
    ----------
    Pryor et al., Sci. Rep. 7, 10409 (2017) (module docstring).

    Examples
    --------
    >>> volume = torch.zeros(16, 16, 16); volume[8, 8, 8] = 1.0
    >>> from ptyscope.tomography.projector import project
    >>> angles = torch.tensor([[0.0, t, 0.0] for t in range(-90, 90, 10)])
    >>> result = genfire_reconstruct(project(volume, angles, 0.5), angles, 0.5, iterations=20)
    >>> tuple(result.volume.shape), int(result.volume.argmax()) == 8 * 256 + 8 * 16 + 8
    ((16, 16, 16), True)
    """
    images, angles = _check_series(projections, euler_deg)
    _, ny, nx = images.shape
    volume_shape = _check_shape("shape", (nx, ny, nx) if shape is None else shape)
    if volume_shape[1:] != (ny, nx):
        raise ValueError(
            f"shape (nz, ny, nx) must match the projections' (ny, nx) = ({ny}, {nx}), "
            f"got {tuple(volume_shape)}"
        )
    _require_count("oversampling", oversampling)
    _require_count("iterations", iterations)
    _require_count("rfree_shells", rfree_shells)
    _require_fraction("rfree_fraction", rfree_fraction, 0.5)
    _require_fraction("resolution_extension", resolution_extension, 1.0)
    device = images.device
    grid_shape = (oversampling * volume_shape[0], oversampling * ny, oversampling * nx)
    box = tuple(
        slice((big - n) // 2, (big - n) // 2 + n)
        for big, n in zip(grid_shape, volume_shape, strict=True)
    )
    inside = _padded_support(support, volume_shape, grid_shape, box, device)

    data = grid_projections(
        images, angles, voxel_ang, grid_shape, interpolation_radius=interpolation_radius
    )
    values = data.values.reshape(-1)
    radius = data.frequency_inv_ang.reshape(-1)
    enforced, withheld = _split_withheld(data, rfree_fraction, seed)
    enforced_k = radius[enforced].cpu().numpy()  # ascending
    k_top = float(enforced_k[-1]) if len(enforced_k) else 0.0

    def constrain(transform: torch.Tensor) -> torch.Tensor:
        """Real space: u = irFFT(F), then positivity and support."""
        real: torch.Tensor = torch.fft.irfftn(transform.reshape(data.values.shape), s=grid_shape)
        if positivity:
            real = real.clamp_min_(0.0)
        return real.mul_(inside)

    data_enforced, data_withheld = values[enforced], values[withheld]
    withheld_norm = _modulus(data_withheld).double().sum()
    # R_data is tracked on a fixed random subset of the enforced points (positions in the
    # |k|-sorted order, ascending, so a prefix of the subset is the enforced prefix).
    generator = torch.Generator().manual_seed(int(seed) + 1)
    sample = enforced.numel()
    if sample > _R_DATA_SAMPLE:
        picked = torch.randperm(sample, generator=generator)[:_R_DATA_SAMPLE]
        sample_pos = torch.sort(picked).values.to(device)
    else:
        sample_pos = torch.arange(sample, device=device)
    sample_index, sample_data = enforced[sample_pos], data_enforced[sample_pos]
    sample_norm = torch.cumsum(_modulus(sample_data).double(), 0)
    sample_pos_cpu = sample_pos.cpu().numpy()
    # After the ramp every enforced point is replaced: memory order scatters faster.
    all_enforced, all_data = (
        enforced[torch.argsort(enforced)],
        data_enforced[torch.argsort(enforced)],
    )
    ramp = round(resolution_extension * iterations)

    spectrum = torch.zeros_like(values)
    spectrum[enforced] = data_enforced
    rfree: list[torch.Tensor] = []
    r_data: list[torch.Tensor] = []
    for n in range(iterations):
        spectrum = torch.fft.rfftn(constrain(spectrum)).reshape(-1)
        if withheld.numel():
            rfree.append(_modulus(spectrum[withheld] - data_withheld).sum() / withheld_norm)
        if n < ramp:
            # Resolution extension: enforce |k| <= k_n, suppress everything beyond.
            fraction = _EXTENSION_START + (1.0 - _EXTENSION_START) * (n + 1) / ramp
            k_n = k_top * fraction * (1.0 + 1e-6)  # the last step includes k_top
            count = int(np.searchsorted(enforced_k, k_n, side="right"))
            spectrum.masked_fill_(radius > k_n, 0)
            index, target = enforced[:count], data_enforced[:count]
        else:
            count = enforced.numel()
            index, target = all_enforced, all_data
        tracked = int(np.searchsorted(sample_pos_cpu, count))
        if tracked:
            misfit = _modulus(spectrum[sample_index[:tracked]] - sample_data[:tracked]).sum()
            r_data.append(misfit / sample_norm[tracked - 1])
        else:
            r_data.append(torch.tensor(math.nan, device=device))
        spectrum[index] = target

    real = constrain(spectrum)
    final = torch.fft.rfftn(real).reshape(-1)
    nyquist = 0.5 / voxel_ang
    edges = torch.linspace(0.0, nyquist, rfree_shells + 1, device=device, dtype=torch.float64)
    within = radius[withheld] < nyquist
    shells = _shell_r_factors(
        final[withheld][within], data_withheld[within], radius[withheld][within], edges
    )
    centres = 0.5 * (edges[1:] + edges[:-1])
    volume = torch.fft.fftshift(real)[box].float().contiguous()
    return GenfireResult(
        volume=volume,
        rfree=_history(rfree),
        rfree_shell_inv_ang=centres.double().cpu().numpy(),
        rfree_shells=shells,
        r_data=_history(r_data),
        gridded_points=data.count,
        withheld_points=int(withheld.numel()),
    )
