"""How many patterns one forward/backward pass takes: the engine's chunks.

A batch's gradient is accumulated over chunks of at most ``chunk_size`` patterns, and the
batch is split into chunks of equal size (32 patterns with a limit of 27 are two chunks
of 16, not 27 + 5: a small last chunk costs a pass's fixed overhead for few patterns).

``chunk_size = "auto"`` picks the limit from the size of the pass's tensors. On the CPU the
pass runs one slice at a time over a (chunk, states, modes, ny, nx) complex64 wave, and
each slice step (a product, two FFTs, a product) goes faster while that wave stays in the
cores' caches: on the 2-core development machine, the PtyRAD case of issue 10 (98 × 98
windows, 20 slices, 4 probe modes, batch 32) took 2.19 s per iteration in chunks of 32
patterns (a 9.8 MB wave), 1.77–1.82 s in chunks of 6 to 16 (1.8–4.9 MB), and 2.13 s in
chunks of 2 (too little work per FFT call); with 1 mode, chunks of 16 and 32 (1.2 and
2.4 MB) were alike. With FFTW's transforms (:mod:`ptyscope.physics.fft_backend`) the
plateau moved up: 4 modes took 1.49 s in chunks of 8, 1.44 s in chunks of 11 and 16, and
1.48–1.57 s in chunks of 32; 1 mode 0.49–0.50 s in chunks of 16 and 0.44 s in chunks of 32.
The limit is therefore :data:`CPU_WAVE_BYTES_PER_THREAD` of wave per thread of the run
(chunks of 16 with 4 modes on 2 threads, inside both plateaus). On a GPU, bigger batches
of FFTs are faster and the limit is memory, which ``ptyscope estimate`` checks:
:data:`ACCELERATOR_CHUNK` patterns.
"""

from __future__ import annotations

import math

import torch

__all__ = ["ACCELERATOR_CHUNK", "CPU_WAVE_BYTES_PER_THREAD", "auto_chunk_size", "chunk_sizes"]

#: Bytes of the (chunk, states, modes, ny, nx) complex64 wave per CPU thread at which
#: "auto" chunks stop growing (the middle of the measured plateau, module docstring).
CPU_WAVE_BYTES_PER_THREAD = 5 * 2**19
#: Patterns per chunk on an accelerator (CUDA) with ``chunk_size = "auto"``.
ACCELERATOR_CHUNK = 64


def auto_chunk_size(
    window: tuple[int, int],
    modes: int,
    states: int,
    device: torch.device | str,
    threads: int | None = None,
) -> int:
    """The limit on patterns per chunk that ``chunk_size = "auto"`` means.

    Parameters
    ----------
    window:
        (ny, nx) of the probe window.
    modes, states:
        Probe modes and object states: each pattern is modes × states waves.
    device:
        Where the pass runs.
    threads:
        CPU threads of the run (default: ``torch.get_num_threads()``).
    """
    if torch.device(device).type != "cpu":
        return ACCELERATOR_CHUNK
    threads = torch.get_num_threads() if threads is None else threads
    per_pattern = modes * states * window[0] * window[1] * 8
    return max(1, (CPU_WAVE_BYTES_PER_THREAD * max(1, threads)) // per_pattern)


def chunk_sizes(count: int, limit: int) -> list[int]:
    """``count`` patterns in the fewest chunks of at most ``limit``, as equal as can be
    (the larger ones first)."""
    if limit < 1:
        raise ValueError(f"chunk_size must be >= 1, got {limit}")
    if count <= 0:
        return []
    chunks = math.ceil(count / limit)
    size, extra = divmod(count, chunks)
    return [size + 1] * extra + [size] * (chunks - extra)
