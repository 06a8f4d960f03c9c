"""Device selection for the command line (library code follows its inputs' device), and
the memory free on a device."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["Available", "available_memory", "resolve_device"]


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
