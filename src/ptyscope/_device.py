"""Device selection for the command line (library code follows its inputs' device), the
memory free on a device, and the C allocator's settings for CPU runs."""

from __future__ import annotations

import ctypes
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["Available", "available_memory", "keep_freed_blocks", "resolve_device"]

#: glibc's mmap threshold for CPU reconstructions [bytes]: the largest it accepts on a
#: 64-bit machine. The trim threshold is set to twice it, the pair glibc's own dynamic
#: adjustment keeps.
CPU_MMAP_THRESHOLD = 32 * 2**20
#: Environment variables with which a user has chosen glibc's malloc settings already.
_ALLOCATOR_VARIABLES = (
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "GLIBC_TUNABLES",
)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)
_allocator_set = False


def resolve_device(name: str) -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` into a device.

    ``"auto"`` picks the first CUDA device when one is usable, else the CPU. Asking for
    CUDA on a machine without it is an error, not a silent fallback.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(
            f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was requested but no CUDA device is available")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}")
    return device


@dataclass(frozen=True)
class Available:
    """Memory free for a run [bytes] and where the number comes from."""

    nbytes: int
    source: str


def available_memory(device: torch.device | str = "cpu") -> Available | None:
    """Memory a run may use on ``device`` now; ``None`` when it cannot be found out.

    CUDA: the free memory ``torch.cuda.mem_get_info`` reports. CPU: ``MemAvailable`` from
    ``/proc/meminfo``, lowered to the room left under a cgroup memory limit (containers).
    """
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return Available(int(free), f"free on {device} (torch.cuda.mem_get_info)")
    try:
        meminfo = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in meminfo.splitlines() if ":" in line)
    if "MemAvailable" not in fields:
        return None
    found = Available(int(fields["MemAvailable"].split()[0]) * 1024, "MemAvailable")
    room = _cgroup_room()
    if room is not None and room < found.nbytes:
        found = Available(room, "cgroup memory limit − usage")
    return found


def _cgroup_room() -> int | None:
    """Bytes left under this process's cgroup memory limit (v2 or v1), if it has one."""
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if not limit.isdigit() or int(limit) >= 2**60:
            return None
        return max(0, int(limit) - usage)
    return None


def keep_freed_blocks() -> bool:
    """Have glibc's malloc keep freed blocks of up to :data:`CPU_MMAP_THRESHOLD` for reuse,
    once per process; True when the setting is (or already was) made.

    A CPU iteration frees and allocates the same few-MiB tensors thousands of times (the
    wave entering each slice is kept for the backward pass, then dropped). glibc's
    default serves a block above its dynamic mmap threshold with fresh pages and unmaps
    them when it is freed, so the next allocation page-faults and the kernel zeroes the
    pages again. On the PtyRAD case of issue 10 (4 probe modes, 2-core development
    machine, 2026-11-24) that was 15 000–60 000 page faults per iteration and 1.37–1.49 s
    per iteration; with the threshold fixed at 32 MiB (and the trim threshold at 64 MiB),
    0–900 faults and 1.35 s, the peak resident set 644–650 MiB either way (647–653).

    It changes the whole process's allocator, so it is made only for a reconstruction on
    the CPU (:func:`ptyscope.reconstruction.run.build_run`), never where the C library is
    not glibc, and never when the environment sets glibc's malloc already
    (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_``,
    ``GLIBC_TUNABLES``): a user's choice, e.g. the memory test that returns freed memory at
    once, stands.
    """
    global _allocator_set
    if _allocator_set:
        return True
    if platform.libc_ver()[0] != "glibc" or any(v in os.environ for v in _ALLOCATOR_VARIABLES):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # mallopt returns 1 on success; the mmap threshold goes first, as a failed one leaves
    # glibc's default pair in place
    _allocator_set = bool(
        mallopt(_M_MMAP_THRESHOLD, CPU_MMAP_THRESHOLD)
        and mallopt(_M_TRIM_THRESHOLD, 2 * CPU_MMAP_THRESHOLD)
    )
    return _allocator_set
