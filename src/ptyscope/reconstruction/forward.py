"""The reconstruction's forward model: a pure function of the parameters.

For probe positions ``indices`` it returns the predicted far-field intensities,
Σ_states w_s Σ_modes |F[exit(P_m, O_s)]|², through the physics core's multislice pass
(:func:`ptyscope.physics.multislice.multislice_forward`), scaled by the mean measured
counts per pattern (the probe keeps unit intensity). The propagator is rebuilt only when
tilt or thickness may change (``PropagatorCache``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ptyscope.physics.multislice import multislice_forward
from ptyscope.physics.propagator import fresnel_propagator

from .parameters import PtychoParameters

__all__ = ["PropagatorCache", "predict"]


@dataclass
class PropagatorCache:
    """Frequencies of the probe window and the cached propagator.

    Attributes
    ----------
    ky, kx:
        Real (ny, nx) spatial frequencies of the probe window [Å⁻¹] (FFT order).
    wavelength_ang:
        λ [Å].
    band_limit:
        Optional real (ny, nx) mask multiplied into the propagator.
    substeps:
        Planes per slice (:func:`ptyscope.physics.multislice.check_substeps`); the
        propagator is that of one sub-step, slice thickness / substeps.
    exit_ramp:
        Optional complex (ny, nx) ramp putting the model's patterns on the data's optical
        axis when that lies a fraction of a pixel off the centre pixel
        (:func:`ptyscope.physics.multislice.detector_offset_ramp`).
    """

    ky: torch.Tensor
    kx: torch.Tensor
    wavelength_ang: float
    band_limit: torch.Tensor | None = None
    substeps: int = 1
    exit_ramp: torch.Tensor | None = None
    _cached: torch.Tensor | None = field(default=None, repr=False)

    def propagator(
        self, params: PtychoParameters, indices: torch.Tensor, trainable: bool
    ) -> torch.Tensor:
        """(ny, nx) for a global tilt, (B, ny, nx) for a tilt map; cached if frozen."""
        per_position = params.tilt.ndim == 2
        if not trainable and not per_position and self._cached is not None:
            return self._cached
        tilt = params.tilt[indices] if per_position else params.tilt
        if not trainable:
            tilt = tilt.detach()
        thickness = params.thickness if trainable else params.thickness.detach()
        if self.substeps > 1:
            thickness = thickness / self.substeps
        result = fresnel_propagator(self.ky, self.kx, self.wavelength_ang, thickness, tilt)
        if self.band_limit is not None:
            result = result * self.band_limit
        if not trainable and not per_position:
            self._cached = result
        return result

    def clear(self) -> None:
        self._cached = None


def predict(
    params: PtychoParameters,
    indices: torch.Tensor,
    cache: PropagatorCache,
    intensity_scale: float,
    *,
    propagator_trainable: bool = False,
) -> torch.Tensor:
    """Predicted intensities (B, ny, nx), zero frequency centred, for scan ``indices``."""
    positions = params.positions_px()[indices]
    propagator = cache.propagator(params, indices, propagator_trainable)
    intensity = multislice_forward(
        params.probe,
        params.object,
        positions,
        propagator,
        params.weights(),
        substeps=cache.substeps,
        exit_ramp=cache.exit_ramp,
    )
    return intensity * intensity_scale
