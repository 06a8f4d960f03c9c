"""Constraints and regularisers applied between iterations, each with a schedule.

A constraint is an object with ``apply(params, iteration)`` acting in place under
``torch.no_grad()``; the engine calls every constraint whose :class:`Schedule` is due.
Adding one means adding a class, not editing the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ptyscope.physics.grids import spatial_frequencies

from .parameters import PtychoParameters

__all__ = [
    "AmplitudeLimit",
    "BandLimit",
    "Constraint",
    "PositionLimit",
    "ProbeDefocusHold",
    "ProbeOrthogonalization",
    "ProbePower",
    "Schedule",
    "SliceSmoothing",
    "StateLowPass",
]


@dataclass(frozen=True)
class Schedule:
    """Due at iterations start, start + every, ... while < stop (``None`` = never stop)."""

    start: int = 0
    stop: int | None = None
    every: int = 1

    def due(self, iteration: int) -> bool:
        if iteration < self.start or (self.stop is not None and iteration >= self.stop):
            return False
        return (iteration - self.start) % self.every == 0


@dataclass
class Constraint:
    """Base class: subclasses implement :meth:`apply`."""

    schedule: Schedule = field(default_factory=Schedule)

    def apply(self, params: PtychoParameters, iteration: int) -> None:  # pragma: no cover
        raise NotImplementedError


@dataclass
class ProbeOrthogonalization(Constraint):
    """Orthogonalise the probe modes (eigen-decomposition of their overlap), strongest
    first; the total intensity and the spanned space are unchanged."""

    def apply(self, params: PtychoParameters, iteration: int) -> None:
        probe = params.probe.data
        modes = probe.reshape(probe.shape[0], -1)
        overlap = modes.conj() @ modes.T  # G_ij = <m_i, m_j>, Hermitian
        values, vectors = torch.linalg.eigh(overlap)  # G = V Λ Vᴴ
        order = torch.argsort(values, descending=True)
        # New modes N = Vᵀ M: their overlap conj(Vᵀ) G V = Vᴴ G V = Λ is diagonal.
        rotated = vectors[:, order].T @ modes
        params.probe.data.copy_(rotated.reshape(probe.shape))


@dataclass
class ProbePower(Constraint):
    """Rescale the probe to a fixed total intensity (default: its value at the start)."""

    power: float | None = None

    def apply(self, params: PtychoParameters, iteration: int) -> None:
        current = float((params.probe.data.abs() ** 2).sum())
        if self.power is None:
            self.power = current
        if current > 0:
            params.probe.data.mul_((self.power / current) ** 0.5)


@dataclass
class ProbeDefocusHold(Constraint):
    """Keep the probe's defocus where it started: remove the k² part of its phase change.

    The probe's defocus and the depth of a multislice object trade off: moving the probe's
    focus by δ and the specimen by δ along the beam leaves the data unchanged, so a fitted
    probe can drift in defocus while the object follows it (4 Å in 60 iterations of stage 1
    of the mixed-object preset, docs/mixed_object_log.md). Holding the defocus at its starting
    value fixes that freedom; the other aberrations stay free.

    After each update the Fourier-space phase change φ(k) = arg(ψ̃₀*(k)·ψ̃(k)) of the
    strongest mode against ``reference_k`` (the starting mode 0, ``fft2(ifftshift(ψ))``)
    is fitted, through its gradient so that a change of many radians does not wrap, by
    shifts (k_y, k_x), defocus |k|² and two-fold astigmatism (k_x² − k_y², 2k_xk_y),
    weighted by |ψ̃₀||ψ̃| inside the bright-field disk. Every mode is then multiplied by
    exp(−i·c·|k|²) with c the fitted defocus coefficient. The defocus is the best-fitting
    one over the disk, so the focus shift that a change of higher even orders (spherical
    aberration) brings with it is held too: a k⁴ term in the fit would let the probe move
    its focus through that term.

    ``pixel_size_ang``: (dy, dx) of the probe window [Å].
    """

    reference_k: torch.Tensor | None = None
    pixel_size_ang: tuple[float, float] = (1.0, 1.0)

    @classmethod
    def from_probe(
        cls, probe: torch.Tensor, pixel_size_ang: tuple[float, float], schedule: Schedule
    ) -> ProbeDefocusHold:
        """Hold the defocus of ``probe`` (complex (modes, ny, nx), the starting probe)."""
        return cls(schedule, _spectrum(probe.detach())[0].clone(), pixel_size_ang)

    def apply(self, params: PtychoParameters, iteration: int) -> None:
        probe = params.probe.data
        modes_k = _spectrum(probe)
        if self.reference_k is None:  # built without one: hold the first probe it sees
            self.reference_k = modes_k[0].clone()
            return
        ky, kx = spatial_frequencies(
            (probe.shape[-2], probe.shape[-1]),
            self.pixel_size_ang,
            device=probe.device,
            dtype=torch.float64,
        )
        reference = self.reference_k.to(probe.device)
        ratio = (modes_k[0] * reference.conj()).to(torch.complex128)
        level = 0.1 * float(reference.abs().max())
        inside = (reference.abs() > level) & (modes_k[0].abs() > 0.1 * level)
        terms = torch.stack((ky, kx, ky**2 + kx**2, kx**2 - ky**2, 2 * kx * ky))
        # First through the phase steps between neighbouring pixels, which do not wrap
        # while the phase changes by less than π per pixel; then directly on what is left
        # (small, so unwrapped): the defocus is the weighted least-squares one.
        rows, values, weights = [], [], []
        for dim in (-2, -1):
            step = torch.angle(torch.roll(ratio, -1, dim) * ratio.conj())
            keep = inside & torch.roll(inside, -1, dim)
            # No step across the FFT grid's jump from the highest k to the lowest.
            keep.select(dim, (probe.shape[dim] - 1) // 2).fill_(False)
            rows.append((torch.roll(terms, -1, dim) - terms)[:, keep].T)
            values.append(step[keep])
            weights.append((ratio.abs() * torch.roll(ratio.abs(), -1, dim))[keep].sqrt())
        design, target, weight = torch.cat(rows), torch.cat(values), torch.cat(weights)
        if design.shape[0] < 2 * design.shape[1]:
            return
        coarse = torch.linalg.lstsq(design * weight[:, None], target * weight).solution
        model = (coarse @ terms.flatten(1)).view_as(ky)
        left = torch.angle(ratio * torch.polar(torch.ones_like(ky), -model))
        direct = torch.cat((torch.ones_like(ky)[None], terms))[:, inside].T
        weight = ratio.abs()[inside].sqrt()
        fine = torch.linalg.lstsq(direct * weight[:, None], left[inside] * weight).solution
        defocus_k2 = float(coarse[2] + fine[3])
        correction = torch.polar(
            torch.ones_like(ky, dtype=probe.real.dtype),
            (-defocus_k2 * (ky**2 + kx**2)).to(probe.real.dtype),
        )
        held = torch.fft.fftshift(torch.fft.ifft2(modes_k * correction), dim=(-2, -1))
        probe.copy_(held)


def _spectrum(probe: torch.Tensor) -> torch.Tensor:
    """Unshifted Fourier transform of centred real-space probe modes (..., ny, nx)."""
    spectrum: torch.Tensor = torch.fft.fft2(torch.fft.ifftshift(probe, dim=(-2, -1)))
    return spectrum


@dataclass
class AmplitudeLimit(Constraint):
    """Clip the object amplitude to [minimum, maximum] (≤ 1: no gain in a thin specimen);
    optionally clip the phase to ≥ 0 (positive potential)."""

    maximum: float = 1.0
    minimum: float = 0.0
    positive_phase: bool = False

    def apply(self, params: PtychoParameters, iteration: int) -> None:
        obj = params.object.data
        amplitude = obj.abs().clamp(self.minimum, self.maximum)
        phase = obj.angle()
        if self.positive_phase:
            phase = phase.clamp(min=0.0)
        obj.copy_(torch.polar(amplitude, phase))


@dataclass
class BandLimit(Constraint):
    """Remove object frequencies beyond ``fraction`` of Nyquist (against aliasing)."""

    fraction: float = 2.0 / 3.0

    def apply(self, params: PtychoParameters, iteration: int) -> None:
        obj = params.object.data
        ny, nx = obj.shape[-2:]
        ky = torch.fft.fftfreq(ny, device=obj.device)[:, None]
        kx = torch.fft.fftfreq(nx, device=obj.device)[None, :]
        mask = (ky**2 + kx**2) <= (0.5 * self.fraction) ** 2
        obj.copy_(torch.fft.ifft2(torch.fft.fft2(obj) * mask))


@dataclass
class SliceSmoothing(Constraint):
    """Low-pass the object along z (kz filter): Gaussian smoothing of each slice's log
    transmission with its neighbours, weight ``strength`` in [0, 1)."""

    strength: float = 0.1

    def apply(self, params: PtychoParameters, iteration: int) -> None:
        obj = params.object.data
        if obj.shape[1] < 3 or self.strength <= 0:
            return
        log = torch.complex(torch.log(obj.abs().clamp(min=1e-6)), obj.angle())
        neighbours = 0.5 * (torch.roll(log, 1, dims=1) + torch.roll(log, -1, dims=1))
        neighbours[:, 0] = log[:, 1]
        neighbours[:, -1] = log[:, -2]
        mixed = (1 - self.strength) * log + self.strength * neighbours
        obj.copy_(torch.exp(mixed))


@dataclass
class StateLowPass(Constraint):
    """Low-pass the differences between object states (a variance regulariser).

    Each state O_s is replaced by Ō + g ∗ (O_s − Ō), Ō the weighted mean state and g a
    Gaussian of σ = ``sigma_px`` (y, x) [object px], applied in Fourier space as
    exp(−2π²(σ_y²k_y² + σ_x²k_x²)). Atoms that move between states make smooth differences
    that pass; pixel noise that the states would otherwise fit does not (the low-pass
    variance constraint of Gladyshev et al. 2023). The mean object is untouched.
    """

    sigma_px: tuple[float, float] = (1.0, 1.0)

    def apply(self, params: PtychoParameters, iteration: int) -> None:
        obj = params.object.data
        if obj.shape[0] < 2:
            return
        weights = params.weights().detach().to(obj.real.dtype)[:, None, None, None]
        mean = (weights * obj).sum(dim=0, keepdim=True)
        ny, nx = obj.shape[-2:]
        ky = torch.fft.fftfreq(ny, device=obj.device, dtype=obj.real.dtype)[:, None]
        kx = torch.fft.fftfreq(nx, device=obj.device, dtype=obj.real.dtype)[None, :]
        sy, sx = self.sigma_px
        gaussian = torch.exp(-2 * torch.pi**2 * ((sy * ky) ** 2 + (sx * kx) ** 2))
        obj.copy_(mean + torch.fft.ifft2(torch.fft.fft2(obj - mean) * gaussian))


@dataclass
class PositionLimit(Constraint):
    """Keep position corrections within ``max_px`` and, optionally, remove their global
    affine part (mean shift and linear distortion), which the object can absorb."""

    max_px: float = 2.0
    remove_affine: bool = True

    def apply(self, params: PtychoParameters, iteration: int) -> None:
        correction = params.positions.data
        if self.remove_affine:
            # In float64: LAPACK's result can change in the last bit with the memory
            # alignment of its input, which would make a resumed run differ from an
            # uninterrupted one; rounded to float32 such differences vanish.
            nominal = params.nominal_positions_px.double()
            design = torch.cat(
                (torch.ones_like(nominal[:, :1]), nominal - nominal.mean(dim=0)), dim=1
            )
            solution = torch.linalg.lstsq(design, correction.double()).solution
            correction.sub_((design @ solution).to(correction.dtype))
        correction.clamp_(-self.max_px, self.max_px)
