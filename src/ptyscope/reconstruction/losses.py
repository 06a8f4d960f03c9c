"""Data-fidelity losses between predicted and measured diffraction intensities.

All take predicted intensities I (B, ny, nx) ≥ 0 and measured intensities J (B, ny, nx)
(counts, or any consistent scale) and return a scalar summed over the batch; the engine
divides by the number of patterns so full-batch and chunked sums agree.

* ``amplitude``: Σ (√I − √J)², the Gaussian likelihood of amplitudes (robust to the
  variance-stabilised Poisson noise; Thibault & Guizar-Sicairos 2012).
* ``poisson``: Σ (I − J log I), the Poisson negative log-likelihood (up to a constant).
* ``intensity``: Σ (I − J)², least squares on intensities.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["LOSSES", "get_loss"]

LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

_EPS = 1e-12


def amplitude_loss(predicted: torch.Tensor, measured: torch.Tensor) -> torch.Tensor:
    return ((torch.sqrt(predicted + _EPS) - torch.sqrt(measured.clamp(min=0))) ** 2).sum()


def poisson_loss(predicted: torch.Tensor, measured: torch.Tensor) -> torch.Tensor:
    return (predicted - measured * torch.log(predicted + _EPS)).sum()


def intensity_loss(predicted: torch.Tensor, measured: torch.Tensor) -> torch.Tensor:
    return ((predicted - measured) ** 2).sum()


#: Registry: loss name -> function.
LOSSES: dict[str, LossFunction] = {
    "amplitude": amplitude_loss,
    "poisson": poisson_loss,
    "intensity": intensity_loss,
}


def get_loss(name: str | LossFunction) -> LossFunction:
    """A loss by name (or the function itself); unknown names list the valid ones."""
    if callable(name):
        return name
    if name not in LOSSES:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {name!r}")
    return LOSSES[name]
