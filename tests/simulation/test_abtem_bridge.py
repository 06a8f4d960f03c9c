"""The abTEM bridge: the one place where abTEM's axes and tilt sign are converted.

The mapping tests run everywhere; the comparison against abTEM itself needs the optional
extra (``pip install 'ptyscope[sim]'``) and skips cleanly without it.
"""

from __future__ import annotations

import numpy as np
import pytest

from ptyscope.simulation.abtem_bridge import (
    abtem_patterns_to_ptyscope,
    abtem_tilt_to_ptyscope,
    ptyscope_tilt_to_abtem,
)
from ptyscope.simulation.compare import compare_patterns
from ptyscope.simulation.specimens import SRTIO3_LATTICE_CONSTANT_ANG, srtio3_slab
from ptyscope.simulation.stem4d import ProbeSettings, ScanSettings, simulate_4dstem

A = SRTIO3_LATTICE_CONSTANT_ANG


def test_tilt_mapping_flips_sign_and_pair_order() -> None:
    # abTEM's propagator has exp(−2πi Δz k_x tan t_x); ptyscope's exp(+2πi Δz k_x tan θ_x).
    assert ptyscope_tilt_to_abtem((1.5, -4.0)) == (4.0, -1.5)
    assert abtem_tilt_to_ptyscope((4.0, -1.5)) == (1.5, -4.0)
    for tilt in [(0.0, 5.0), (5.0, 0.0), (-3.2, 7.7)]:
        assert abtem_tilt_to_ptyscope(ptyscope_tilt_to_abtem(tilt)) == tilt


def test_pattern_axes_are_swapped() -> None:
    patterns = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)  # (scan_x, scan_y, k_x, k_y)
    converted = abtem_patterns_to_ptyscope(patterns)
    assert converted.shape == (3, 2, 5, 4)
    assert converted[2, 1, 4, 3] == patterns[1, 2, 3, 4]
    flat = abtem_patterns_to_ptyscope(patterns[0])  # (positions, k_x, k_y)
    assert flat.shape == (3, 5, 4)


def test_compare_patterns_scores() -> None:
    rng = np.random.default_rng(1)
    data = rng.random((2, 2, 8, 8))
    agreement = compare_patterns(data * 1.005, data)
    assert agreement.worst_ncc == pytest.approx(1.0, abs=1e-12)
    assert agreement.worst_intensity_error == pytest.approx(0.005, rel=1e-9)
    flipped = compare_patterns(data[..., ::-1, :], data)
    assert flipped.worst_ncc < 0.9
    with pytest.raises(ValueError, match="must both have shape"):
        compare_patterns(data, data[0])


@pytest.mark.abtem
@pytest.mark.parametrize("tilt", [(0.0, 0.0), (5.0, 0.0), (0.0, 5.0)])
def test_agrees_with_abtem_only_with_the_correct_tilt_mapping(tilt: tuple[float, float]) -> None:
    pytest.importorskip("abtem")
    from ptyscope.simulation.abtem_bridge import simulate_4dstem_abtem

    specimen = srtio3_slab((3, 3), 21 * A)  # SrTiO3 [001], 82 Å
    probe = ProbeSettings(300e3, 22.0)
    scan = ScanSettings((2, 2), (A / 2, A / 2))  # on a Sr column, between, on O / Ti columns
    common = {"sampling_ang": 0.05, "slice_thickness_ang": A / 2}
    reference = simulate_4dstem_abtem(specimen, probe, scan, tilt_mrad=tilt, **common)
    ours = simulate_4dstem(specimen, probe, scan, tilt_mrad=tilt, **common)
    agreement = compare_patterns(ours.dataset.data, reference.dataset.data)
    assert agreement.worst_ncc >= 0.99
    assert agreement.worst_intensity_error <= 0.01
    if tilt != (0.0, 0.0):
        for wrong in [(-tilt[0], -tilt[1]), (tilt[1], tilt[0])]:
            mismatched = simulate_4dstem(specimen, probe, scan, tilt_mrad=wrong, **common)
            score = compare_patterns(mismatched.dataset.data, reference.dataset.data)
            assert score.worst_ncc < 0.9
