"""Images read from a reconstruction result file for measurement."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import h5py
import numpy as np

from ptyscope.io.hdf5_guard import open_untrusted_hdf5

__all__ = ["PhaseImage", "load_phase", "load_phase_states"]


@dataclass(frozen=True)
class PhaseImage:
    """A phase image [rad] with its geometry.

    Attributes
    ----------
    phase_rad:
        float64 (ny, nx).
    pixel_size_ang:
        (dy, dx) [Å].
    origin_ang:
        (y, x) [Å] of pixel (0, 0) in the scan frame.
    scanned_region_ang:
        (y0, y1, x0, x1) [Å]: the area the probe positions cover (reliable region).
    """

    phase_rad: np.ndarray
    pixel_size_ang: tuple[float, float]
    origin_ang: tuple[float, float]
    scanned_region_ang: tuple[float, float, float, float]

    def inner_region(self, margin_ang: float) -> tuple[float, float, float, float]:
        """(y0, y1, x0, x1) [Å]: the scanned region shrunk by ``margin_ang`` on each side."""
        y0, y1, x0, x1 = self.scanned_region_ang
        return (y0 + margin_ang, y1 - margin_ang, x0 + margin_ang, x1 - margin_ang)

    def inside(self, positions_ang: np.ndarray, margin_ang: float) -> np.ndarray:
        """bool (K,): which (y, x) positions [Å] lie strictly inside :meth:`inner_region`."""
        y0, y1, x0, x1 = self.inner_region(margin_ang)
        points = np.asarray(positions_ang)
        result: np.ndarray = (
            (points[:, 0] > y0) & (points[:, 0] < y1) & (points[:, 1] > x0) & (points[:, 1] < x1)
        )
        return result

    def inner_slices(self, margin_ang: float) -> tuple[slice, slice]:
        """Rows and columns of the pixels inside :meth:`inner_region`."""
        y0, y1, x0, x1 = self.inner_region(margin_ang)
        low = np.ceil(self.pixel_of(np.array([[y0, x0]]))[0]).astype(int)
        high = np.floor(self.pixel_of(np.array([[y1, x1]]))[0]).astype(int)
        return slice(int(low[0]), int(high[0])), slice(int(low[1]), int(high[1]))

    def pixel_of(self, positions_ang: np.ndarray) -> np.ndarray:
        """(K, 2) positions [Å] -> fractional pixel indices (row, column)."""
        result: np.ndarray = (np.asarray(positions_ang) - np.asarray(self.origin_ang)) / (
            np.asarray(self.pixel_size_ang)
        )
        return result


def _open_result(result_path: str | os.PathLike[str]) -> h5py.File:
    if not os.path.exists(result_path):
        raise FileNotFoundError(f"result file not found: {os.fspath(result_path)!r}")
    handle = open_untrusted_hdf5(result_path)
    if "object" not in handle or "positions_ang" not in handle:
        handle.close()
        raise ValueError(
            f"{os.fspath(result_path)!r} is not a ptyscope result file (needs 'object' "
            "and 'positions_ang')"
        )
    return handle


def _image(handle: h5py.File, phase: np.ndarray) -> PhaseImage:
    """``phase`` with the geometry of the result open in ``handle``."""
    dataset = handle["object"]
    pixel = tuple(float(v) for v in dataset.attrs["pixel_size_ang"])
    origin = tuple(float(v) for v in dataset.attrs.get("origin_ang", (0.0, 0.0)))
    positions = handle["positions_ang"][()]
    low, high = positions.min(axis=0), positions.max(axis=0)
    return PhaseImage(
        phase,
        (pixel[0], pixel[1]),
        (origin[0], origin[1]),
        (float(low[0]), float(high[0]), float(low[1]), float(high[1])),
    )


def load_phase(
    result_path: str | os.PathLike[str], *, state: int = 0, slice_index: int | None = None
) -> PhaseImage:
    """Phase of one object state of a result: one slice, or the sum over slices (default).

    The sum is Σ_j angle(O_j), which does not wrap while each slice stays below π.
    """
    with _open_result(result_path) as handle:
        dataset = handle["object"]
        states, slices = dataset.shape[:2]
        if not 0 <= state < states:
            raise ValueError(f"state must lie in [0, {states - 1}], got {state}")
        if slice_index is not None and not 0 <= slice_index < slices:
            raise ValueError(f"slice_index must lie in [0, {slices - 1}], got {slice_index}")
        if slice_index is None:
            phase = np.zeros(dataset.shape[2:])
            for j in range(slices):
                phase += np.angle(dataset[state, j])
        else:
            phase = np.angle(dataset[state, slice_index]).astype(np.float64)
        return _image(handle, phase)


def load_phase_states(
    result_path: str | os.PathLike[str], *, slice_indices: slice | Sequence[int] | None = None
) -> tuple[np.ndarray, PhaseImage, tuple[int, ...]]:
    """Phase of every object state in the chosen slices, and their projection.

    Parameters
    ----------
    result_path:
        A result file.
    slice_indices:
        The slices read, as indices or a Python ``slice`` (``slice(2, 6)``: slices 2 to 5);
        default: all.

    Returns
    -------
    phase : np.ndarray
        float32 (states, len(slice_indices), ny, nx): angle(O) of each state and slice [rad].
    image : PhaseImage
        Σ over the chosen slices of the mean phase over states [rad], with the geometry.
    slices : tuple[int, ...]
        The indices of the chosen slices.
    """
    with _open_result(result_path) as handle:
        dataset = handle["object"]
        if dataset.ndim != 4:
            raise ValueError(f"object must be (states, slices, ny, nx), got shape {dataset.shape}")
        slices = int(dataset.shape[1])
        if slice_indices is None:
            chosen = list(range(slices))
        elif isinstance(slice_indices, slice):
            chosen = list(range(slices)[slice_indices])
            if not chosen:
                start, stop = slice_indices.start, slice_indices.stop
                raise ValueError(
                    f"slices {'' if start is None else start}:{'' if stop is None else stop} "
                    f"select none of the result's {slices} slices (0 to {slices - 1})"
                )
        else:
            chosen = [int(j) for j in slice_indices]
        if not chosen or any(not 0 <= j < slices for j in chosen):
            raise ValueError(
                f"slice indices must lie in [0, {slices - 1}] (the result has {slices} "
                f"slices), got {chosen}"
            )
        phase = np.stack([np.angle(dataset[:, j]).astype(np.float32) for j in chosen], axis=1)
        projected = phase.mean(axis=0, dtype=np.float64).sum(axis=0)
        return phase, _image(handle, projected), tuple(chosen)
