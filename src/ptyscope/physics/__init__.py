"""Physics core: pure, device- and dtype-agnostic functions shared by simulation and
reconstruction. Units are Å, eV, mrad and radians of phase; arrays are (..., y, x) and
pairs are ordered (y, x). See DESIGN.md "Conventions".
"""

from .aberrations import ABERRATION_NAMES, aberration_function, canonical_aberrations
from .constants import ELECTRON_REST_ENERGY_EV, HC_EV_ANG, interaction_constant, wavelength_ang
from .grids import (
    Grid,
    angle_mrad_to_inv_ang,
    detector_grid,
    fft_friendly_size,
    fft_friendly_span,
    inv_ang_to_angle_mrad,
    polar_frequencies,
    spatial_frequencies,
)
from .multislice import (
    detector_offset_ramp,
    extract_patches,
    far_field_intensity,
    fourier_shift,
    multislice_exit_waves,
    multislice_forward,
    split_positions,
)
from .probe import aperture, build_probe, orthogonal_modes, probe_from_fourier, source_modes
from .propagator import fresnel_propagator, propagate
from .transmission import transmission_function

__all__ = [
    "ABERRATION_NAMES",
    "ELECTRON_REST_ENERGY_EV",
    "HC_EV_ANG",
    "Grid",
    "aberration_function",
    "angle_mrad_to_inv_ang",
    "aperture",
    "build_probe",
    "canonical_aberrations",
    "detector_grid",
    "detector_offset_ramp",
    "extract_patches",
    "far_field_intensity",
    "fft_friendly_size",
    "fft_friendly_span",
    "fourier_shift",
    "fresnel_propagator",
    "interaction_constant",
    "inv_ang_to_angle_mrad",
    "multislice_exit_waves",
    "multislice_forward",
    "orthogonal_modes",
    "polar_frequencies",
    "probe_from_fourier",
    "propagate",
    "source_modes",
    "spatial_frequencies",
    "split_positions",
    "transmission_function",
    "wavelength_ang",
]
