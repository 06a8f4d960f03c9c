"""Refinement of an atomic model against the measured projections.

The last step of atomic electron tomography (Zhou et al. 2020; Yang et al. 2017): the
traced and classified atoms are moved, and each species' amplitude and width fitted, so
that the projections of the model match the measured tilt series,

    min  Σ_t Σ_yx w_t (P_t(ρ) − D_t)²,    ρ(r) = Σ_a A_s(a) G(r − r_a; σ_s(a)),

with G the normalised isotropic 3D Gaussian (∫ G d³r = 1), so that A_s is the integral
of one atom of species s [volume units · Å³] and σ_s its width, a B-factor-like blur
that absorbs the reconstruction's resolution, the thermal smearing and the voxel
(B = 8π²σ²). P_t is :func:`~ptyscope.tomography.projector.project`, applied as its
:class:`~ptyscope.tomography.projector.ProjectionOperator` (the same bilinear weights as
sparse matrices: angles and shifts are not refined here, and a projection with its
back-projection costs ~20 times less), D_t the projections, w_t per-pixel weights.

Why against the projections: an atom fitted alone in the reconstructed volume
(:func:`~ptyscope.tomography.atoms.trace_atoms`) is pulled towards its neighbours by their
tails inside its window, and the reconstruction itself carries missing-wedge and
regularisation artefacts. Here every atom is modelled together with its neighbours and
compared with the data directly, so the tails are part of the model and no voxel grid
limits the positions.

The model volume is rendered by :func:`render_gaussians`: each atom's Gaussian averaged
over the voxels (a product of three erf differences, the box of
:func:`~ptyscope.simulation.tilt_series.potential_volume`), evaluated on a cube of
±``cutoff_sigmas`` σ around it and scatter-added. It is differentiable in positions,
amplitudes and widths; the optimiser is L-BFGS with a strong-Wolfe line search
(:class:`torch.optim.LBFGS`) on positions [Å] and the logarithms of amplitudes and widths.

With ``profiles`` (an element symbol or ``"gaussian"`` per species) the model is
projected analytically instead (:mod:`ptyscope.tomography.atom_projection`): no voxel
grid, no tilt-dependent interpolation blur, and with element profiles the atom's own
potential shape, σ_s being a blur on top of it. That is what the tomography pipeline
uses; the voxel path stays for volumes rendered on purpose.

Amplitudes are per species by default (2 S parameters for N atoms): hundreds of atoms
determine them, and they cannot absorb position errors. Per-atom amplitudes
(``per_atom_amplitudes=True``) add N parameters, each fitted from one atom's signal:
useful to flag misclassified atoms or partial occupancy (a mislabelled atom otherwise
drags its neighbours), at the price of noisier positions when the data are noisy.

On a simulated FePt L1_0 particle (87 atoms, potential blurred by σ = 0.7 Å, 15 tilts
over ±70°; ``tests/tomography/test_refine.py``) the positions go from 0.25 Å (perturbed)
or 0.090 Å (:func:`~ptyscope.tomography.atoms.trace_atoms`) to 0.018 Å RMSD noise-free
and 0.036-0.039 Å with 2 % noise. The Gaussian is not the potential of a real atom: 0.9 % of
the signal stays unexplained, which limits the positions to ~0.02 Å; the amplitudes
come out within 1.2 % of the atoms' integrated potential 47.878 V·Å² · f_e(0).

Conventions are those of :mod:`ptyscope.tomography.projector` (volume (nz, ny, nx),
voxel (k, i, j) at (k·v, i·v, j·v) Å, tilt about the box centre) and
:mod:`ptyscope.tomography.atoms` (positions (x, y, z) [Å], labels 0 … S − 1).

References
----------
J. Zhou, Y. Yang, P. Ercius and J. Miao, "Atomic electron tomography in three and four
dimensions", MRS Bulletin 45, 290-297 (2020).
Y. Yang et al., "Deciphering chemical order/disorder and material properties at the
single-atom level", Nature 542, 75-79 (2017).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
from scipy import optimize

from ptyscope._validation import require_finite, require_positive
from ptyscope.tomography.atom_projection import GAUSSIAN, check_profiles, project_atoms
from ptyscope.tomography.atoms import (
    _require_inside_volume,
    _require_int,
    _require_labels,
    _require_positions,
)
from ptyscope.tomography.projector import ProjectionOperator, box_center_ang

__all__ = ["RefinedAtoms", "refine_atoms_against_projections", "render_gaussians"]

#: Widths [Å] tried for the starting model when no ``initial_widths_ang`` are given.
_WIDTH_SCAN_ANG = (0.3, 0.42, 0.6, 0.85, 1.2, 1.7)
#: The same for element profiles, where σ is a blur on top of the atom's own potential.
_BLUR_SCAN_ANG = (0.1, 0.2, 0.3, 0.42, 0.6, 0.85, 1.2)
#: Most misfit evaluations of one line search.
_MAX_LINE_SEARCH = 20
#: Voxel values rendered at once: bounds the (atoms, K, K, K) temporaries (32 MiB in float64).
_RENDER_CHUNK = 2**22
#: Smallest width [Å] in voxels: narrower Gaussians are not resolved by the grid.
_MIN_WIDTH_VOXELS = 0.25


def render_gaussians(
    positions_ang: torch.Tensor,
    amplitudes: torch.Tensor,
    widths_ang: torch.Tensor,
    shape: Sequence[int],
    voxel_ang: float,
    *,
    cutoff_sigmas: float = 4.0,
) -> torch.Tensor:
    """Voxel-averaged sum of isotropic 3D Gaussians, differentiable in every input.

    Voxel (k, i, j), the box of side v centred at (z, y, x) = (k, i, j)·v, receives

        ρ_kij = Σ_a A_a Π_{axis} [Φ((c + v/2 − r_a)/σ_a) − Φ((c − v/2 − r_a)/σ_a)] / v,

    with Φ the standard normal CDF: the mean of A_a G(r − r_a; σ_a) over the voxel, so
    that Σ ρ v³ = Σ A_a for atoms away from the faces. Each atom touches only the cube of
    ±⌈``cutoff_sigmas`` · max σ / v⌉ voxels around its nearest voxel (scatter-add), so the
    cost is N (2m + 1)³ whatever the volume; voxels outside the volume are dropped.

    Parameters
    ----------
    positions_ang:
        Real tensor (N, 3): (x, y, z) [Å].
    amplitudes:
        Real tensor (N,): integral A_a of each Gaussian [volume units · Å³].
    widths_ang:
        Real tensor (N,) > 0: standard deviation σ_a [Å].
    shape:
        (nz, ny, nx) of the volume.
    voxel_ang:
        Voxel size v [Å].
    cutoff_sigmas:
        Half-width of each atom's cube in σ; 4 leaves ~10⁻⁴ of the integral outside.

    Returns
    -------
    torch.Tensor
        (nz, ny, nx), axes (z, y, x), on the positions' device and dtype [volume units].

    Examples
    --------
    >>> rho = render_gaussians(torch.tensor([[2.5, 2.3, 2.1]]), torch.tensor([1.0]),
    ...                        torch.tensor([0.5]), (12, 12, 12), 0.4)
    >>> round(float(rho.sum()) * 0.4**3, 4)  # the integral, A
    1.0
    """
    if not all(isinstance(t, torch.Tensor) for t in (positions_ang, amplitudes, widths_ang)):
        raise ValueError("positions_ang, amplitudes and widths_ang must be torch tensors")
    count = positions_ang.shape[0] if positions_ang.ndim == 2 else -1
    if positions_ang.ndim != 2 or positions_ang.shape[1] != 3:
        raise ValueError(
            f"positions_ang must have shape (N, 3) with rows (x, y, z) [Å], got shape "
            f"{tuple(positions_ang.shape)}"
        )
    for name, tensor in (("amplitudes", amplitudes), ("widths_ang", widths_ang)):
        if tuple(tensor.shape) != (count,):
            raise ValueError(f"{name} must have shape ({count},), got {tuple(tensor.shape)}")
    if count and not bool((widths_ang > 0).all()):
        raise ValueError(f"widths_ang must be > 0 Å, got minimum {float(widths_ang.min()):g}")
    if len(shape) != 3 or min(int(n) for n in shape) < 1:
        raise ValueError(f"shape must be (nz, ny, nx) of positive sizes, got {tuple(shape)}")
    require_positive("voxel_ang", voxel_ang, "Å")
    require_positive("cutoff_sigmas", cutoff_sigmas)
    return _render(positions_ang, amplitudes, widths_ang, shape, float(voxel_ang), cutoff_sigmas)


def _render(
    positions_ang: torch.Tensor,
    amplitudes: torch.Tensor,
    widths_ang: torch.Tensor,
    shape: Sequence[int],
    v: float,
    cutoff_sigmas: float,
) -> torch.Tensor:
    """:func:`render_gaussians` without the argument checks (the optimiser's inner loop)."""
    nz, ny, nx = (int(n) for n in shape)
    dtype, device = positions_ang.dtype, positions_ang.device
    n_atoms = positions_ang.shape[0]
    if n_atoms == 0:
        return torch.zeros((nz, ny, nx), dtype=dtype, device=device)
    reach = math.ceil(float(cutoff_sigmas) * float(widths_ang.detach().max()) / v)
    steps = torch.arange(-reach, reach + 1, device=device)
    k = steps.numel()
    size = torch.tensor((nz, ny, nx), device=device)[None, :, None]
    strides = torch.tensor((ny * nx, nx, 1), device=device)
    # Flat offsets of the (K, K, K) cube from its centre voxel. Where an axis leaves the
    # volume the profile is zero, so the (clamped) flat index there only adds zeros.
    cube = (steps[:, None, None] * (ny * nx) + steps[None, :, None] * nx + steps).reshape(-1)
    volume = torch.zeros(nz * ny * nx, dtype=dtype, device=device)
    chunk = max(1, _RENDER_CHUNK // k**3)  # bounds the (atoms, K³) blocks
    for start in range(0, n_atoms, chunk):
        zyx = positions_ang[start : start + chunk].flip(-1)  # (n, 3) as (z, y, x)
        centre = torch.round(zyx.detach() / v).long()
        index = centre[:, :, None] + steps  # (n, 3, K)
        scale = (widths_ang[start : start + chunk] * math.sqrt(2.0))[:, None, None]
        offset = index.to(dtype) * v - zyx[:, :, None]
        profile = torch.erf((offset + 0.5 * v) / scale) - torch.erf((offset - 0.5 * v) / scale)
        profile = profile * ((index >= 0) & (index < size)) * (0.5 / v)
        fz = profile[:, 0] * amplitudes[start : start + chunk, None]
        plane = (fz[:, :, None] * profile[:, 1, None, :]).reshape(-1, k * k, 1)
        values = plane * profile[:, 2, None, :]  # (n, K², K)
        flat = ((centre * strides).sum(dim=1)[:, None] + cube).clamp_(0, volume.numel() - 1)
        volume = volume.index_add(0, flat.reshape(-1), values.reshape(-1))
    return volume.reshape(nz, ny, nx)


class RefinedAtoms(NamedTuple):
    """Result of :func:`refine_atoms_against_projections`."""

    positions_ang: np.ndarray
    """float64 (N, 3): refined (x, y, z) [Å], in the input order."""
    atom_shifts_ang: np.ndarray
    """float64 (N, 3): refined − initial positions (x, y, z) [Å]; a large one flags an atom
    the data do not support (spurious, or missing a neighbour)."""
    amplitudes: np.ndarray
    """float64 (S,): integral A_s of one atom of species s [volume units · Å³]; its peak
    value is A_s / (2π σ_s²)^{3/2}. With per-atom amplitudes, the median over the
    species' atoms. NaN for a label without atoms."""
    widths_ang: np.ndarray
    """float64 (S,): Gaussian standard deviation σ_s [Å]; NaN for a label without atoms."""
    atom_amplitudes: np.ndarray
    """float64 (N,): amplitude of each atom (its species' unless per-atom amplitudes)."""
    relative_residuals: tuple[float, ...]
    """‖√w (P(ρ) − D)‖ / ‖√w D‖ of the starting model, then after each iteration."""
    converged: bool
    """True when an iteration lowered the misfit by less than ``tolerance`` (relative)."""


class _AtomModel(torch.nn.Module):
    """Parameters of the atomic model, as preconditioned offsets from the start.

    Position r_a = r_a⁰ + p_a / h_a, log amplitude = log A⁰ + q / h_A and log(σ − σ_min)
    = log(σ⁰ − σ_min) + u / h_σ, with h² the Gauss-Newton curvatures of the normalised
    misfit for an isolated atom (a 2D Gaussian of integral A and width σ in each of T
    projections, Σ_pixels = ∫ d²r / v²), in units of c = T / (2π v² ‖√w D‖²):
    A²/(3σ⁴) per coordinate (the image plane holds 2 of 3 axes on average), N_s A²/σ² per
    species log amplitude (A²/σ² per atom), 2 N_s A² (σ − σ_min)²/σ⁴ per log width. The
    curvatures of all parameters are then ≈ 1, up to the atoms' overlap and the weights,
    which is what L-BFGS (one scalar initial curvature) needs: unscaled, the amplitudes'
    curvature is ~N_s σ² times the positions'.
    """

    def __init__(
        self,
        positions: torch.Tensor,
        labels: torch.Tensor,
        amplitudes: torch.Tensor,
        widths: torch.Tensor,
        *,
        per_atom_amplitudes: bool,
        fit_amplitudes: bool,
        fit_widths: bool,
        min_width: float,
        curvature: float,
    ) -> None:
        super().__init__()
        self.labels, self.min_width, self.per_atom = labels, min_width, per_atom_amplitudes
        counts = torch.bincount(labels, minlength=amplitudes.shape[0]).to(amplitudes.dtype)
        a, sigma = amplitudes[labels], widths[labels]
        self.start_positions = positions.clone()
        root = math.sqrt(curvature)
        self.position_scale = (root * a / (math.sqrt(3.0) * sigma**2))[:, None]
        self.start_log_amplitudes = torch.log(a if per_atom_amplitudes else amplitudes)
        self.amplitude_scale = root * (
            a / sigma if per_atom_amplitudes else amplitudes * counts.sqrt() / widths
        )
        self.start_log_widths = torch.log(widths - min_width)
        self.width_scale = root * (
            math.sqrt(2.0) * amplitudes * counts.sqrt() * (widths - min_width) / widths**2
        )
        zeros = torch.zeros_like
        self.p = torch.nn.Parameter(zeros(positions))
        self.q = torch.nn.Parameter(zeros(self.start_log_amplitudes), requires_grad=fit_amplitudes)
        self.u = torch.nn.Parameter(zeros(widths), requires_grad=fit_widths)

    def positions(self) -> torch.Tensor:
        return self.start_positions + self.p / self.position_scale

    def species_widths(self) -> torch.Tensor:
        log_width = self.start_log_widths + self.u / self.width_scale.clamp_min(1e-30)
        return self.min_width + torch.exp(log_width)

    def atom_amplitudes(self) -> torch.Tensor:
        log_amplitude = self.start_log_amplitudes + self.q / self.amplitude_scale.clamp_min(1e-30)
        amplitudes = torch.exp(log_amplitude)
        return amplitudes if self.per_atom else amplitudes[self.labels]


def _misfit(model: torch.Tensor, data: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Σ w (P − D)², the weighted least-squares data term."""
    return torch.sum(weights * (model - data) ** 2)


def _linear_amplitudes(
    basis: torch.Tensor, data: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, float]:
    """Amplitudes (S,) minimising Σ w (Σ_s a_s B_s − D)² for projections B_s (S, T, ny, nx)
    of unit-amplitude species, clipped to > 0, and the misfit they leave."""
    flat = basis.reshape(basis.shape[0], -1)
    w = weights.reshape(-1)
    d = data.reshape(-1)
    gram = (flat * w) @ flat.T
    rhs = (flat * w) @ d
    solution = torch.linalg.lstsq(gram.cpu().double(), rhs.cpu().double()[:, None]).solution[:, 0]
    floor = 1e-6 * float(solution.abs().max().clamp_min(1e-30))
    amplitudes = solution.clamp_min(floor).to(basis.dtype)
    fitted = torch.einsum("s,s...->...", amplitudes.to(basis.device), basis)
    return amplitudes, float(_misfit(fitted, data, weights))


def _minimise(
    objective: Callable[[], torch.Tensor],
    parameters: list[torch.nn.Parameter],
    rounds: int,
    tolerance: float,
) -> tuple[list[float], bool]:
    """L-BFGS on ``objective`` (the normalised misfit), one quasi-Newton step per round.

    Returns the relative residual √objective before the first round and after each, and
    whether a round lowered the objective by less than ``tolerance`` (relative).
    """
    optimiser = torch.optim.LBFGS(
        parameters,
        lr=1.0,
        max_iter=1,  # one step per call, so that every iteration's residual is seen
        max_eval=1 + _MAX_LINE_SEARCH,  # the default, 1.25 · max_iter, allows no search
        history_size=20,
        line_search_fn="strong_wolfe",
        tolerance_grad=0.0,
        tolerance_change=0.0,
    )
    # Each step first re-evaluates the point the previous line search accepted: a
    # one-entry cache of (parameters, objective, gradients) spares that projection.
    cached: list[tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]] = []

    def closure() -> torch.Tensor:
        point = torch.cat([p.detach().reshape(-1) for p in parameters])
        if cached and torch.equal(cached[0][0], point):
            for p, grad in zip(parameters, cached[0][2], strict=True):
                p.grad = grad.clone()
            return cached[0][1]
        optimiser.zero_grad()
        value = objective()
        value.backward()  # type: ignore[no-untyped-call]
        grads = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in parameters]
        cached[:] = [(point, value.detach(), grads)]
        return value.detach()

    current = float(closure())
    residuals = [math.sqrt(current)]
    for _ in range(rounds):
        optimiser.step(closure)  # type: ignore[no-untyped-call]
        value = float(closure())  # from the cache unless the search ended elsewhere
        residuals.append(math.sqrt(value))
        if current - value <= tolerance * current:
            return residuals, True
        current = value
    return residuals, False


def _scan_width(
    misfit_of: Callable[[float], float], min_width: float, candidates: Sequence[float]
) -> float:
    """The width [Å] of least misfit: the best of ``candidates`` (those above
    ``min_width``), then Brent's bounded search in log σ between its two neighbours, to
    ~5 % in σ (the refinement does the rest)."""
    widths = np.array([s for s in candidates if s > min_width])
    misfits = [misfit_of(float(s)) for s in widths]
    best = int(np.argmin(misfits))
    low, high = widths[max(best - 1, 0)], widths[min(best + 1, widths.size - 1)]
    search = optimize.minimize_scalar(
        lambda x: misfit_of(math.exp(x)),
        bounds=(math.log(low), math.log(high)),
        method="bounded",
        options={"xatol": 0.05, "maxiter": 10},
    )
    found = float(np.exp(search.x))
    return found if float(search.fun) < misfits[best] else float(widths[best])


def _check_tensor(name: str, tensor: torch.Tensor, pattern: str, shape: tuple[int, ...]) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"{name} must be a torch tensor {pattern}, got {type(tensor).__name__}")
    if tuple(tensor.shape) != shape or tensor.is_complex() or not tensor.is_floating_point():
        raise ValueError(
            f"{name} must be a real floating tensor of shape {pattern} = {shape}, got dtype "
            f"{tensor.dtype} and shape {tuple(tensor.shape)}"
        )
    require_finite(name, tensor)


def _species_values(
    name: str, value: float | Sequence[float] | None, species: int, unit: str
) -> np.ndarray | None:
    """One positive value per species from a number or a sequence of S numbers."""
    if value is None:
        return None
    array = np.atleast_1d(np.asarray(value, dtype=np.float64))
    if array.ndim != 1 or array.size not in (1, species):
        raise ValueError(
            f"{name} must be one number or one per species ({species}) [{unit}], got {value!r}"
        )
    if not np.all(np.isfinite(array) & (array > 0)):
        raise ValueError(f"{name} must be > 0 {unit}, got {value!r}")
    return np.broadcast_to(array, (species,)).copy()


def refine_atoms_against_projections(
    projections: torch.Tensor,
    euler_deg: torch.Tensor,
    voxel_ang: float,
    positions: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    *,
    shifts_ang: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    depth: int | None = None,
    center_ang: Sequence[float] | None = None,
    iterations: int = 50,
    fit_amplitudes: bool = True,
    fit_widths: bool = True,
    per_atom_amplitudes: bool = False,
    initial_amplitudes: float | Sequence[float] | None = None,
    initial_widths_ang: float | Sequence[float] | None = None,
    cutoff_sigmas: float = 4.0,
    tolerance: float = 1e-7,
    profiles: Sequence[str] | None = None,
) -> RefinedAtoms:
    """Refine atom positions, amplitudes and widths against a tilt series.

    Minimises Σ w (P_t(ρ) − D_t)² (module docstring) over the positions and, optionally,
    the amplitudes and widths of each species, by L-BFGS with a strong-Wolfe line search:
    one iteration is one quasi-Newton step (a few projections and back-projections).

    The starting model: the given widths, or the best of a scan from 0.3 to 1.7 Å (one
    width for all species); the given amplitudes, or those of the
    weighted linear least squares for these widths and positions (exact, since the
    projections are linear in them). Atoms must be the right ones: a missing atom leaves
    its signal to pull the neighbours, a spurious one adds signal that is not there, a
    mislabelled one has the wrong amplitude (see ``per_atom_amplitudes``); check
    ``atom_shifts_ang`` and the residual.

    Parameters
    ----------
    projections:
        Real tensor (tilts, ny, nx): D_t on the volume's lateral grid (pixel = voxel),
        in volume units × Å (:func:`~ptyscope.tomography.projector.project`). Its device
        and dtype are those of the computation (float64 for positions to 10⁻⁴ Å).
    euler_deg:
        Real tensor (tilts, 3): (φ, θ, ψ) [deg] of each projection.
    voxel_ang:
        Voxel size v [Å] of the model volume and pixel size of the projections.
    positions:
        float (N, 3): starting (x, y, z) [Å], inside the volume (nz, ny, nx), N >= 1;
        e.g. from :func:`~ptyscope.tomography.atoms.trace_atoms`.
    labels:
        int (N,): species 0 … S − 1 of each atom, e.g. from
        :func:`~ptyscope.tomography.atoms.classify_species`.
    shifts_ang:
        Real tensor (tilts, 2): (s_y, s_x) [Å] of each projection; none by default.
    weights:
        Real tensor (tilts, ny, nx) >= 0: per-pixel weights w_t (1/variance for
        Gaussian noise; 0 where a projection has no data); 1 by default.
    depth:
        nz of the model volume; default max(ny, nx), as in
        :func:`~ptyscope.tomography.volume.reconstruct_volume`.
    center_ang:
        Rotation centre (x, y, z) [Å]; default the centre of the (depth, ny, nx) box.
    iterations:
        most L-BFGS iterations (0: only the starting model).
    fit_amplitudes, fit_widths:
        refine the amplitudes / widths; otherwise they keep their starting values.
    per_atom_amplitudes:
        one amplitude per atom instead of per species (module docstring).
    initial_amplitudes:
        integral A_s [volume units · Å³], one number or one per species; default the
        linear least-squares values.
    initial_widths_ang:
        σ_s [Å] > v/4, one number or one per species; default the best of the scan.
    cutoff_sigmas:
        half-width of each rendered atom in σ (:func:`render_gaussians`), >= 2.
    tolerance:
        stop when an iteration lowers the misfit by less than this fraction, >= 0.
    profiles:
        None: Gaussian atoms rendered into voxels and projected by the bilinear projector
        (module docstring). Otherwise one name per species, an element symbol or
        ``"gaussian"``: the projections are computed analytically
        (:func:`~ptyscope.tomography.atom_projection.project_atoms`), free of the
        projector's tilt-dependent blur; an element's σ is then a blur on top of its
        potential (>= 0, scanned from 0.1 Å) and ``cutoff_sigmas`` is unused.

    Returns
    -------
    RefinedAtoms
        positions, the shift applied to each atom, amplitudes and widths per species (and
        per atom), the relative residual per iteration and whether it converged.

    References
    ----------
    Y. Yang et al., Nature 542, 75-79 (2017); J. Zhou et al., MRS Bulletin 45, 290 (2020).

    Examples
    --------
    >>> from ptyscope.tomography.projector import project
    >>> f64 = torch.float64
    >>> angles = torch.tensor([[0.0, t, 0.0] for t in (-60.0, 0.0, 60.0)], dtype=f64)
    >>> truth = torch.tensor([[4.0, 4.0, 4.0]], dtype=f64)
    >>> rho = render_gaussians(truth, torch.tensor([1.0], dtype=f64),
    ...                        torch.tensor([0.6], dtype=f64), (20, 20, 20), 0.4)
    >>> data = project(rho, angles, 0.4)
    >>> fit = refine_atoms_against_projections(data, angles, 0.4, [[4.1, 3.9, 4.0]], [0],
    ...                                        iterations=20)
    >>> fit.positions_ang.round(3).tolist(), fit.widths_ang.round(3).tolist()
    ([[4.0, 4.0, 4.0]], [0.6])
    """
    if not isinstance(projections, torch.Tensor):
        raise ValueError(
            f"projections must be a torch tensor (tilts, ny, nx), got {type(projections).__name__}"
        )
    if projections.ndim != 3 or projections.shape[0] < 1 or min(projections.shape[1:]) < 2:
        raise ValueError(
            f"projections must have shape (tilts, ny, nx) with ny, nx >= 2, got shape "
            f"{tuple(projections.shape)}"
        )
    _check_tensor("projections", projections, "(tilts, ny, nx)", tuple(projections.shape))
    tilts, ny, nx = (int(n) for n in projections.shape)
    _check_tensor("euler_deg", euler_deg, "(tilts, 3)", (tilts, 3))
    require_positive("voxel_ang", voxel_ang, "Å")
    v = float(voxel_ang)
    nz = max(ny, nx) if depth is None else _require_int("depth", depth, 2)
    shape = (nz, ny, nx)
    if isinstance(positions, torch.Tensor):
        positions = positions.detach().cpu().numpy()
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    points = _require_positions("positions", positions, minimum=1)
    _require_inside_volume(points, shape, v)
    species = _require_labels("labels", labels, points.shape[0])
    num_species = int(species.max()) + 1
    if shifts_ang is not None:
        _check_tensor("shifts_ang", shifts_ang, "(tilts, 2)", (tilts, 2))
    if weights is not None:
        _check_tensor("weights", weights, "(tilts, ny, nx)", (tilts, ny, nx))
        if bool((weights < 0).any()) or not bool((weights > 0).any()):
            raise ValueError(
                f"weights must be >= 0 with at least one > 0, got minimum "
                f"{float(weights.min()):g} and maximum {float(weights.max()):g}"
            )
    rounds = _require_int("iterations", iterations, 0)
    min_width = _MIN_WIDTH_VOXELS * v
    if profiles is not None:
        profiles = check_profiles("profiles", profiles, num_species)
        if GAUSSIAN not in profiles:
            min_width = 0.0
    start_widths = _species_values("initial_widths_ang", initial_widths_ang, num_species, "Å")
    if start_widths is not None and np.any(start_widths <= min_width):
        raise ValueError(
            f"initial_widths_ang must be > voxel_ang / 4 = {min_width:g} Å, got "
            f"{initial_widths_ang!r}"
        )
    start_amplitudes = _species_values(
        "initial_amplitudes", initial_amplitudes, num_species, "volume units · Å³"
    )
    require_positive("cutoff_sigmas", cutoff_sigmas)
    if cutoff_sigmas < 2:
        raise ValueError(f"cutoff_sigmas must be >= 2, got {cutoff_sigmas!r}")
    require_finite("tolerance", tolerance)
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance!r}")

    data = projections.detach()
    dtype, device = data.dtype, data.device
    euler = euler_deg.detach().to(device=device, dtype=dtype)
    shifts = None if shifts_ang is None else shifts_ang.detach().to(device=device, dtype=dtype)
    w = torch.ones_like(data) if weights is None else weights.detach().to(device, dtype)
    norm = float(_misfit(torch.zeros_like(data), data, w))
    if norm <= 0:
        raise ValueError("projections must not be zero wherever weights > 0, got all zeros")
    xyz = torch.as_tensor(points, dtype=dtype, device=device)
    label = torch.as_tensor(species, device=device)
    present = np.bincount(species, minlength=num_species) > 0

    if profiles is None:
        # Angles and shifts stay fixed: project's bilinear weights, as sparse matrices.
        projector = ProjectionOperator(
            shape, euler, v, shifts_ang=shifts, center_ang=center_ang, device=device, dtype=dtype
        )
    center = box_center_ang(shape, v) if center_ang is None else center_ang

    def project_model(
        where: torch.Tensor, labels_: torch.Tensor, amplitudes: torch.Tensor, widths: torch.Tensor
    ) -> torch.Tensor:
        """(tilts, ny, nx) projections of atoms (N, 3) with amplitudes (N,), widths (S,)."""
        if profiles is None:
            volume = _render(where, amplitudes, widths[labels_], shape, v, cutoff_sigmas)
            return projector(volume)
        return project_atoms(
            where,
            labels_,
            amplitudes,
            widths,
            euler,
            (ny, nx),
            v,
            profiles=profiles,
            center_ang=center,
            shifts_ang=shifts,
        )

    def species_basis(widths: np.ndarray) -> torch.Tensor:
        """Projections (S, tilts, ny, nx) of each species at unit amplitude."""
        basis = torch.zeros((num_species, tilts, ny, nx), dtype=dtype, device=device)
        sigma = torch.as_tensor(widths, dtype=dtype, device=device)
        with torch.no_grad():
            for s in np.flatnonzero(present).tolist():
                members = label == s
                one = torch.ones(int(members.sum()), dtype=dtype, device=device)
                basis[s] = project_model(xyz[members], label[members], one, sigma)
        return basis

    if start_widths is None:

        def misfit_of(width: float) -> float:
            basis = species_basis(np.full(num_species, width))
            if start_amplitudes is None:
                return _linear_amplitudes(basis, data, w)[1]
            fixed = torch.as_tensor(start_amplitudes, dtype=dtype, device=device)
            return float(_misfit(torch.einsum("s,s...->...", fixed, basis), data, w))

        candidates = _WIDTH_SCAN_ANG if min_width > 0 else _BLUR_SCAN_ANG
        start_widths = np.full(num_species, _scan_width(misfit_of, min_width, candidates))
    if start_amplitudes is None:
        amplitudes, _ = _linear_amplitudes(species_basis(start_widths), data, w)
        start_amplitudes = amplitudes.cpu().double().numpy()
    start_amplitudes = np.where(present, start_amplitudes, 1.0)
    start_widths = np.where(present, start_widths, 1.0)

    model = _AtomModel(
        xyz,
        label,
        torch.as_tensor(start_amplitudes, dtype=dtype, device=device),
        torch.as_tensor(start_widths, dtype=dtype, device=device),
        per_atom_amplitudes=per_atom_amplitudes,
        fit_amplitudes=fit_amplitudes,
        fit_widths=fit_widths,
        min_width=min_width,
        curvature=tilts / (2.0 * math.pi * v**2 * norm),
    )
    parameters = [p for p in model.parameters() if p.requires_grad]

    def objective() -> torch.Tensor:
        projected = project_model(
            model.positions(), label, model.atom_amplitudes(), model.species_widths()
        )
        return _misfit(projected, data, w) / norm

    residuals, converged = _minimise(objective, parameters, rounds, float(tolerance))

    with torch.no_grad():
        refined = model.positions().detach().cpu().double().numpy()
        atom_amplitudes = model.atom_amplitudes().cpu().double().numpy()
        widths_out = model.species_widths().cpu().double().numpy()
    species_amplitudes = np.array(
        [
            float(np.median(atom_amplitudes[species == s])) if present[s] else math.nan
            for s in range(num_species)
        ]
    )
    return RefinedAtoms(
        positions_ang=refined,
        atom_shifts_ang=refined - points,
        amplitudes=species_amplitudes,
        widths_ang=np.where(present, widths_out, math.nan),
        atom_amplitudes=atom_amplitudes,
        relative_residuals=tuple(residuals),
        converged=converged,
    )
