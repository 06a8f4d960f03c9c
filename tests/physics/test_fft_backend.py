"""The multislice FFTs (FFTW where pyFFTW is installed, torch otherwise) against numpy's."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from ptyscope.physics import fft_backend
from ptyscope.physics.multislice_autograd import far_field_power

SHAPES = [(98, 98), (1, 1, 98, 98), (3, 2, 5, 7, 6), (4, 32, 30)]
#: float32 round-off of a transform of n points: ~ ε·log2(n), with margin
TOLERANCE = {torch.complex64: 2e-5, torch.complex128: 1e-12}


def _random(shape: tuple[int, ...], dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, dtype=dtype, generator=generator)


def _relative(a: torch.Tensor, b: np.ndarray) -> float:
    return float(np.abs(a.numpy() - b).max() / np.abs(b).max())


@pytest.fixture(params=["torch", "fftw"])
def library(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test once with torch's transforms and once with FFTW's (CI installs the [fft]
    extra; without pyFFTW the FFTW case skips)."""
    if request.param == "fftw":
        pyfftw = pytest.importorskip("pyfftw")
        monkeypatch.setattr(fft_backend, "_PYFFTW", pyfftw)
    else:
        monkeypatch.setattr(fft_backend, "_PYFFTW", None)
    return str(request.param)


def test_fftw_is_the_default_where_installed_and_fftw_needs_pyfftw(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    installed = importlib.util.find_spec("pyfftw") is not None
    monkeypatch.delenv("PTYSCOPE_FFT", raising=False)
    assert fft_backend._choose()[0] == ("fftw" if installed else "torch")
    monkeypatch.setenv("PTYSCOPE_FFT", "fftw")
    if installed:
        assert fft_backend._choose()[0] == "fftw"
    monkeypatch.setattr(fft_backend, "_load_fftw", lambda: None)  # as without pyFFTW
    with pytest.raises(ImportError, match="PTYSCOPE_FFT=fftw needs pyFFTW"):
        fft_backend._choose()
    monkeypatch.delenv("PTYSCOPE_FFT")
    assert fft_backend._choose() == ("torch", None)


def test_the_provenance_names_the_transforms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fft_backend, "BACKEND", "torch")
    assert fft_backend.describe() == "torch"
    pyfftw = pytest.importorskip("pyfftw")
    monkeypatch.setattr(fft_backend, "BACKEND", "fftw")
    monkeypatch.setattr(fft_backend, "_PYFFTW", pyfftw)
    monkeypatch.setattr(fft_backend, "PLANNER", "estimate")
    monkeypatch.setattr(fft_backend, "WISDOM", None)
    assert fft_backend.describe() == f"fftw {pyfftw.__version__} (estimate)"
    monkeypatch.setattr(fft_backend, "PLANNER", "measure")
    monkeypatch.setattr(fft_backend, "WISDOM", Path("/cache/w.json"))
    assert fft_backend.describe() == f"fftw {pyfftw.__version__} (measure, wisdom /cache/w.json)"
    monkeypatch.setenv("HOME", "/home/someone")  # results are shared: no user names in them
    monkeypatch.setattr(fft_backend, "WISDOM", Path("/home/someone/.cache/w.json"))
    assert fft_backend.describe() == f"fftw {pyfftw.__version__} (measure, wisdom ~/.cache/w.json)"


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("shape", SHAPES)
def test_transforms_are_numpys_unnormalised_sums(
    shape: tuple[int, ...], dtype: torch.dtype, library: str
) -> None:
    x = _random(shape, dtype)
    pixels = shape[-2] * shape[-1]
    expected_forward = np.fft.fft2(x.numpy())
    expected_inverse = np.fft.ifft2(x.numpy()) * pixels  # numpy's F⁻¹ carries 1/N
    assert _relative(fft_backend.fft2(x), expected_forward) < TOLERANCE[dtype]
    assert _relative(fft_backend.ifft2(x), expected_inverse) < TOLERANCE[dtype]
    out = torch.empty_like(x)
    assert fft_backend.fft2(x, out=out) is out
    assert _relative(out, expected_forward) < TOLERANCE[dtype]
    in_place = x.clone()
    fft_backend.ifft2(in_place, out=in_place)
    assert _relative(in_place, expected_inverse) < TOLERANCE[dtype]
    assert torch.equal(x, _random(shape, dtype))  # the input is left alone out of place


def test_round_trip_is_n_times_the_input(library: str) -> None:
    x = _random((8, 4, 98, 98), torch.complex64)
    back = fft_backend.ifft2(fft_backend.fft2(x)) / (98 * 98)
    assert float((back - x).abs().max()) < 1e-5


def test_tensors_fftw_cannot_take_go_to_torch_with_the_same_result(library: str) -> None:
    x = _random((6, 40, 40), torch.complex64)
    expected = np.fft.fft2(x.numpy())
    transposed = x.transpose(-2, -1)  # not contiguous
    assert _relative(fft_backend.fft2(transposed), np.fft.fft2(transposed.numpy())) < 2e-5
    conjugate = x.conj()  # a conjugate view
    assert _relative(fft_backend.fft2(conjugate), np.fft.fft2(np.conj(x.numpy()))) < 2e-5
    # one element off the allocation's alignment: FFTW's plan would refuse it
    flat = torch.zeros(x.numel() + 1, dtype=x.dtype)
    shifted = flat[1:].view(x.shape)
    shifted.copy_(x)
    assert _relative(fft_backend.fft2(shifted), expected) < 2e-5
    # real input: torch's transform, promoted to complex
    real = torch.randn(3, 16, 16, generator=torch.Generator().manual_seed(1))
    assert _relative(fft_backend.fft2(real), np.fft.fft2(real.numpy())) < 2e-5


def test_inside_torch_transforms_fftw_does_nothing(library: str) -> None:
    x = _random((4, 98, 98), torch.complex64)
    with fft_backend.fftw_log() as (counts, _):
        with fft_backend.torch_transforms():
            inside = fft_backend.fft2(x)
        after = fft_backend.fft2(x)
    assert sum(counts.values()) == (1 if library == "fftw" else 0)
    assert torch.allclose(inside, after, rtol=1e-5, atol=1e-4)


def test_threads_get_their_own_plans_and_the_right_answers(library: str) -> None:
    inputs = [_random((16, 64, 64), torch.complex64, seed) for seed in range(4)]
    expected = [np.fft.fft2(x.numpy()) for x in inputs]
    errors: list[float] = [1.0] * len(inputs)

    def work(i: int) -> None:
        worst = 0.0
        for _ in range(20):
            worst = max(worst, _relative(fft_backend.fft2(inputs[i]), expected[i]))
        errors[i] = worst

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert max(errors) < 2e-5


def test_gradients_are_the_adjoint_transforms(library: str) -> None:
    x = _random((2, 5, 6), torch.complex128).requires_grad_()
    assert torch.autograd.gradcheck(fft_backend.fft2, (x,))
    assert torch.autograd.gradcheck(fft_backend.ifft2, (x,))
    with pytest.raises(ValueError, match="out must be None when the input requires a gradient"):
        fft_backend.fft2(x, out=torch.empty_like(x))


def test_far_field_power_is_the_mode_summed_orthonormal_intensity(library: str) -> None:
    waves = _random((3, 2, 4, 98, 98), torch.complex64)
    expected = (torch.fft.fft2(waves, norm="ortho").abs() ** 2).sum(dim=2)
    power = far_field_power(waves)
    assert power.shape == (3, 2, 98, 98)
    assert float((power - expected).abs().max() / expected.max()) < 2e-5
    small = _random((2, 1, 3, 5, 4), torch.complex128).requires_grad_()
    assert torch.autograd.gradcheck(far_field_power, (small,))


def test_an_unknown_backend_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PTYSCOPE_FFT", "cufft")
    with pytest.raises(
        ValueError, match="PTYSCOPE_FFT must be one of auto, torch, fftw, got 'cufft'"
    ):
        fft_backend._choose()
    monkeypatch.setenv("PTYSCOPE_FFT", "torch")
    assert fft_backend._choose() == ("torch", None)
    monkeypatch.setenv("PTYSCOPE_FFTW_PLANNER", "exhaustive")
    with pytest.raises(
        ValueError,
        match="PTYSCOPE_FFTW_PLANNER must be one of measure, patient, estimate, got 'exhaustive'",
    ):
        fft_backend._setting("PTYSCOPE_FFTW_PLANNER", fft_backend._PLANNERS)
    monkeypatch.delenv("PTYSCOPE_FFTW_PLANNER")
    assert fft_backend._setting("PTYSCOPE_FFTW_PLANNER", fft_backend._PLANNERS) == "measure"


def test_only_the_timed_planners_keep_wisdom_and_where(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("PTYSCOPE_FFTW_WISDOM", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert fft_backend._wisdom_path("fftw", "estimate") is None
    assert fft_backend._wisdom_path("torch", "measure") is None
    default = fft_backend._wisdom_path("fftw", "measure")
    assert default is not None and default.parent == tmp_path / "ptyscope"
    assert default.name.startswith("fftw-wisdom-") and default.suffix == ".json"
    assert fft_backend._wisdom_path("fftw", "patient") == default
    for off in ("off", "", " None "):
        monkeypatch.setenv("PTYSCOPE_FFTW_WISDOM", off)
        assert fft_backend._wisdom_path("fftw", "measure") is None
    monkeypatch.setenv("PTYSCOPE_FFTW_WISDOM", str(tmp_path / "mine.json"))
    assert fft_backend._wisdom_path("fftw", "patient") == tmp_path / "mine.json"


#: One transform, checked against numpy's; prints its digest and describe().
_TRANSFORM = """
import hashlib, numpy, torch
torch.set_num_threads(1)
from ptyscope.physics import fft_backend
x = torch.randn((6, 48, 50), dtype=torch.complex64, generator=torch.Generator().manual_seed(3))
y = fft_backend.fft2(x).numpy()
expected = numpy.fft.fft2(x.numpy())
assert numpy.abs(y - expected).max() < 2e-5 * numpy.abs(expected).max()
print(hashlib.sha1(y.tobytes()).hexdigest(), fft_backend.describe(), sep="|")
"""

#: Whether FFTW can make the plan of _TRANSFORM from wisdom alone (FFTW_WISDOM_ONLY),
#: before and after reading the file given as argv[1].
_FROM_WISDOM_ONLY = """
import sys, pathlib, pyfftw
from ptyscope.physics import fft_backend

def plan():
    a = pyfftw.empty_aligned((6, 48, 50), dtype="complex64")
    b = pyfftw.empty_aligned((6, 48, 50), dtype="complex64")
    try:
        pyfftw.FFTW(a, b, axes=(-2, -1), flags=("FFTW_MEASURE", "FFTW_WISDOM_ONLY"), threads=1)
    except RuntimeError:
        return "no"
    return "yes"

before = plan()
fft_backend._read_wisdom(pathlib.Path(sys.argv[1]), complain=True)
print(before, plan())
"""


def _python(
    code: str, env: dict[str, str], *args: str, strict: bool = True
) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter (FFTW's wisdom is process-wide, and the planner is
    read at import); with ``strict`` a RuntimeWarning ends it."""
    warnings = ["-W", "error::RuntimeWarning"] if strict else []
    return subprocess.run(
        [sys.executable, *warnings, "-c", code, *args],
        env={**os.environ, "PTYSCOPE_FFT": "fftw", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_measured_plan_is_kept_and_every_later_process_uses_it(tmp_path: Path) -> None:
    pytest.importorskip("pyfftw")
    wisdom = tmp_path / "cache" / "wisdom.json"
    env = {"PTYSCOPE_FFTW_PLANNER": "measure", "PTYSCOPE_FFTW_WISDOM": str(wisdom)}
    first = _python(_TRANSFORM, env)
    assert first.returncode == 0, first.stderr
    digest, described = first.stdout.strip().split("|")
    assert described.endswith(f"(measure, wisdom {wisdom})")
    stored = json.loads(wisdom.read_text())
    assert sorted(stored) == sorted(fft_backend._PRECISIONS)
    assert "fftwf_wisdom" in stored["single"]  # complex64: single precision
    written = wisdom.read_bytes()
    # FFTW can rebuild the measured plan from the file alone, and not without it
    check = _python(_FROM_WISDOM_ONLY, {}, str(wisdom))
    assert check.returncode == 0, check.stderr
    assert check.stdout.split() == ["no", "yes"]
    # the next process takes the plan from the file: same bits, nothing new to write
    second = _python(_TRANSFORM, env)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip().split("|")[0] == digest
    assert wisdom.read_bytes() == written


def test_a_damaged_wisdom_file_is_reported_and_replaced(tmp_path: Path) -> None:
    pytest.importorskip("pyfftw")
    wisdom = tmp_path / "wisdom.json"
    garbage = {p: "(fftw-3.3 fftwf_wisdom #x0 (not wisdom" for p in fft_backend._PRECISIONS}
    wisdom.write_text(json.dumps(garbage))
    env = {"PTYSCOPE_FFTW_PLANNER": "measure", "PTYSCOPE_FFTW_WISDOM": str(wisdom)}
    damaged = _python(_TRANSFORM, env)  # -W error: the warning ends the process
    assert damaged.returncode != 0
    assert f"ignoring the FFTW wisdom file {wisdom}" in damaged.stderr
    run = _python(_TRANSFORM, env, strict=False)
    assert run.returncode == 0, run.stderr
    assert "ignoring the FFTW wisdom file" in run.stderr
    assert sorted(json.loads(wisdom.read_text())) == sorted(fft_backend._PRECISIONS)


def test_wisdom_that_cannot_be_written_costs_only_a_warning(tmp_path: Path) -> None:
    pytest.importorskip("pyfftw")
    blocker = tmp_path / "a file"
    blocker.write_text("not a directory")
    env = {"PTYSCOPE_FFTW_PLANNER": "measure", "PTYSCOPE_FFTW_WISDOM": str(blocker / "w.json")}
    run = _python(_TRANSFORM, env, strict=False)
    assert run.returncode == 0, run.stderr
    assert f"could not write the FFTW wisdom file {blocker / 'w.json'}" in run.stderr
    assert blocker.read_text() == "not a directory"
