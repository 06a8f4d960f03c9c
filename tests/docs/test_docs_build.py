"""The documentation site builds without a single Sphinx warning (as `make docs` does)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_docs_build_without_warnings(tmp_path: Path) -> None:
    """`sphinx -W` into a temporary folder (about 5 s): every page, the generated config
    reference and the tilt figure."""
    out = tmp_path / "html"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-E",
            "-q",
            "-b",
            "html",
            "-d",
            str(tmp_path / "doctrees"),
            str(DOCS),
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    assert build.stderr.strip() == "", build.stderr  # -q: only warnings would print
    reference = (out / "config_reference.html").read_text()
    assert "fit_tilt" in reference and "tilt_series" in reference  # generated at build time
    assert "&lt;!-- config-reference" not in reference and "config-reference:" not in reference
    assert (out / "_images" / "tilt_convention.png").is_file()
    assert (out / "tutorials" / "index.html").is_file()
