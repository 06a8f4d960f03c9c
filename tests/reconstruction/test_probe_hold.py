"""The probe-defocus hold: the k² part of the probe's phase change is removed, nothing else."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ptyscope.config import ReconstructionConfig
from ptyscope.io.datafile import write_dataset
from ptyscope.physics.constants import wavelength_ang
from ptyscope.physics.grids import Grid
from ptyscope.physics.probe import build_probe
from ptyscope.reconstruction.constraints import ProbeDefocusHold
from ptyscope.reconstruction.parameters import PtychoParameters
from ptyscope.reconstruction.run import run_reconstruction

from ._data import A, srtio3

GRID = Grid((72, 72), (0.125, 0.125))
START = {"defocus": 40.0, "C12": 20.0, "phi12": 0.3, "C30": 2e4}


def _probe(**changes: float) -> torch.Tensor:
    return build_probe(GRID, 300e3, 25.0, {**START, **changes})


def _fourier(probe: torch.Tensor) -> torch.Tensor:
    return torch.fft.fft2(torch.fft.ifftshift(probe, dim=(-2, -1)))


def _phase_error(probe: torch.Tensor, expected: torch.Tensor) -> float:
    """rms [rad] of the phase of ψ̃·ψ̃_expected* inside the bright-field disk, after its mean."""
    a, b = _fourier(probe[0]), _fourier(expected[0])
    inside = b.abs() > 0.5 * b.abs().max()
    phase = torch.angle(a[inside] * b[inside].conj() * (b[inside] * a[inside].conj()).sum())
    return float(phase.double().pow(2).mean().sqrt())


def _hold(probe: torch.Tensor) -> torch.Tensor:
    params = PtychoParameters(
        torch.ones(1, 1, 96, 96, dtype=torch.complex64),
        probe.clone(),
        torch.zeros(1, 2),
        torch.zeros(2),
        5.0,
    )
    hold = ProbeDefocusHold(reference_k=_fourier(_probe()[0]), pixel_size_ang=(0.125, 0.125))
    hold.apply(params, 1)
    return params.probe.data


@pytest.mark.parametrize(
    ("changes", "kept"),
    [
        # 8 Å of defocus (0.8 rad at the aperture edge) with 15 Å more astigmatism and
        # three-fold astigmatism, which must stay.
        ({"defocus": 48.0, "C12": 35.0, "C23": 3e3}, {"C12": 35.0, "C23": 3e3}),
        # 60 Å of defocus and 100 Å more astigmatism: several radians at the edge of the
        # disk, so the phase change wraps; the fit works on its unwrapped steps.
        ({"defocus": 100.0, "C12": 120.0}, {"C12": 120.0}),
    ],
)
def test_the_hold_removes_the_defocus_change_and_keeps_the_other_aberrations(
    changes: dict[str, float], kept: dict[str, float]
) -> None:
    drifted = _probe(**changes)
    # The change is there: 8 Å is 0.8 rad at the disk's edge, 0.23 rad rms about the mean.
    assert _phase_error(drifted, _probe(**kept)) > 0.2
    held = _hold(drifted)
    # Left: the drifted probe's other aberrations at the starting defocus, up to 0.02 rad
    # (the probe's phase is float32 and the disk's soft edge weighs in).
    assert _phase_error(held, _probe(**kept)) < 0.02
    torch.testing.assert_close(held.abs().pow(2).sum(), drifted.abs().pow(2).sum())


def test_the_hold_leaves_a_shifted_probe_shifted() -> None:
    # A shift is a linear phase in k; holding the defocus must not turn it into one.
    shift = 0.4  # Å along x
    kx = torch.fft.fftfreq(72, d=0.125, dtype=torch.float64)[None, :]
    ramp = torch.polar(torch.ones_like(kx), -2 * torch.pi * kx * shift).to(torch.complex64)
    shifted = torch.fft.fftshift(torch.fft.ifft2(_fourier(_probe(defocus=45.0)) * ramp))
    expected = torch.fft.fftshift(torch.fft.ifft2(_fourier(_probe()) * ramp))
    assert _phase_error(_hold(shifted), expected) < 0.02


def test_a_held_reconstruction_keeps_its_defocus_and_resumes_exactly(tmp_path: Path) -> None:
    sim = srtio3(2, scan_shape=8)
    write_dataset(tmp_path / "data.h5", sim.dataset)

    def config(name: str, hold: bool) -> ReconstructionConfig:
        return ReconstructionConfig.model_validate(
            {
                "data": {"path": str(tmp_path / "data.h5")},
                "probe": {"defocus_ang": 60.0, "start": 1, "hold_defocus": hold, "lr": 3e-2},
                "object": {"slices": 2, "slice_thickness_ang": A},
                "optimization": {"iterations": 6, "batch_size": 16, "checkpoint_every": 2},
                "output": {"path": str(tmp_path / f"{name}.h5")},
            }
        )

    def defocus_change(probe: torch.Tensor, start: torch.Tensor, pixel: float) -> float:
        """Defocus [Å] of the phase change over the bright field: least squares with
        weights |ψ̃₀||ψ̃| beside a constant, the shifts and two-fold astigmatism."""
        a, b = _fourier(probe[0]).cdouble(), _fourier(start[0]).cdouble()
        k = torch.fft.fftfreq(probe.shape[-1], d=pixel, dtype=torch.float64)
        ky, kx = k[:, None].expand(len(k), len(k)), k[None, :].expand(len(k), len(k))
        inside = (b.abs() > 0.1 * b.abs().max()) & (a.abs() > 0.01 * b.abs().max())
        columns = (torch.ones_like(ky), ky, kx, ky**2 + kx**2, kx**2 - ky**2, 2 * kx * ky)
        design = torch.stack([c[inside] for c in columns], dim=1)
        weight = (a * b.conj()).abs()[inside].sqrt()
        phase = torch.angle(a * b.conj())[inside]
        solution = torch.linalg.lstsq(design * weight[:, None], phase * weight).solution
        return float(solution[3]) / (np.pi * wavelength_ang(300e3))

    free = run_reconstruction(config("free", False), progress=False)
    pixel = free.setup.pixel_size_ang[0]
    start = build_probe(
        Grid(free.setup.params.probe.shape[-2:], free.setup.pixel_size_ang),
        300e3,
        22.0,
        {"defocus": 60.0},
    )
    held = run_reconstruction(config("held", True), progress=False)
    drift_free = defocus_change(free.setup.params.probe.data, start, pixel)
    drift_held = defocus_change(held.setup.params.probe.data, start, pixel)
    assert abs(drift_free) > 0.5, drift_free  # a fast probe step moves the focus
    assert abs(drift_held) < 0.05 * abs(drift_free), (drift_held, drift_free)
    run_reconstruction(config("parts", True), progress=False, stop_after=3)
    resumed = run_reconstruction(config("parts", True), progress=False, resume=True)
    assert torch.equal(resumed.setup.params.probe.data, held.setup.params.probe.data)
    assert torch.equal(resumed.setup.params.object.data, held.setup.params.object.data)
