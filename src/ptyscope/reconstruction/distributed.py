"""Data-parallel reconstruction over scan positions with :mod:`torch.distributed`.

Launched with ``torchrun`` (one process per GPU, or several on CPUs)::

    torchrun --nproc-per-node 2 -m ptyscope.cli reconstruct run.toml

Every process (rank) reads the whole dataset and builds the same parameters from the same
seed, so they start identical. Each draws the same batches (the batch order is seeded by
(seed, iteration)) and takes its share of every batch, ``batch[rank::world_size]``; after
its forward and backward passes the loss and the gradient of every fitted parameter are
summed over the processes (one ``all_reduce`` per dtype), so every process takes the
same optimiser step and applies the same constraints. Per-position parameters (position
corrections, a tilt map) get a zero gradient on the rows of other processes' patterns, so
the sum is the single-process gradient. The loss is normalised by the global number of
patterns as in a single process, and the results agree with a single-process run up to
the order of floating-point summation.

The backend is gloo on the CPU and NCCL on CUDA, where each process takes the GPU of its
``LOCAL_RANK``. Only rank 0 writes (checkpoints, result, report) and reports progress.
Outside torchrun, or with one process, nothing here does any work.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = [
    "DataParallel",
    "DistributedError",
    "join_torchrun",
    "sum_gradients",
    "torchrun_environment",
]


class DistributedError(RuntimeError):
    """A collective operation failed, usually because another process stopped."""


@dataclass(frozen=True)
class DataParallel:
    """This process's place in a data-parallel run and the collectives it needs.

    Attributes
    ----------
    rank:
        This process, 0 ≤ rank < world_size (torchrun's ``RANK``).
    world_size:
        Number of processes (torchrun's ``WORLD_SIZE``); 1 = a single process (no-op).
    group:
        The process group of the collectives; ``None`` = the default group.
    owns_group:
        The default group was created by :func:`join_torchrun` and :meth:`close` ends it.

    Examples
    --------
    >>> import torch
    >>> DataParallel(rank=1, world_size=2).shard(torch.arange(5)).tolist()
    [1, 3]
    """

    rank: int = 0
    world_size: int = 1
    group: dist.ProcessGroup | None = None
    owns_group: bool = False

    def __post_init__(self) -> None:
        if self.world_size < 1:
            raise ValueError(f"world_size must be >= 1, got {self.world_size}")
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank must lie in [0, world_size={self.world_size}), got {self.rank}")

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and reports progress."""
        return self.rank == 0

    def describe(self) -> str:
        """``"process 1 of 2"`` (for messages)."""
        return f"process {self.rank} of {self.world_size}"

    def check(self, num_positions: int, batch_size: int | None) -> None:
        """Refuse more processes than the patterns of a batch (some would idle every step)."""
        if self.world_size == 1:
            return
        if self.world_size > num_positions:
            raise ValueError(
                f"the number of processes (torchrun WORLD_SIZE={self.world_size}) must be <= "
                f"the number of scan positions, got {num_positions} positions"
            )
        if batch_size is not None and batch_size < self.world_size:
            raise ValueError(
                f"optimization.batch_size must be >= the number of processes (torchrun "
                f"WORLD_SIZE={self.world_size}) so that each process gets patterns of every "
                f"batch, got {batch_size}"
            )

    def shard(self, indices: torch.Tensor) -> torch.Tensor:
        """This process's share of a batch: ``indices[rank::world_size]``.

        Parameters
        ----------
        indices:
            int64 tensor of shape (B,): the pattern indices of one batch, the same on every
            process.

        Returns
        -------
        torch.Tensor
            int64 tensor of shape (⌈(B - rank) / world_size⌉,); the shares of all ranks
            are disjoint and together hold every index once. Empty when B < world_size
            for the ranks beyond B (a small last batch).
        """
        if self.world_size == 1:
            return indices
        return indices[self.rank :: self.world_size]

    def all_reduce(
        self, parameters: Sequence[torch.Tensor], loss: float, device: torch.device
    ) -> float:
        """Sum ``loss`` and the gradients of ``parameters`` over every process, in place.

        Parameters
        ----------
        parameters:
            The fitted parameters, in the same order on every process (real or complex,
            any shape); their ``.grad`` is replaced by the sum. A gradient that is ``None``
            on some processes counts as zero; one that is ``None`` on all stays ``None``
            (the optimiser skips it, as in a single process).
        loss:
            This process's share of the loss.
        device:
            The device of the run (where the summed buffers live; NCCL needs CUDA).

        Returns
        -------
        float
            The summed loss. With one process: ``loss``, and nothing is touched.
        """
        if self.world_size == 1:
            return loss
        try:
            return sum_gradients(parameters, loss, device, self.group)
        except RuntimeError as exc:  # DistBackendError and gloo's "Connection closed"
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DistributedError(
                f"{self.describe()}: summing the gradients over the processes failed "
                f"({first}); another process has probably stopped: see its error"
            ) from exc

    def barrier(self) -> None:
        """Wait until every process gets here (no-op with one process)."""
        if self.world_size == 1:
            return
        try:
            dist.barrier(group=self.group)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DistributedError(
                f"{self.describe()}: waiting for the other processes failed ({first}); "
                "another process has probably stopped: see its error"
            ) from exc

    def close(self) -> None:
        """End the default process group if :func:`join_torchrun` created it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def sum_gradients(
    parameters: Sequence[torch.Tensor],
    loss: float,
    device: torch.device,
    group: dist.ProcessGroup | None = None,
) -> float:
    """:meth:`DataParallel.all_reduce` without the single-process shortcut.

    The gradients are flattened into one buffer per real dtype (complex gradients as
    ``torch.view_as_real``), so a step costs one collective per dtype. The loss and a
    has-a-gradient flag per parameter travel in the float64 buffer.
    """
    buckets: dict[torch.dtype, list[torch.Tensor]] = {}
    places: list[tuple[torch.dtype, int, int]] = []  # (bucket, offset, numel) per parameter
    flags: list[float] = []
    for parameter in parameters:
        grad = parameter.grad
        flags.append(0.0 if grad is None else 1.0)
        if grad is None:
            grad = torch.zeros_like(parameter)
        real = torch.view_as_real(grad) if grad.is_complex() else grad
        parts = buckets.setdefault(real.dtype, [])
        places.append((real.dtype, sum(p.numel() for p in parts), real.numel()))
        parts.append(real.reshape(-1))
    meta = torch.tensor([loss, *flags], dtype=torch.float64, device=device)
    float64 = buckets.setdefault(torch.float64, [])
    meta_offset = sum(p.numel() for p in float64)
    float64.append(meta)
    summed: dict[torch.dtype, torch.Tensor] = {}
    for dtype, parts in buckets.items():  # same order on every process: same parameters
        flat = torch.cat(parts)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
        summed[dtype] = flat
    total, *counts = summed[torch.float64][meta_offset : meta_offset + len(flags) + 1].tolist()
    for parameter, count, (dtype, offset, numel) in zip(parameters, counts, places, strict=True):
        if count == 0:  # no process had a gradient
            parameter.grad = None
            continue
        if parameter.grad is None:
            parameter.grad = torch.zeros_like(parameter)
        grad = parameter.grad
        target = torch.view_as_real(grad) if grad.is_complex() else grad
        target.copy_(summed[dtype][offset : offset + numel].view_as(target))
    return float(total)


def torchrun_environment() -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` from torchrun's variables, or ``None`` outside.

    A process is taken to be launched by torchrun when ``WORLD_SIZE`` is set; ``RANK``
    and ``LOCAL_RANK`` must then be set too.
    """
    if "WORLD_SIZE" not in os.environ:
        return None
    values: dict[str, int] = {}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        text = os.environ.get(name)
        try:
            values[name] = int(text) if text is not None else -1
        except ValueError:
            values[name] = -1
        if values[name] < 0:
            raise ValueError(
                f"environment variable {name} must be an integer >= 0 when WORLD_SIZE is set "
                f"(launch with torchrun), got {text!r}"
            )
    return values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"]


def join_torchrun(device: torch.device) -> tuple[DataParallel, torch.device]:
    """This process's :class:`DataParallel` and device; joins torchrun's process group.

    Outside torchrun, or with ``WORLD_SIZE=1``: a single process on ``device``. Else the
    default process group is initialised from torchrun's environment (``env://``), with
    gloo on the CPU and NCCL on CUDA, where each process takes ``cuda:LOCAL_RANK``
    (``device`` must then be ``cuda`` without an index). A default group that already
    exists (a script that set one up) is used as it is, and left open.

    Parameters
    ----------
    device:
        The run's device (``cpu`` or ``cuda``).

    Returns
    -------
    tuple[DataParallel, torch.device]
        The parallel layout and the device this process computes on.
    """
    found = torchrun_environment()
    if found is None or found[1] == 1:
        return DataParallel(), device
    rank, world_size, local_rank = found
    backend = "gloo"
    if device.type == "cuda":
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        if device.index is not None and local_world > 1:
            raise ValueError(
                f"device must be 'cuda' or 'auto' under torchrun (each of the {local_world} "
                f"processes of a node takes the GPU of its LOCAL_RANK), got '{device}'"
            )
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise ValueError(
                f"torchrun started more processes on this node than it has GPUs: LOCAL_RANK "
                f"must be < {count} (use --nproc-per-node {count} or fewer), got {local_rank}"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    owns = False
    if not dist.is_initialized():
        dist.init_process_group(
            backend, init_method="env://", device_id=device if backend == "nccl" else None
        )
        owns = True
    if dist.get_world_size() != world_size or dist.get_rank() != rank:
        raise ValueError(
            f"the default process group must match torchrun's RANK={rank} and "
            f"WORLD_SIZE={world_size}, got rank {dist.get_rank()} of {dist.get_world_size()}"
        )
    return DataParallel(rank, world_size, owns_group=owns), device
