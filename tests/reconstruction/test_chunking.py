"""Chunks of a batch: equal sizes within the limit, the "auto" limit, and the engine and
the estimate agreeing on them."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from ptyscope.config import ReconstructionConfig, load_config
from ptyscope.data.readers import read_4dstem
from ptyscope.reconstruction import engine as engine_module
from ptyscope.reconstruction.chunking import (
    ACCELERATOR_CHUNK,
    CPU_WAVE_BYTES_PER_THREAD,
    auto_chunk_size,
    chunk_sizes,
)
from ptyscope.reconstruction.estimate import run_shape
from ptyscope.reconstruction.run import build_run
from tests.reliability._runs import write_case


def test_a_batch_is_split_into_the_fewest_equal_chunks_within_the_limit() -> None:
    for count in range(1, 70):
        for limit in range(1, 40):
            sizes = chunk_sizes(count, limit)
            assert sum(sizes) == count
            assert len(sizes) == math.ceil(count / limit)
            assert max(sizes) <= limit
            assert max(sizes) - min(sizes) <= 1
            assert sizes == sorted(sizes, reverse=True)
    assert chunk_sizes(32, 27) == [16, 16]  # not 27 + 5
    assert chunk_sizes(0, 8) == []
    with pytest.raises(ValueError, match="chunk_size must be >= 1, got 0"):
        chunk_sizes(10, 0)


def test_auto_chunks_hold_a_fixed_wave_per_cpu_thread() -> None:
    # the PtyRAD case of issue 10 (98 × 98 windows) on 2 threads: 4 modes in chunks of
    # 17 patterns (68 waves, 5 MiB; a batch of 32 is two chunks of 16), 1 mode of 68
    assert CPU_WAVE_BYTES_PER_THREAD * 2 // (98 * 98 * 8) == 68
    assert auto_chunk_size((98, 98), 4, 1, "cpu", threads=2) == 17
    assert chunk_sizes(32, auto_chunk_size((98, 98), 4, 1, "cpu", threads=2)) == [16, 16]
    assert auto_chunk_size((98, 98), 1, 1, "cpu", threads=2) == 68
    assert auto_chunk_size((98, 98), 2, 2, "cpu", threads=2) == 17  # modes × states
    assert auto_chunk_size((98, 98), 1, 1, "cpu", threads=8) == 272  # 20 MiB / 76832 B
    assert auto_chunk_size((1024, 1024), 16, 4, "cpu", threads=1) == 1  # never 0
    assert auto_chunk_size((98, 98), 4, 1, "cuda") == ACCELERATOR_CHUNK
    assert auto_chunk_size((98, 98), 1, 1, "cpu") == auto_chunk_size(
        (98, 98), 1, 1, "cpu", threads=torch.get_num_threads()
    )


def _config(tmp_path: Path, chunk_size: str) -> ReconstructionConfig:
    path = write_case(tmp_path, iterations=1, batch_size="32", checkpoint_every=100)
    text = path.read_text().replace(
        "[optimization]\n", f"[optimization]\nchunk_size = {chunk_size}\n"
    )
    path.write_text(text)
    return load_config(path, ReconstructionConfig)


@pytest.mark.parametrize("chunk_size", ["27", '"auto"'])
def test_the_engine_passes_the_chunks_the_estimate_sizes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk_size: str
) -> None:
    config = _config(tmp_path, chunk_size)
    run = build_run(config, base_dir=tmp_path)
    passed: list[int] = []
    predict = engine_module.predict

    def counting(params: object, indices: torch.Tensor, *args: object, **kwargs: object) -> object:
        passed.append(len(indices))
        return predict(params, indices, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(engine_module, "predict", counting)
    run.engine.step()
    window = tuple(run.engine.params.probe.shape[-2:])
    limit = 27 if chunk_size == "27" else auto_chunk_size(window, 1, 1, "cpu")
    assert run.engine.chunk_limit == limit
    assert passed == chunk_sizes(32, limit) * 2  # 64 patterns in 2 batches of 32
    shape = run_shape(config, read_4dstem(tmp_path / "data.h5"), device="cpu")
    assert shape.chunk == max(passed)
    assert shape.chunks_per_update == len(passed) // 2
