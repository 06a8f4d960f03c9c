"""What a reconstruction fits: an ``nn.Module`` holding every parameter group.

Groups (each frozen or fitted from a given iteration with its own learning rate, see
:class:`GroupSettings`):

* ``object``: complex (states, slices, Ny, Nx) transmission functions;
* ``probe``: complex (modes, ny, nx), unit total intensity at the start;
* ``positions``: (N, 2) corrections [object px] added to the nominal scan positions;
* ``tilt``: (θ_y, θ_x) [mrad], global (2,) or one per position (N, 2);
* ``thickness``: slice thickness Δz [Å] (scalar);
* ``state_weights``: logits of the object-state weights w = softmax(logits).

The forward model (:mod:`ptyscope.reconstruction.forward`) is a pure function of these.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["GROUPS", "GroupSettings", "PtychoParameters"]

#: Parameter group names, in the order the optimiser sees them.
GROUPS = ("object", "probe", "positions", "tilt", "thickness", "state_weights")


@dataclass(frozen=True)
class GroupSettings:
    """Whether and how a parameter group is fitted.

    Attributes
    ----------
    fit:
        Fit this group at all.
    start:
        First iteration (0-based) at which it is updated.
    stop:
        First iteration at which it is held again (``None``: updated to the end).
    lr:
        Learning rate of its optimiser group (units of the parameter per step).
    warmup:
        Iterations over which the step rises linearly to ``lr`` after ``start``: the
        k-th update (k = 0, 1, ...) uses ``lr · (k + 1) / (warmup + 1)`` while
        k < ``warmup`` (0: the full ``lr`` from the first update). Adam's first step moves
        every element by about ``lr`` whatever its gradient; in a group that starts
        late, against a converged rest, that step throws the loss up.
    """

    fit: bool = True
    start: int = 0
    lr: float = 1e-3
    stop: int | None = None
    warmup: int = 0

    def active(self, iteration: int) -> bool:
        ended = self.stop is not None and iteration >= self.stop
        return self.fit and iteration >= self.start and not ended

    def warmup_factor(self, iteration: int) -> float:
        """The fraction of ``lr`` used at ``iteration`` (1 after the warm-up)."""
        k = iteration - self.start
        if k >= self.warmup:
            return 1.0
        return (max(k, 0) + 1) / (self.warmup + 1)


class PtychoParameters(nn.Module):
    """Every fitted quantity of a multislice, mixed-state ptychography reconstruction.

    Parameters
    ----------
    obj:
        Complex (states, slices, Ny, Nx) initial object.
    probe:
        Complex (modes, ny, nx) initial probe modes.
    positions_px:
        Real (N, 2) nominal (y, x) probe-centre positions on the object grid [px].
    tilt_mrad:
        Real (2,) or (N, 2) initial (θ_y, θ_x) [mrad].
    slice_thickness_ang:
        Initial Δz [Å].
    """

    def __init__(
        self,
        obj: torch.Tensor,
        probe: torch.Tensor,
        positions_px: torch.Tensor,
        tilt_mrad: torch.Tensor,
        slice_thickness_ang: float,
    ) -> None:
        super().__init__()
        if obj.ndim != 4 or not obj.is_complex():
            raise ValueError(f"obj must be complex (states, slices, Ny, Nx), got {obj.shape}")
        if probe.ndim != 3 or not probe.is_complex():
            raise ValueError(f"probe must be complex (modes, ny, nx), got {probe.shape}")
        if positions_px.ndim != 2 or positions_px.shape[1] != 2:
            raise ValueError(f"positions_px must be (N, 2), got {tuple(positions_px.shape)}")
        n = positions_px.shape[0]
        if tuple(tilt_mrad.shape) not in ((2,), (n, 2)):
            raise ValueError(f"tilt_mrad must be (2,) or (N, 2)=({n}, 2), got {tilt_mrad.shape}")
        real = positions_px.dtype
        self.object = nn.Parameter(obj.clone())
        self.probe = nn.Parameter(probe.clone())
        self.register_buffer("nominal_positions_px", positions_px.clone())
        self.positions = nn.Parameter(torch.zeros_like(positions_px))
        self.tilt = nn.Parameter(tilt_mrad.to(real).clone())
        self.thickness = nn.Parameter(torch.tensor(float(slice_thickness_ang), dtype=real))
        self.state_weights = nn.Parameter(torch.zeros(obj.shape[0], dtype=real))

    # The nominal positions are a buffer; expose them typed for mypy.
    nominal_positions_px: torch.Tensor

    @property
    def num_states(self) -> int:
        return int(self.object.shape[0])

    @property
    def num_slices(self) -> int:
        return int(self.object.shape[1])

    @property
    def num_positions(self) -> int:
        return int(self.nominal_positions_px.shape[0])

    def positions_px(self) -> torch.Tensor:
        """Current (N, 2) positions: nominal + fitted correction [object px]."""
        return self.nominal_positions_px + self.positions

    def weights(self) -> torch.Tensor:
        """Object-state weights, softmax of the logits (sum to 1)."""
        return torch.softmax(self.state_weights, dim=0)

    def group(self, name: str) -> nn.Parameter:
        if name not in GROUPS:
            raise ValueError(f"parameter group must be one of {list(GROUPS)}, got {name!r}")
        parameter: nn.Parameter = getattr(self, name)
        return parameter
