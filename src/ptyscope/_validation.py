"""Argument checks shared by public entry points.

Every failure raises :class:`ValueError` (or :class:`TypeError`) with one message naming
the parameter, the rule and the value received, e.g.
``"energy_ev must be > 0 eV, got -300000.0"``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = [
    "require_finite",
    "require_in_range",
    "require_int_pair",
    "require_positive",
    "require_positive_pair",
    "require_shape",
]


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        if value.numel() == 1:
            return repr(value.detach().cpu().item())
        return f"tensor of shape {tuple(value.shape)}"
    return repr(value)


def _suffix(unit: str) -> str:
    return f" {unit}" if unit else ""


def require_finite(name: str, value: float | torch.Tensor) -> None:
    """Raise ``ValueError`` unless every element of ``value`` is finite."""
    if isinstance(value, torch.Tensor):
        if not bool(torch.isfinite(value).all()):
            raise ValueError(f"{name} must be finite, got {_describe(value)}")
    elif not math.isfinite(float(value)):
        raise ValueError(f"{name} must be finite, got {value!r}")


def require_positive(name: str, value: float | torch.Tensor, unit: str = "") -> None:
    """Raise ``ValueError`` unless every element of ``value`` is finite and > 0."""
    require_finite(name, value)
    ok = bool((value > 0).all()) if isinstance(value, torch.Tensor) else float(value) > 0
    if not ok:
        raise ValueError(f"{name} must be > 0{_suffix(unit)}, got {_describe(value)}")


def require_positive_pair(
    name: str, value: float | Sequence[float], unit: str = ""
) -> tuple[float, float]:
    """Return ``value`` as a ``(y, x)`` pair of floats > 0.

    A single number (Python, NumPy or 0-dim tensor scalar) is used for both axes; a tuple,
    list or 1-D array must hold exactly two (as read back from an HDF5 attribute).
    """
    try:
        if isinstance(value, tuple | list):
            pair = tuple(value)
        elif isinstance(value, np.ndarray) and value.ndim == 1:
            pair = tuple(value.tolist())
        else:
            scalar = float(value)  # type: ignore[arg-type]  # NumPy/tensor scalars too
            pair = (scalar, scalar)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number or a (y, x) pair, got {value!r}") from None
    if len(pair) != 2:
        raise ValueError(f"{name} must be a number or a (y, x) pair, got {value!r}")
    for v in pair:
        require_positive(name, float(v), unit)
    return float(pair[0]), float(pair[1])


def require_in_range(
    name: str,
    value: float,
    low: float,
    high: float,
    unit: str = "",
    *,
    inclusive: bool = True,
) -> None:
    """Raise ``ValueError`` unless ``low <= value <= high`` (or strict when not inclusive)."""
    require_finite(name, value)
    v = float(value)
    ok = low <= v <= high if inclusive else low < v < high
    if not ok:
        lo, hi = ("[", "]") if inclusive else ("(", ")")
        raise ValueError(f"{name} must lie in {lo}{low}, {high}{hi}{_suffix(unit)}, got {value!r}")


def require_int_pair(name: str, value: Sequence[int], *, minimum: int = 1) -> tuple[int, int]:
    """Return ``value`` as ``(int, int)``; raise unless it is two integers >= ``minimum``."""
    try:
        pair = tuple(value)
    except TypeError:
        raise TypeError(f"{name} must be a pair of integers (ny, nx), got {value!r}") from None
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
        raise TypeError(f"{name} must be a pair of integers (ny, nx), got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{name} entries must be >= {minimum}, got {value!r}")
    return int(pair[0]), int(pair[1])


def require_shape(
    name: str, tensor: torch.Tensor, pattern: str, shape: Sequence[int | None]
) -> None:
    """Raise ``ValueError`` unless ``tensor.shape`` matches ``shape`` (``None`` = any size).

    ``pattern`` is the human-readable axis description used in the message,
    e.g. ``"(modes, ny, nx)"``.
    """
    actual = tuple(tensor.shape)
    if len(actual) != len(shape) or any(
        want is not None and want != got for want, got in zip(shape, actual, strict=False)
    ):
        raise ValueError(f"{name} must have shape {pattern}, got {actual}")
