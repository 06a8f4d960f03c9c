"""The readers' contract for untrusted files, checked on one case.

Shared by the fuzzer (``benchmarks/fuzz_readers.py``) and the tests in this folder. Given
any file (and its companion files), every reader either

* returns a :class:`~ptyscope.data.dataset.Dataset4D` (or, for the eager readers of
  :mod:`ptyscope.io.datafile`, its arrays), or
* raises ``ValueError`` (or a subclass) whose message names the file;
  ``FileNotFoundError`` naming a companion file that is missing,
  ``NotImplementedError`` naming the file (Merlin ``R64``/``U01`` data, documented as
  unsupported) and ``ImportError`` for a Velox EMD file without the optional RosettaSciIO
  are allowed too,

and never raises anything else (``IndexError``, ``KeyError``, ``struct.error``,
``OverflowError``, ``MemoryError``, ``RecursionError``, ``OSError``, ``TypeError``, ...;
a ``ValueError`` from deep inside, such as ``UnicodeDecodeError``, fails too, since it does
not name the file). While it runs, the memory it allocates (traced by ``tracemalloc``; a
memory map is no allocation) stays below 8 MiB plus ``expansion`` times the size of the
case: 16 for uncompressed formats, 1100 for formats whose members may be
DEFLATE-compressed (DEFLATE expands at most 1032-fold). The fuzzer adds what a test cannot
check in-process: no hang, no crash of the interpreter, no allocation beyond its
address-space limit.
"""

from __future__ import annotations

import os
import traceback
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py

from ptyscope.data.dataset import Dataset4D
from ptyscope.data.readers import read_4dstem
from ptyscope.io.datafile import read_dataset, read_ground_truth, read_tilt_series
from ptyscope.io.inspect import describe_file

__all__ = ["CAL", "SCAN", "TARGETS", "Outcome", "Target", "run_case"]

#: Calibration passed to every reader (so that only the file decides the outcome).
CAL: dict[str, Any] = {"energy_ev": 300e3, "scan_step_ang": 0.5, "detector_pixel_inv_ang": 0.05}
#: Scan shape passed where the format does not record it.
SCAN = (2, 3)
_BASE_ALLOWANCE = 8 * 2**20


@dataclass(frozen=True)
class Target:
    """A fuzzed entry point.

    Attributes
    ----------
    name:
        Target name (folder of its corpus).
    entry:
        Name of the file to open in a multi-file case; ``None``: the case's only file.
    calls:
        Functions ``call(path)`` run on the entry file, each checked.
    expansion:
        Allowed allocation per byte of the case (module docstring).
    extensions:
        Extensions of the entry file (the first is used for new cases).
    """

    name: str
    entry: str | None
    calls: tuple[Callable[[Path], Any], ...]
    expansion: float
    extensions: tuple[str, ...]


@dataclass(frozen=True)
class Outcome:
    """What one case did.

    Attributes
    ----------
    kind:
        ``"accepted"`` (data returned), ``"refused"`` (an allowed, named error) or
        ``"violation"``.
    error:
        Exception type name ("" when accepted).
    message:
        First 300 characters of the exception message.
    signature:
        For violations: what went wrong and where (stable across line edits).
    peak_bytes:
        Peak traced allocation while the case ran [bytes].
    """

    kind: str
    error: str
    message: str
    signature: str
    peak_bytes: int


def _reader(fmt: str, **options: Any) -> Callable[[Path], Any]:
    def call(path: Path) -> Any:
        return read_4dstem(path, format=fmt, **CAL, **options)

    call.__name__ = f"read_4dstem[{fmt}]"
    return call


def _eager_dataset(path: Path) -> Any:
    return read_dataset(path)


TARGETS: dict[str, Target] = {
    target.name: target
    for target in (
        Target("npy", None, (_reader("npy", scan_shape=SCAN),), 16.0, (".npy",)),
        Target("npz", None, (_reader("npz", scan_shape=SCAN),), 1100.0, (".npz",)),
        Target("hdf5", None, (_reader("hdf5"),), 1100.0, (".h5",)),
        Target(
            "ptyscope-h5",
            None,
            (_reader("hdf5"), _eager_dataset, read_ground_truth, read_tilt_series),
            1100.0,
            (".h5",),
        ),
        Target("emd", None, (_reader("emd"),), 1100.0, (".emd",)),
        Target("empad-raw", "scan.raw", (_reader("empad"),), 16.0, (".raw", ".xml")),
        Target("empad-xml", "scan.xml", (_reader("empad"),), 16.0, (".xml", ".raw")),
        Target("mib", None, (_reader("mib", scan_shape=SCAN),), 16.0, (".mib",)),
        Target("mib-hdr", "scan.mib", (_reader("mib"),), 16.0, (".mib", ".hdr")),
        Target("inspect", None, (describe_file,), 1100.0, (".npy", ".npz", ".h5")),
    )
}


def _where(error: BaseException) -> str:
    frames = traceback.extract_tb(error.__traceback__)
    ours = [f for f in frames if f"{os.sep}ptyscope{os.sep}" in f.filename]
    inner = f"{Path(frames[-1].filename).name}:{frames[-1].name}" if frames else "?"
    if ours:
        module = Path(ours[-1].filename).stem
        return f"{module}.{ours[-1].name} -> {inner}"
    return inner


def _allowed(error: BaseException, names: Sequence[str]) -> bool:
    text = str(error)
    named = any(name in text for name in names)
    if isinstance(error, ValueError | FileNotFoundError | NotImplementedError):
        return named
    return isinstance(error, ImportError) and "RosettaSciIO" in text


def _close(result: Any) -> None:
    if isinstance(result, Dataset4D) and isinstance(result.data, h5py.Dataset):
        result.data.file.close()


def _check(call: Callable[[Path], Any], entry: Path, names: Sequence[str]) -> Outcome:
    try:
        result = call(entry)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as error:
        name = type(error).__name__
        message = str(error)[:300]
        if _allowed(error, names):
            return Outcome("refused", name, message, "", 0)
        what = f"{name} (file not named)" if isinstance(error, ValueError) else name
        return Outcome("violation", name, message, f"{what} at {_where(error)}", 0)
    _close(result)
    return Outcome("accepted", "", "", "", 0)


def run_case(target: Target, folder: Path) -> Outcome:
    """Run every call of ``target`` on the case in ``folder`` and check the contract.

    Returns
    -------
    Outcome
        The first violation, else the outcome of the first call; ``peak_bytes`` is the
        peak traced allocation over all calls. An allocation beyond the allowance is a
        violation with the signature ``"allocation > allowance (<target>)"``.
    """
    names = sorted(p.name for p in folder.iterdir())
    entry = folder / (target.entry or names[0])
    allowance = _BASE_ALLOWANCE + target.expansion * sum((folder / n).stat().st_size for n in names)
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    try:
        outcomes = [_check(call, entry, names) for call in target.calls]
    finally:
        peak = tracemalloc.get_traced_memory()[1] - base
        if started:
            tracemalloc.stop()
    chosen = next((o for o in outcomes if o.kind == "violation"), outcomes[0])
    if chosen.kind != "violation" and peak > allowance:
        chosen = Outcome(
            "violation",
            "allocation",
            f"peak {peak} bytes > allowance {int(allowance)} bytes",
            f"allocation > allowance ({target.name})",
            peak,
        )
    return Outcome(chosen.kind, chosen.error, chosen.message, chosen.signature, peak)
