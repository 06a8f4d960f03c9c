"""Atomic file writes: write to a temporary file beside the target, then rename.

An interrupted write (crash, SIGKILL, full disk) leaves either the old file or no file,
never a truncated one that looks valid. ``os.replace`` is atomic on POSIX and Windows when
source and target are on the same filesystem, which holds because the temporary file is
created in the target's directory.
"""

from __future__ import annotations

import contextlib
import glob
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "remove_stale_temporaries"]


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``target`` atomically.

    On any exception the temporary file is removed and ``target`` is left untouched.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
    >>> with atomic_path(out) as tmp:
    ...     _ = tmp.write_text("done")
    >>> out.read_text()
    'done'
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=_prefix(target), suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:  # flush the data to disk before the rename
            os.fsync(handle.fileno())
        os.chmod(tmp, _permissions(target))  # mkstemp's 0o600 would hide it from the group
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _prefix(target: Path) -> str:
    return f".{target.name}."


def remove_stale_temporaries(target: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files a killed writer of ``target`` left behind.

    A process killed inside :func:`atomic_path` (SIGKILL cannot be caught) leaves its
    ``.<name>.XXXX.tmp`` beside ``target``; nothing ever reads it. Call this before
    writing ``target`` again from the one process that owns it. Returns what was removed.
    """
    target = Path(target)
    if not target.parent.is_dir():
        return []
    stale = sorted(target.parent.glob(f"{glob.escape(_prefix(target))}*.tmp"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def _permissions(target: Path) -> int:
    """Mode bits for the new file: the replaced file's, else 0o666 less the umask (as
    ``open(target, "w")`` would give)."""
    try:
        return stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        return 0o666 & ~_UMASK


def _current_umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; restored at once
    os.umask(mask)
    return mask


_UMASK = _current_umask()  # at import, before any writer threads exist
