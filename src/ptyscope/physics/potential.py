"""Electron scattering factors and projected atomic potentials.

The electrostatic potential of a neutral atom follows from its electron scattering factor
f_e(g) [Å] (Kirkland 2020, Eq. 5.9):

    V(r) = (h² / (2π m₀ e)) ∫ f_e(|g|) exp(2πi g·r) d³g,    h²/(2π m₀ e) = 47.878 V·Å²

Projecting along the beam (z) keeps the g_z = 0 plane, so on a periodic grid of area A the
projected potential of atoms at (y_j, x_j) is a Fourier series

    v_z(r) = (1/A) Σ_q  47.878 · Σ_species f_e(|q|) · Σ_j exp(−2πi q·r_j) · exp(2πi q·r)   [V·Å]

evaluated exactly for every frequency of the grid (no real-space cut-off radius, no
interpolation of atom positions; periodic images are included by construction). The
structure factor Σ_j exp(−2πi q·r_j) of each species is separable in (q_y, q_x), so it is
one complex matrix product E_y (ny × N) · E_x (N × nx) per species.

f_e is the five-term parameterisation of Lobato & Van Dyck (2014),

    f_e(g) = Σ_i a_i (2 + b_i g²) / (1 + b_i g²)²,

whose published parameters (Z = 1..103) are stored in ``data/lobato_2014.json``.

References
----------
I. Lobato and D. Van Dyck, Acta Cryst. A70, 636-649 (2014), doi:10.1107/S205327331401643X.
E. J. Kirkland, *Advanced Computing in Electron Microscopy*, 3rd ed. (Springer, 2020).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from importlib import resources

import torch

from .constants import ELECTRON_REST_ENERGY_EV, HC_EV_ANG
from .grids import Grid

__all__ = [
    "POTENTIAL_PREFACTOR_V_ANG2",
    "available_elements",
    "electron_scattering_factor",
    "projected_potential",
    "scattering_factor_parameters",
]

#: h²/(2π m₀ e) [V·Å²] = (hc)²/(2π m₀c²) with hc in eV·Å and m₀c² in eV (≈ 47.878).
POTENTIAL_PREFACTOR_V_ANG2: float = HC_EV_ANG**2 / (2 * math.pi * ELECTRON_REST_ENERGY_EV)

#: Atoms per chunk of the structure-factor matrix product (bounds the (ny + nx) × chunk
#: complex temporaries).
_ATOM_CHUNK = 4096


@functools.cache
def _table() -> dict[str, tuple[tuple[float, ...], tuple[float, ...]]]:
    text = resources.files("ptyscope.physics").joinpath("data/lobato_2014.json").read_text()
    elements = json.loads(text)["elements"]
    return {
        symbol: (tuple(entry["a_ang"]), tuple(entry["b_ang2"]))
        for symbol, entry in elements.items()
    }


def available_elements() -> list[str]:
    """Chemical symbols with tabulated scattering factors (H to Lr, Z = 1..103)."""
    return list(_table())


def scattering_factor_parameters(symbol: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Lobato & Van Dyck (2014) parameters of one element.

    Returns
    -------
    (a, b):
        Five a_i [Å] and five b_i [Å²].
    """
    table = _table()
    if symbol not in table:
        raise ValueError(
            f"symbol must be a chemical symbol with tabulated scattering factors (H..Lr), "
            f"got {symbol!r}"
        )
    return table[symbol]


def electron_scattering_factor(symbol: str, g_inv_ang: torch.Tensor) -> torch.Tensor:
    """Electron scattering factor f_e(g) [Å] of a neutral atom (Lobato & Van Dyck 2014).

    Parameters
    ----------
    symbol:
        Chemical symbol, e.g. ``"Sr"``.
    g_inv_ang:
        Real tensor of any shape: scattering vector modulus g = 2 sin θ / λ [Å⁻¹]
        (no 2π factor).

    Returns
    -------
    torch.Tensor
        f_e(g) [Å], same shape, dtype and device as ``g_inv_ang``.

    Examples
    --------
    >>> round(float(electron_scattering_factor("H", torch.zeros(()))), 4)   # a₀ = 0.5292 Å
    0.5292
    """
    a, b = scattering_factor_parameters(symbol)
    g2 = g_inv_ang * g_inv_ang
    result = torch.zeros_like(g_inv_ang)
    for a_i, b_i in zip(a, b, strict=True):
        denominator = 1.0 + b_i * g2
        result = result + a_i * (2.0 + b_i * g2) / (denominator * denominator)
    return result


@functools.lru_cache(maxsize=16)
def _form_factor(symbol: str, grid: Grid, device: torch.device) -> torch.Tensor:
    """47.878 · f_e(|q|) on the grid's frequencies, float64 (ny, nx) [V·Å³]; cached."""
    qy = torch.fft.fftfreq(grid.shape[0], d=grid.pixel_size_ang[0], dtype=torch.float64)
    qx = torch.fft.fftfreq(grid.shape[1], d=grid.pixel_size_ang[1], dtype=torch.float64)
    q = torch.sqrt(qy[:, None] ** 2 + qx[None, :] ** 2)
    return (POTENTIAL_PREFACTOR_V_ANG2 * electron_scattering_factor(symbol, q)).to(device)


def projected_potential(
    positions_yx_ang: torch.Tensor,
    symbols: Sequence[str],
    grid: Grid,
    *,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Projected potential v_z [V·Å] of atoms on a periodic grid (exact Fourier series).

    Parameters
    ----------
    positions_yx_ang:
        Real tensor (N, 2): (y, x) of each atom [Å], relative to the grid's pixel (0, 0).
        Positions outside the field of view wrap around (the grid is periodic). Its device
        is the device of the result.
    symbols:
        N chemical symbols.
    grid:
        Sampling grid; its extent is the period of the potential.
    dtype:
        Real dtype of the result (float32 or float64). Structure-factor phases are always
        formed in float64, so large fields of view keep sub-picometre accuracy.

    Returns
    -------
    torch.Tensor
        Real tensor (ny, nx) [V·Å]; zero (vacuum) when N = 0.

    Examples
    --------
    >>> from ptyscope.physics.grids import Grid
    >>> g = Grid((64, 64), (0.1, 0.1))
    >>> v = projected_potential(torch.tensor([[3.2, 3.2]]), ["O"], g)
    >>> tuple(int(i) for i in divmod(int(v.argmax()), 64))
    (32, 32)
    """
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    positions = torch.as_tensor(positions_yx_ang)
    if positions.ndim != 2 or positions.shape[-1] != 2:
        raise ValueError(
            f"positions_yx_ang must have shape (N, 2) ordered (y, x), got {tuple(positions.shape)}"
        )
    if positions.shape[0] != len(symbols):
        raise ValueError(
            f"symbols must name one element per atom: {positions.shape[0]} positions, "
            f"{len(symbols)} symbols"
        )
    if not bool(torch.isfinite(positions).all()):
        raise ValueError("positions_yx_ang must be finite, got NaN or Inf entries")
    device = positions.device
    complex_dtype = torch.complex64 if dtype == torch.float32 else torch.complex128
    ny, nx = grid.shape
    ey, ex = grid.extent_ang
    qy = torch.fft.fftfreq(ny, d=grid.pixel_size_ang[0], device=device, dtype=torch.float64)
    qx = torch.fft.fftfreq(nx, d=grid.pixel_size_ang[1], device=device, dtype=torch.float64)
    # Reduce positions into the cell: q·L is an integer number of cycles on this grid.
    positions = positions.to(torch.float64)
    wrapped = torch.stack(
        (torch.remainder(positions[:, 0], ey), torch.remainder(positions[:, 1], ex)), dim=1
    )
    spectrum = torch.zeros((ny, nx), dtype=complex_dtype, device=device)
    for symbol in sorted(set(symbols)):
        index = torch.tensor([i for i, s in enumerate(symbols) if s == symbol], device=device)
        structure = torch.zeros((ny, nx), dtype=complex_dtype, device=device)
        for start in range(0, int(index.numel()), _ATOM_CHUNK):
            chunk = wrapped[index[start : start + _ATOM_CHUNK]]
            phase_y = torch.exp(-2j * math.pi * qy[:, None] * chunk[None, :, 0])  # (ny, N)
            phase_x = torch.exp(-2j * math.pi * chunk[:, 1, None] * qx[None, :])  # (N, nx)
            structure = structure + (phase_y.to(complex_dtype) @ phase_x.to(complex_dtype))
        spectrum = spectrum + structure * _form_factor(symbol, grid, device).to(dtype)
    # v(r) = (1/A) Σ_q F(q) e^{2πi q·r} = (ny·nx / A) · ifft2(F)
    potential: torch.Tensor = torch.fft.ifft2(spectrum).real * (ny * nx / (ey * ex))
    return potential.to(dtype)
