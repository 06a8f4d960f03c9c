"""``ptyscope analyze vibrations``: the table it prints and its errors on bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from click.testing import CliRunner

from ptyscope.cli import main

from ..analysis._vibration_data import vibration_result, write_object


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["analyze", "vibrations", *args])
    return result.exit_code, result.output


def test_vibrations_prints_lattice_basis_and_branch_averages(tmp_path: Path) -> None:
    data = vibration_result()
    out = tmp_path / "vib"
    code, output = _run(
        str(data.path),
        *("--temperature", "300", "--masses", "40,12", "--slices", "1:2", "--out", str(out)),
    )
    assert code == 0, output
    assert "128 columns, 20 states, slices 1;" in output
    assert "(square)" in output
    lines = output.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("basis"))
    bright, dim = lines[header + 1].split(), lines[header + 2].split()
    # index, (u, v) as two words, phase, mass, columns, ⟨u_y²⟩, ⟨u_x²⟩, B
    assert bright[0] == "0" and float(bright[4]) == 40.0 and dim[0] == "1" and float(dim[4]) == 12.0
    assert float(bright[3]) > float(dim[3])  # mean phase: brightest first
    assert bright[5] == dim[5] == "64"
    branches = next(line for line in lines if line.startswith("branch averages along Γ-X-M-Γ"))
    averages = [float(v) for v in branches.split(":")[1].replace("THz", "").split(",")]
    assert len(averages) == 4 and averages == sorted(averages) and averages[0] > 0
    for name in ("vibrations.csv", "pairs.csv", "dispersion.csv", "greens.npy", "greens.png"):
        assert (out / name).exists(), name


def test_vibrations_bad_input_is_one_clear_line(tmp_path: Path) -> None:
    data = vibration_result()
    result = str(data.path)
    out = ("--out", str(tmp_path / "x"))
    cases = [
        (("--temperature", "300", "--masses", "40"), "found 2 basis atoms"),
        (("--temperature", "300", "--masses", "40,a"), "one mass [amu] per basis atom"),
        (("--temperature", "-5", "--masses", "40,12"), "temperature_k must be > 0 K"),
        (("--temperature", "300", "--masses", "40,12", "--slices", "4:6"), "select none"),
        (("--temperature", "300", "--masses", "40,12", "--slices", "a:b"), "START:STOP"),
    ]
    for options, message in cases:
        code, output = _run(result, *options, *out)
        assert code != 0 and message in output, (options, output)
        assert "Traceback" not in output
    single = tmp_path / "single.h5"
    write_object(single, np.ones((1, 2, 64, 64), dtype=np.complex64), 0.1)
    code, output = _run(str(single), "--temperature", "300", "--masses", "12", *out)
    assert code != 0 and "needs at least 2 object states" in output and "has 1" in output
    code, output = _run(str(tmp_path / "none.h5"), "--temperature", "300", "--masses", "12")
    assert code != 0 and "not found" in output
    assert "Traceback" not in output
