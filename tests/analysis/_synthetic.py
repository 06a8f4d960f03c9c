"""Synthetic phase images of atomic columns: 2D Gaussians at known (sub-pixel) positions."""

from __future__ import annotations

import numpy as np


def gaussian_columns(
    positions_ang: np.ndarray,
    amplitudes: np.ndarray | float,
    shape: tuple[int, int],
    pixel_size_ang: tuple[float, float],
    sigma_ang: float,
    origin_ang: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """Σ_k A_k exp(−|r − p_k|²/(2σ²)) sampled at pixel centres r_ij = origin + (i·dy, j·dx).

    Each Gaussian is evaluated out to 6σ (its tail beyond is < 1e-7 of the peak).
    """
    positions = np.asarray(positions_ang, dtype=np.float64)
    heights = np.broadcast_to(np.asarray(amplitudes, dtype=np.float64), positions.shape[:1])
    image = np.zeros(shape)
    y = origin_ang[0] + np.arange(shape[0]) * pixel_size_ang[0]
    x = origin_ang[1] + np.arange(shape[1]) * pixel_size_ang[1]
    reach = 6.0 * sigma_ang
    for (py, px), height in zip(positions, heights, strict=True):
        rows = np.nonzero(np.abs(y - py) <= reach)[0]
        cols = np.nonzero(np.abs(x - px) <= reach)[0]
        if rows.size == 0 or cols.size == 0:
            continue
        gy = np.exp(-((y[rows] - py) ** 2) / (2 * sigma_ang**2))
        gx = np.exp(-((x[cols] - px) ** 2) / (2 * sigma_ang**2))
        image[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] += height * np.outer(gy, gx)
    return image


def square_grid(n: int, spacing_ang: float, margin_ang: float) -> np.ndarray:
    """(n², 2) positions of an n × n square grid starting at (margin, margin) [Å]."""
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    return margin_ang + spacing_ang * np.column_stack([i.ravel(), j.ravel()]).astype(np.float64)
