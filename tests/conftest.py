"""Shared pytest configuration: FFTW's rule-based planner, and GPU tests skip cleanly
without CUDA."""

from __future__ import annotations

import os

import pytest
import torch

# Before ptyscope is imported (fft_backend reads it once), and inherited by the CLI tests'
# subprocesses: plans chosen by rule, the same in every process, so the suite's figures do
# not depend on which plan a timed planner found or on a wisdom file left by earlier runs.
# tests/physics/test_fft_backend.py tests the timed planners and their wisdom.
os.environ.setdefault("PTYSCOPE_FFTW_PLANNER", "estimate")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def generator() -> torch.Generator:
    """A seeded CPU generator (library code never touches global seeds)."""
    return torch.Generator().manual_seed(1234)
