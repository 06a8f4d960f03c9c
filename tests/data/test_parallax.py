"""Defocus from the parallax of bright-field images, on simulated SrTiO3."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest

from ptyscope.data.parallax import fit_parallax
from ptyscope.simulation.specimens import SRTIO3_LATTICE_CONSTANT_ANG as A
from ptyscope.simulation.specimens import srtio3_slab
from ptyscope.simulation.stem4d import ProbeSettings, ScanSettings, simulate_4dstem

THICKNESS_ANG = 12 * A  # 47 Å
#: Registration noise of the block displacements, as focus [Å] (measured residuals of the
#: fit are ~0.05 Å on displacements of ~1-3 Å).
NOISE_ANG = 3.0


@cache
def _simulate(defocus_ang: float, tilt_mrad: tuple[float, float] = (0.0, 0.0)):  # type: ignore[no-untyped-def]
    return simulate_4dstem(
        srtio3_slab((5, 5), THICKNESS_ANG),
        ProbeSettings(300e3, 22.0, {"defocus": defocus_ang}),
        ScanSettings((14, 14), (0.45, 0.45), origin_ang=(4.0, 4.0)),
        sampling_ang=0.1,
        slice_thickness_ang=A / 2,
        window_ang=12.8,
        tilt_mrad=tilt_mrad,
        dose_e_per_ang2=1e6,
        seed=1,
    ).dataset


@pytest.mark.parametrize(
    ("defocus_ang", "tilt_mrad"), [(60.0, (0.0, 0.0)), (150.0, (-5.7, 5.7)), (-80.0, (0.0, 0.0))]
)
def test_parallax_focus_lies_within_the_specimen(
    defocus_ang: float, tilt_mrad: tuple[float, float]
) -> None:
    # The bright-field images focus on a plane inside the slab: between the entrance
    # (Δf) and the exit (Δf − t). Large defoci (150 Å: 6 px displacements, beyond half the
    # 8.7 px lattice period) are reached only by the ring-by-ring search.
    fit = fit_parallax(_simulate(defocus_ang, tilt_mrad))
    assert defocus_ang - THICKNESS_ANG - NOISE_ANG <= fit.defocus_ang <= defocus_ang + NOISE_ANG
    # The entrance defocus estimate used by `ptyscope init`: focus + t/2, within t/4.
    assert abs(fit.defocus_ang + THICKNESS_ANG / 2 - defocus_ang) <= THICKNESS_ANG / 4
    # A round probe and the right scan rotation: the general fit is Δf times identity.
    off = fit.matrix_ang - np.eye(2) * np.trace(fit.matrix_ang) / 2
    assert np.abs(off).max() < 0.1 * abs(fit.defocus_ang)


def test_parallax_refuses_a_tiny_scan() -> None:
    dataset = _simulate(60.0).crop_scan(slice(0, 6), slice(0, 14))
    with pytest.raises(ValueError, match=r"at least 8 x 8 positions.*got 6 x 14"):
        fit_parallax(dataset)
