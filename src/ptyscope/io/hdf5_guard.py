"""Open untrusted HDF5 files only after a throw-away process has read their metadata.

The HDF5 library is written in C, and some damaged files make it crash (a segmentation
fault that kills Python) or loop forever while it reads metadata, for example a
variable-length string attribute whose global-heap record is corrupt. No Python code can
catch that. ``benchmarks/fuzz_readers.py`` found both with HDF5 2.0.0 (h5py 3.16).

:func:`open_untrusted_hdf5` therefore forks the process first. The child opens the file,
walks its objects (hard links only, bounded as in
:func:`~ptyscope.io.datafile.walk_hdf5`), reads every attribute and every small string
dataset, and exits. Python errors in the child are ignored: the reader meets them again in
the parent and reports them as usual. Only a child that is killed by a signal, that has
not finished after :data:`TIMEOUT_S` seconds, or that cannot list an object's attributes
or members (they are then reachable only by name, and reading them so crashed or hung
the library on the fuzzer's files) stops the read, with a
:class:`~ptyscope.data.formats._common.DataFormatError` naming the file. The parent opens
the file only after that. A file that passed is remembered (by path, inode, size and
modification time), so a process checks each file once.

Forking copies no memory (pages are shared until written), and walking the metadata of a
4D-STEM file takes milliseconds. Where ``fork`` does not exist (Windows) or is unsafe
(macOS), or when ``PTYSCOPE_HDF5_GUARD=0``, files are opened directly.

Environment
-----------
``PTYSCOPE_HDF5_GUARD``
    ``0`` turns the check off.
``PTYSCOPE_HDF5_GUARD_TIMEOUT_S``
    Seconds the child may take (default :data:`TIMEOUT_S`).
"""

from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import math
import os
import resource
import signal
import sys
import time
from typing import Any

import h5py

from ptyscope.data.formats._common import DataFormatError

__all__ = ["TIMEOUT_S", "check_hdf5_metadata", "open_untrusted_hdf5"]

#: Seconds the checking process may take before the file is called damaged (a healthy
#: file's metadata reads in milliseconds; this leaves room for slow network disks).
TIMEOUT_S = 30.0
#: Largest string dataset (elements) the check reads.
_MAX_STRING_ELEMENTS = 4096
#: Address space the child may add to what it inherits [bytes]: HDF5 refuses to read an
#: attribute it cannot allocate instead of taking the machine's memory.
_CHILD_MEMORY = 1 << 30

#: Exit status of a child that found the file damaged (its reason on the pipe).
_REFUSED = 3
_REPORT_BYTES = 2000
#: prctl option: the signal a process gets when its parent dies (linux/prctl.h).
_PR_SET_PDEATHSIG = 1

#: Files checked in this process: None when they passed, else why they were refused.
_checked: dict[tuple[str, int, int, int], str | None] = {}


def _enabled() -> bool:
    if os.environ.get("PTYSCOPE_HDF5_GUARD", "1").strip() == "0":
        return False
    return hasattr(os, "fork") and sys.platform.startswith("linux")


def _timeout_s() -> float:
    text = os.environ.get("PTYSCOPE_HDF5_GUARD_TIMEOUT_S")
    if text is None:
        return TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise ValueError(
            f"PTYSCOPE_HDF5_GUARD_TIMEOUT_S must be a positive number of seconds, got {text!r}"
        )
    return value


def _identity(path: str) -> tuple[str, int, int, int]:
    stat = os.stat(path)
    return os.path.realpath(path), stat.st_ino, stat.st_size, stat.st_mtime_ns


class _DamagedTableError(Exception):
    """The members or the attributes of an object cannot be listed."""


def _read_everything(path: str) -> None:
    """What the child does: touch all metadata a reader might.

    Errors are ignored (the reader meets them in the parent), except a group or an
    attribute table that cannot be listed: its entries are then reachable only by name,
    and reading them so can crash or hang the library (found by the fuzzer), so the file
    is refused.
    """
    from ptyscope.io.datafile import walk_hdf5

    try:
        handle = h5py.File(path, "r")
    except Exception:
        return
    with handle:
        objects: list[Any] = [handle]
        try:
            objects += [item for _, item in walk_hdf5(handle)]
        except DataFormatError:
            pass  # past ptyscope's own limits: the reader says so in the parent
        except Exception as error:
            raise _DamagedTableError(f"its groups cannot be listed ({error})") from None
        for item in objects:
            try:
                names = list(item.attrs)
            except Exception as error:
                raise _DamagedTableError(
                    f"the attributes of {item.name!r} cannot be listed ({error})"
                ) from None
            for name in names:
                with contextlib.suppress(Exception):
                    item.attrs[name]
            if isinstance(item, h5py.Dataset):
                with contextlib.suppress(Exception):
                    # Strings: "S" fixed length, "O" variable length (kept in the global heap).
                    if item.dtype.kind in "OS" and (item.size or 0) <= _MAX_STRING_ELEMENTS:
                        item[()]


def _child(path: str, report: int, timeout_s: float) -> None:
    """Body of the forked process; never returns. Writes why it refuses to ``report``.

    The child also ends itself: by SIGALRM a second after the parent's time limit, and by
    SIGKILL when the parent dies, so a parent killed while it waits leaves no process
    spinning inside HDF5.
    """
    status = 0
    try:
        faulthandler.disable()  # a crash here is expected news, not a traceback to print
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(math.ceil(timeout_s) + 1)
        with contextlib.suppress(Exception):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        with contextlib.suppress(Exception):
            pages = int(open("/proc/self/statm").read().split()[0])  # noqa: SIM115
            size = pages * os.sysconf("SC_PAGE_SIZE") + _CHILD_MEMORY
            resource.setrlimit(resource.RLIMIT_AS, (size, size))
        _read_everything(path)
    except _DamagedTableError as error:
        with contextlib.suppress(Exception):
            os.write(report, str(error).encode(errors="replace")[:_REPORT_BYTES])
        status = _REFUSED
    finally:
        os._exit(status)


def _phil() -> Any:
    """h5py's global lock, held across the fork so no other thread is inside HDF5."""
    lock = getattr(getattr(h5py, "_objects", None), "phil", None)
    return lock if lock is not None else contextlib.nullcontext()


def _wait(pid: int, timeout_s: float) -> int | None:
    """Exit status of ``pid`` (as ``os.waitpid``), or None when it ran out of time."""
    deadline = time.monotonic() + timeout_s
    pause = 0.0005
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() >= deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None
        time.sleep(pause)
        pause = min(2 * pause, 0.05)


def check_hdf5_metadata(path: str | os.PathLike[str]) -> None:
    """Read ``path``'s metadata in a forked process; refuse the file if that process dies.

    Parameters
    ----------
    path:
        An HDF5 file that exists.

    Raises
    ------
    DataFormatError
        If reading the metadata killed the process (the HDF5 library crashed), did not
        finish within the time limit, or met an attribute table that cannot be listed. The
        message names the file and what happened. The verdict is kept for the process.
    """
    where = os.fspath(path)
    if not _enabled():
        return
    try:
        identity = _identity(where)
    except OSError:
        return  # the reader reports a missing or unreadable file in its own words
    if identity not in _checked:
        _checked[identity] = _check_in_child(where)
    reason = _checked[identity]
    if reason is not None:
        raise DataFormatError(
            f"{where!r} is a damaged HDF5 file: {reason}; it is not opened "
            "(PTYSCOPE_HDF5_GUARD=0 opens it anyway, at the risk of a crash)"
        )


def _check_in_child(where: str) -> str | None:
    """Why the forked check refuses ``where``, or None when it passed."""
    timeout = _timeout_s()
    read_end, write_end = os.pipe()
    try:
        with _phil():
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the child, which exits
                os.close(read_end)
                _child(where, write_end, timeout)
        os.close(write_end)
        write_end = -1
        status = _wait(pid, timeout)
        if status is None:
            return (
                f"reading its metadata did not finish within {timeout:g} s (the HDF5 "
                "library loops on it). If the file is healthy and on a slow disk, raise "
                "PTYSCOPE_HDF5_GUARD_TIMEOUT_S"
            )
        if os.WIFSIGNALED(status):
            number = os.WTERMSIG(status)
            name = signal.Signals(number).name if number in signal.valid_signals() else "?"
            return (
                f"reading its metadata crashed the HDF5 library (signal {number}, {name}) "
                "in a test process"
            )
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == _REFUSED:
            return os.read(read_end, _REPORT_BYTES).decode(errors="replace")
        return None
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


def open_untrusted_hdf5(path: str | os.PathLike[str]) -> h5py.File:
    """``h5py.File(path, "r")`` after :func:`check_hdf5_metadata` has passed the file.

    The file is a context manager like any ``h5py.File``: ``with open_untrusted_hdf5(p) as f``.

    Raises
    ------
    DataFormatError
        As :func:`check_hdf5_metadata`.
    OSError
        From h5py, when the file cannot be opened at all (callers translate it).
    """
    check_hdf5_metadata(path)
    return h5py.File(path, "r")
