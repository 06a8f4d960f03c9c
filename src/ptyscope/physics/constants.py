"""Physical constants, the relativistic electron wavelength and the interaction constant.

Values are CODATA 2018 (exact SI definitions for h, c and e). Energies are in eV, lengths
in Å, and the interaction constant in rad/(V·Å).

References
----------
E. J. Kirkland, *Advanced Computing in Electron Microscopy*, 3rd ed. (Springer, 2020),
Eq. 2.5 (relativistic wavelength) and Eq. 5.6 (interaction parameter σ).
"""

from __future__ import annotations

import math
from typing import overload

import torch

from ptyscope._validation import require_positive

__all__ = [
    "ELECTRON_REST_ENERGY_EV",
    "HC_EV_ANG",
    "interaction_constant",
    "wavelength_ang",
]

#: Planck constant × speed of light [eV·Å] (exact in SI 2019: h·c/e × 1e10).
HC_EV_ANG: float = 6.62607015e-34 * 299792458.0 / 1.602176634e-19 * 1e10
#: Electron rest energy m₀c² [eV] (CODATA 2018).
ELECTRON_REST_ENERGY_EV: float = 510998.95000


@overload
def wavelength_ang(energy_ev: float) -> float: ...
@overload
def wavelength_ang(energy_ev: torch.Tensor) -> torch.Tensor: ...


def wavelength_ang(energy_ev: float | torch.Tensor) -> float | torch.Tensor:
    """Relativistic de Broglie wavelength of an electron.

    λ = h c / sqrt(E (2 m₀c² + E))   (Kirkland 2020, Eq. 2.5)

    Parameters
    ----------
    energy_ev:
        Kinetic energy E of the electron [eV], a float or a real tensor of any shape.

    Returns
    -------
    float or torch.Tensor
        Wavelength λ [Å], of the same kind and shape as ``energy_ev``.

    Examples
    --------
    >>> round(wavelength_ang(300e3), 6)
    0.019687
    """
    require_positive("energy_ev", energy_ev, "eV")
    return HC_EV_ANG / (energy_ev * (2.0 * ELECTRON_REST_ENERGY_EV + energy_ev)) ** 0.5


@overload
def interaction_constant(energy_ev: float) -> float: ...
@overload
def interaction_constant(energy_ev: torch.Tensor) -> torch.Tensor: ...


def interaction_constant(energy_ev: float | torch.Tensor) -> float | torch.Tensor:
    """Interaction constant σ converting projected potential to phase.

    σ = (2π / (λ E)) · (m₀c² + E) / (2 m₀c² + E)   (Kirkland 2020, Eq. 5.6),
    so a slice of projected potential v_z [V·Å] imparts the phase σ·v_z [rad].

    Parameters
    ----------
    energy_ev:
        Kinetic energy E [eV] (numerically equal to the accelerating voltage in V).

    Returns
    -------
    float or torch.Tensor
        σ [rad/(V·Å)].

    Examples
    --------
    >>> round(interaction_constant(300e3) * 1e4, 4)   # 6.5249e-4 rad/(V·Å) at 300 kV
    6.5249
    """
    lam = wavelength_ang(energy_ev)
    rest = ELECTRON_REST_ENERGY_EV
    return 2.0 * math.pi / (lam * energy_ev) * (rest + energy_ev) / (2.0 * rest + energy_ev)
