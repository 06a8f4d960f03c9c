"""Frozen-phonon models: covariance, Einstein limit and exact mode frequencies."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from ptyscope.simulation.phonons import (
    BOLTZMANN_EV_PER_K,
    HarmonicModel,
    einstein_displacements,
    spring_model,
)

A_CU = 3.61  # Å
K_NN = 1.5  # eV/Å²


@pytest.fixture(scope="module")
def fcc_model() -> HarmonicModel:
    cu = bulk("Cu", "fcc", a=A_CU, cubic=True).repeat(2)  # 32 atoms, periodic
    return spring_model(cu, [(0.5 * A_CU * math.sqrt(2) + 0.05, K_NN)])


def test_fcc_frequencies_match_the_analytic_zone_boundary(fcc_model: HarmonicModel) -> None:
    """FCC with nearest-neighbour central springs k: at X = (2π/a)(1,0,0),
    ω_L² = 8k/m and ω_T² = 4k/m (derived from D(q) = (k/m) Σ_R (1 − cos q·R) e_R⊗e_R).
    The 2×2×2 conventional supercell contains X, so both must be among its modes."""
    nu = fcc_model.mode_frequencies_thz()
    mass_kg = fcc_model.masses_amu[0] * 1.66053906660e-27
    k_si = K_NN * 1.602176634e-19 / 1e-20  # eV/Å² -> J/m²
    for factor in (8, 4):
        expected_thz = math.sqrt(factor * k_si / mass_kg) / (2 * math.pi) / 1e12
        assert float(np.min(np.abs(nu - expected_thz))) < 1e-9 * expected_thz
    assert float(nu.max()) == pytest.approx(math.sqrt(8 * k_si / mass_kg) / (2e12 * math.pi))
    assert int(np.sum(nu < 1e-9)) == 3  # only the rigid translations


def test_harmonic_snapshots_sample_kt_times_pseudo_inverse(fcc_model: HarmonicModel) -> None:
    temperature = 300.0
    exact = fcc_model.covariance(temperature)
    # The exact covariance inverts Φ on the non-rigid subspace: Φ C Φ = k_BT Φ.
    phi = fcc_model.force_constants
    kt = BOLTZMANN_EV_PER_K * temperature
    np.testing.assert_allclose(phi @ exact @ phi, kt * phi, atol=1e-12)

    samples = 40_000
    u = fcc_model.sample(temperature, samples, np.random.default_rng(3)).reshape(samples, -1)
    sample_cov = u.T @ u / samples
    # Each estimate has standard error sqrt((C_ii C_jj + C_ij²) / M); allow 5 of them.
    var = np.diag(exact)
    stderr = np.sqrt((var[:, None] * var[None, :] + exact**2) / samples)
    assert float(np.max(np.abs(sample_cov - exact) / stderr)) < 5.0
    # Nearest neighbours move together along their bond (the Einstein model gives 0):
    # atoms 0 and 1 of the cubic fcc cell are bonded along (0, 1, 1)/√2.
    bond = np.array([0.0, 1.0, 1.0]) / math.sqrt(2)
    along = bond @ exact[0:3, 3:6] @ bond / (bond @ exact[0:3, 0:3] @ bond)
    assert along > 0.1
    # Snapshots keep the centre of mass fixed (equal masses).
    assert float(np.abs(u.reshape(samples, -1, 3).mean(axis=1)).max()) < 1e-12


def test_sample_covariance_error_falls_as_one_over_sqrt_m(fcc_model: HarmonicModel) -> None:
    exact = fcc_model.covariance(300.0)
    errors = []
    for samples in (500, 8_000):
        u = fcc_model.sample(300.0, samples, np.random.default_rng(11)).reshape(samples, -1)
        errors.append(np.linalg.norm(u.T @ u / samples - exact) / np.linalg.norm(exact))
    # 16× more samples -> 4× smaller error (statistical, so ±40%).
    assert errors[0] / errors[1] == pytest.approx(4.0, rel=0.4)


def test_einstein_limit_is_uncorrelated_with_requested_sigma() -> None:
    atoms = Atoms("SrTiO", positions=np.zeros((3, 3)))
    sigma = {"Sr": 0.08, "Ti": 0.06, "O": 0.1}
    samples = 40_000
    u = einstein_displacements(atoms, sigma, samples, np.random.default_rng(5))
    assert u.shape == (samples, 3, 3)
    flat = u.reshape(samples, -1)
    cov = flat.T @ flat / samples
    expected = np.repeat([0.08**2, 0.06**2, 0.1**2], 3)
    # variance estimate: relative standard error sqrt(2/M) = 0.7%; allow 5 of them
    np.testing.assert_allclose(np.diag(cov), expected, rtol=5 * math.sqrt(2 / samples))
    corr = cov / np.sqrt(np.outer(np.diag(cov), np.diag(cov)))
    off = corr - np.diag(np.diag(corr))
    assert float(np.abs(off).max()) < 5 / math.sqrt(samples)


def test_unstable_or_bad_models_are_clear_errors() -> None:
    # Simple cubic with only nearest-neighbour central springs has floppy shear modes.
    sc = Atoms("Cu", cell=[2.5, 2.5, 2.5], pbc=True).repeat(3)
    with pytest.raises(ValueError, match="not mechanically stable"):
        spring_model(sc, [(2.6, 1.0)])
    # Adding the second shell (face diagonals) stabilises it.
    stable = spring_model(sc, [(2.6, 1.0), (3.6, 0.5)])
    assert int(np.sum(stable.mode_frequencies_thz() < 1e-9)) == 3
    with pytest.raises(ValueError, match="shells must increase in distance"):
        spring_model(sc, [(3.6, 1.0), (2.6, 0.5)])
    with pytest.raises(ValueError, match="temperature_k must be > 0"):
        stable.sample(-5.0, 10, np.random.default_rng(0))
    with pytest.raises(TypeError, match=r"generator must be a numpy\.random\.Generator"):
        stable.sample(300.0, 10, 42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"missing \['O'\]"):
        einstein_displacements(Atoms("SrO"), {"Sr": 0.1}, 5, np.random.default_rng(0))
