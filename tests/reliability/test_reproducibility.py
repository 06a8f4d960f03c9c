"""The same config and seed give bit-identical results on the CPU; the result says how."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch

import ptyscope
from ptyscope.config import ReconstructionConfig, load_config
from ptyscope.physics import fft_backend
from ptyscope.reconstruction.run import run_reconstruction

from ._runs import read_arrays, write_case


def _run(folder: Path, seed: int) -> dict[str, np.ndarray]:
    config_file = write_case(folder, seed=seed, iterations=4)
    config = load_config(config_file, ReconstructionConfig)
    run = run_reconstruction(config, base_dir=folder, progress=False, write_html_report=False)
    return read_arrays(run.result_path)


def test_same_seed_same_bits_other_seed_other_result(tmp_path: Path) -> None:
    first = _run(tmp_path / "a", seed=7)
    second = _run(tmp_path / "b", seed=7)
    other = _run(tmp_path / "c", seed=8)
    for key in first:
        assert np.array_equal(first[key], second[key]), key
    # The seed orders the mini-batches: another seed is another (equally good) run.
    assert not np.array_equal(first["object"], other["object"])
    assert np.isclose(first["loss"][-1], other["loss"][-1], rtol=0.1)


def test_the_result_records_seed_versions_and_events(tmp_path: Path) -> None:
    _run(tmp_path, seed=3)
    with h5py.File(tmp_path / "rec.h5", "r") as handle:
        origin = dict(handle["provenance"].attrs)
        assert origin["seed"] == 3 and not origin["deterministic"]
        assert origin["ptyscope"] == ptyscope.__version__
        assert origin["torch"] == str(torch.__version__)
        assert origin["numpy"] == np.__version__
        assert origin["threads"] == torch.get_num_threads()
        assert origin["fft"] == fft_backend.describe()  # FFTW and MKL round differently
        assert len(handle["events/iteration"]) == 0  # a clean run
