"""Structure metrics from atomic-column positions: relative shifts, lattice fit and strain.

* :func:`relative_displacements`: the shift of each column of one species from the centre
  of its nearest columns of another, e.g. d_Sr-TiO and d_O-TiO of SrTiO₃ (Sha et al.,
  Sci. Adv. 8, eabn2275 (2022), Fig. 2E-F and Fig. 4), which vanish in a centrosymmetric
  crystal and measure polar displacements.
* :func:`lattice_parameters` and :func:`strain_map` (defined in
  :mod:`ptyscope.analysis.lattice`): the lattice of one species and local strain.

Positions are (K, 2) arrays ordered (y, x) [Å]; labels are one string per column.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy.spatial import cKDTree

from .lattice import (
    LatticeFit,
    StrainMap,
    lattice_parameters,
    positions_of,
    strain_map,
    validated_positions,
)

__all__ = [
    "DisplacementSummary",
    "LatticeFit",
    "RelativeDisplacements",
    "StrainMap",
    "lattice_parameters",
    "relative_displacements",
    "strain_map",
    "summarize_displacements",
]

#: Picometres per ångström.
PM_PER_ANG = 100.0
#: Default edge rule: a column is kept when its farthest neighbour is at most this factor
#: times the median (over all columns) of that distance.
_EDGE_FACTOR = 1.25


class RelativeDisplacements(NamedTuple):
    """Columns of the centre species and their displacements (unpacks as a pair).

    Attributes
    ----------
    positions_ang:
        float64 (K, 2): (y, x) [Å] of the centre columns that were measured.
    displacements_ang:
        float64 (K, 2): (dy, dx) [Å], column position minus the mean of its neighbours.
    """

    positions_ang: np.ndarray
    displacements_ang: np.ndarray

    @property
    def displacements_pm(self) -> np.ndarray:
        """float64 (K, 2): the displacements in pm."""
        return self.displacements_ang * PM_PER_ANG


@dataclass(frozen=True)
class DisplacementSummary:
    """Accuracy and precision of a set of displacements, in pm (Sha 2022, Fig. 4)."""

    count: int
    mean_pm: tuple[float, float]
    std_pm: tuple[float, float]
    mean_magnitude_pm: float


def relative_displacements(
    positions_ang: np.ndarray,
    labels: Sequence[str] | np.ndarray,
    center_label: str,
    neighbour_label: str,
    *,
    neighbours: int = 4,
    max_distance_ang: float | None = None,
) -> RelativeDisplacements:
    """Displacement of each ``center_label`` column from the centre of its neighbours.

    d = r_c − (1/n) Σ r_n over the ``neighbours`` nearest ``neighbour_label`` columns. In
    SrTiO₃ [001], ``("TiO", "Sr")`` gives d_Sr-TiO and ``("TiO", "O")`` gives d_O-TiO
    (Sha et al. 2022, Fig. 2E); both vanish for the cubic crystal.

    Parameters
    ----------
    positions_ang:
        float (K, 2): column positions (y, x) [Å].
    labels:
        K strings: each column's species.
    center_label, neighbour_label:
        Species of the measured columns and of their neighbours.
    neighbours:
        Number n >= 1 of nearest neighbours averaged (4 for the perovskite measures).
    max_distance_ang:
        Columns with a neighbour farther than this [Å] are skipped (at the edge of the
        field of view their neighbours are one-sided). Default: 1.25 × the median over all
        centre columns of the distance to their n-th neighbour (this assumes that most
        columns are interior; give a value for fields only a few cells wide).

    Returns
    -------
    RelativeDisplacements
        ``(positions_ang, displacements_ang)`` of the kept centre columns, (K', 2) each.

    Examples
    --------
    >>> sr = np.array([[0.0, 0.0], [0.0, 4.0], [4.0, 0.0], [4.0, 4.0]])
    >>> pos = np.vstack([sr, [[2.0, 2.05]]])
    >>> d = relative_displacements(pos, ["Sr"] * 4 + ["TiO"], "TiO", "Sr")
    >>> d.displacements_pm.round(6).tolist()
    [[0.0, 5.0]]
    """
    positions = validated_positions(positions_ang)
    centres = positions_of(positions, labels, center_label, "center_label")
    others = positions_of(positions, labels, neighbour_label, "neighbour_label")
    if isinstance(neighbours, bool) or not isinstance(neighbours, int | np.integer):
        raise TypeError(f"neighbours must be an integer, got {neighbours!r}")
    if not 1 <= neighbours <= len(others):
        raise ValueError(
            f"neighbours must lie in [1, {len(others)}] (the number of {neighbour_label!r} "
            f"columns), got {neighbours}"
        )
    distances, index = cKDTree(others).query(centres, k=int(neighbours))
    distances = distances.reshape(len(centres), -1)
    index = index.reshape(len(centres), -1)
    farthest = distances[:, -1]
    if max_distance_ang is None:
        limit = _EDGE_FACTOR * float(np.median(farthest))
    else:
        limit = float(max_distance_ang)
        if not limit > 0:
            raise ValueError(f"max_distance_ang must be > 0 Å, got {max_distance_ang!r}")
    keep = farthest <= limit
    displacements = centres[keep] - others[index[keep]].mean(axis=1)
    return RelativeDisplacements(centres[keep], displacements)


def summarize_displacements(displacements_ang: np.ndarray) -> DisplacementSummary:
    """Mean (accuracy), standard deviation (precision) and mean magnitude, in pm.

    Parameters
    ----------
    displacements_ang:
        float (K, 2), K >= 1: (dy, dx) [Å], e.g. ``relative_displacements(...)[1]``.

    Examples
    --------
    >>> summarize_displacements(np.array([[0.0, 0.04], [0.0, 0.06]])).mean_pm
    (0.0, 5.0)
    """
    d = validated_positions(displacements_ang, "displacements_ang") * PM_PER_ANG
    if len(d) == 0:
        raise ValueError("displacements_ang must hold at least one displacement, got none")
    mean, std = d.mean(axis=0), d.std(axis=0)
    return DisplacementSummary(
        len(d),
        (float(mean[0]), float(mean[1])),
        (float(std[0]), float(std[1])),
        float(np.hypot(d[:, 0], d[:, 1]).mean()),
    )
