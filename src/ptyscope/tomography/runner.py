"""Per-tilt ptychographic reconstruction of a tilt series: sequential, processes or Dask.

Sequential multislice ptychographic tomography (Romanov et al. 2025, Fig. 1) first
reconstructs every tilt on its own with the multislice engine; the summed phases of those
reconstructions (:mod:`ptyscope.tomography.projections`) are the tomographic projections.
:func:`reconstruct_tilt_series` runs one template :class:`~ptyscope.config.ReconstructionConfig`
on every tilt of a tilt-series file (:func:`ptyscope.io.datafile.write_tilt_series`).

Files under ``out_dir``::

    tilt_series.json      manifest: series, template fingerprint, ``complete`` (true once
                          every tilt has a complete result), and per tilt the Euler
                          angles [deg], result file (relative to out_dir), seed, status,
                          seconds, first iteration of this run, failure message
    tilt_000.h5           result of tilt 0 (layout of ptyscope.reconstruction.results)
    tilt_000.ckpt.pt      its checkpoint (engine state, for resuming)
    tilt_000_report/      its HTML report, only with ``report=True``
    data/tilt_000.h5      tilt 0's dataset while it is being reconstructed

How a tilt reaches the engine: :func:`~ptyscope.reconstruction.run.build_run` reads
``config.data.path`` with :func:`~ptyscope.data.readers.read_4dstem`, which refuses a
tilt-series file (and ``dataset_path`` inside a ptyscope file would bypass its
calibration), and the config has no tilt selector. So the worker of tilt t copies that
tilt's :class:`~ptyscope.data.dataset.Dataset4D` block by block into ``data/tilt_###.h5``
(:func:`~ptyscope.io.datafile.write_dataset`, atomic) and runs the template with
``data.path`` pointing there; the copy is removed once the tilt's result is complete
(``keep_data=True`` keeps it). Calibration overrides in the template's ``[data]`` apply
to every tilt.

Seeds: tilt t runs with ``optimization.seed = template seed + t``, the rule
:func:`~ptyscope.simulation.tilt_series.simulate_tilt_series` uses for its noise, so
every tilt has its own deterministic batch order and the whole series is reproducible.

Resuming: calling :func:`reconstruct_tilt_series` again on the same ``out_dir`` skips
every tilt whose result file is a complete ptyscope result (format attribute, a 4D
``object``, ``iterations`` >= the template's), resumes a tilt that has a checkpoint but no
complete result from that checkpoint (``run_reconstruction(resume=True)``, exact), and
starts the others afresh. Results and checkpoints are written atomically, so a killed run
leaves only whole files; a tilt killed before its first checkpoint
(``optimization.checkpoint_every``) starts again. The manifest is rewritten (atomically)
after every tilt. A second call with a different template or a series with different
angles on the same ``out_dir`` is refused: the old results would be skipped as complete.

Executors: ``"sequential"`` (this process), ``"processes"`` (a
:class:`concurrent.futures.ProcessPoolExecutor` with the ``spawn`` context, so workers
start clean of this process's torch and thread state) and ``"dask"`` (one task per tilt on
a ``distributed`` cluster: an existing scheduler at ``scheduler_address`` or a
``LocalCluster`` of single-threaded worker processes; needs ``pip install
'ptyscope[cluster]'``; remote workers must see ``series_path`` and ``out_dir`` at the
same paths, e.g. on a shared filesystem). Local workers get
``torch.set_num_threads(cpu_count // workers)`` so they do not oversubscribe the cores.

A tilt's result does not depend on the executor: the engine is seeded per tilt and
iteration. Measured on the CPU (torch 2.13, ``tests/tomography/test_runner.py``):
sequential with 2 threads, processes and Dask with 1 thread each give bit-identical
objects; much larger problems may split reductions over threads differently and differ
at float32 rounding (~1e-7 relative).

Errors: a tilt that fails is recorded in the manifest with its message and the others go
on; at the end :class:`TiltSeriesError` names the failed tilts (their results are absent,
the others' are kept).

References
----------
A. Romanov et al., "Multislice electron ptychographic tomography" (2025): per-tilt MSP
reconstruction and summed phase projections (Fig. 1).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import multiprocessing
import os
import time
import tomllib
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
import torch
from pydantic import ValidationError
from tqdm.auto import tqdm

from ptyscope import __version__
from ptyscope.config import ConfigError, ReconstructionConfig
from ptyscope.io.atomic import atomic_path

# The private helpers read one tilt lazily (read_tilt_series loads every tilt at once).
from ptyscope.io.datafile import (
    _open_checked,
    _read_dataset_group,
    plain_attribute,
    write_dataset,
)
from ptyscope.io.hdf5_guard import open_untrusted_hdf5
from ptyscope.reconstruction.results import RESULT_FORMAT
from ptyscope.reconstruction.run import checkpoint_path, run_reconstruction

__all__ = [
    "EXECUTORS",
    "MANIFEST_NAME",
    "TiltRecord",
    "TiltSeriesError",
    "TiltSeriesRun",
    "reconstruct_tilt_series",
    "tilt_result_path",
]

#: Ways to run the tilts.
EXECUTORS = ("sequential", "processes", "dask")
#: File name of the manifest inside ``out_dir``.
MANIFEST_NAME = "tilt_series.json"
_MANIFEST_FORMAT = "ptyscope-tilt-series-run"
#: Status of a tilt in the manifest.
Status = Literal["pending", "done", "resumed", "skipped", "interrupted", "failed"]


@dataclass(frozen=True)
class TiltRecord:
    """What happened to one tilt (one manifest entry).

    Attributes
    ----------
    index:
        Tilt index in the series.
    euler_deg:
        (φ, θ, ψ) [deg], intrinsic ZYZ, active (:mod:`ptyscope.simulation.tilt_series`).
    result:
        The tilt's result file (absolute here; relative to ``out_dir`` in the manifest).
    seed:
        ``optimization.seed`` of the tilt's run (template seed + index).
    status:
        ``"done"`` (reconstructed from the start in this call), ``"resumed"`` (continued
        from a checkpoint in this call), ``"skipped"`` (complete before this call),
        ``"interrupted"`` (stopped by ``stop_after``, checkpoint written), ``"failed"``,
        or ``"pending"`` (not run yet).
    seconds:
        Wall time of the tilt's work in this call [s]; ``None`` if not run.
    start_iteration:
        Iteration the run started from (0, or the checkpoint's).
    message:
        ``"ExceptionType: message"`` of a failure, else ``None``.
    """

    index: int
    euler_deg: tuple[float, float, float]
    result: Path
    seed: int
    status: Status = "pending"
    seconds: float | None = None
    start_iteration: int = 0
    message: str | None = None

    @property
    def complete(self) -> bool:
        """True when the tilt's result is complete (done, resumed or skipped)."""
        return self.status in ("done", "resumed", "skipped")


@dataclass(frozen=True)
class TiltSeriesRun:
    """The outcome of :func:`reconstruct_tilt_series`.

    Attributes
    ----------
    out_dir:
        Folder of the per-tilt results.
    manifest:
        Path of ``tilt_series.json``.
    records:
        One :class:`TiltRecord` per tilt of the series, in tilt order.
    """

    out_dir: Path
    manifest: Path
    records: tuple[TiltRecord, ...]

    @property
    def failed(self) -> list[int]:
        """Indices of the tilts that failed."""
        return [r.index for r in self.records if r.status == "failed"]

    @property
    def result_paths(self) -> list[Path]:
        """Result files of the complete tilts, in tilt order."""
        return [r.result for r in self.records if r.complete]


class TiltSeriesError(RuntimeError):
    """Some tilts failed; ``run`` holds every tilt's record (the others are complete)."""

    def __init__(self, message: str, run: TiltSeriesRun) -> None:
        super().__init__(message)
        self.run = run


def tilt_result_path(out_dir: str | os.PathLike[str], index: int) -> Path:
    """Result file of tilt ``index``: ``out_dir/tilt_###.h5``."""
    return Path(out_dir) / f"tilt_{index:03d}.h5"


@dataclass(frozen=True)
class _TiltTask:
    """Everything a worker needs for one tilt (picklable)."""

    index: int
    series_path: str
    config: ReconstructionConfig
    config_text: str
    data_path: str
    result_path: str
    device: str
    threads: int | None
    stop_after: int | None
    report: bool
    keep_data: bool


@dataclass(frozen=True)
class _Outcome:
    index: int
    status: Status
    seconds: float
    start_iteration: int = 0
    message: str | None = None
    traceback: str | None = None


# ---------------------------------------------------------------------------- worker
def _complete_iterations(path: Path) -> int | None:
    """Iterations of a readable, whole ptyscope result at ``path``; ``None`` otherwise."""
    if not path.is_file():
        return None
    try:
        with open_untrusted_hdf5(path) as handle:
            if plain_attribute(handle.attrs.get("format", "")) != RESULT_FORMAT:
                return None
            obj = handle.get("object")
            if not isinstance(obj, h5py.Dataset) or obj.ndim != 4:
                return None
            return int(handle.attrs["iterations"])
    except (OSError, KeyError, ValueError, TypeError):
        return None


def _extract_tilt(series_path: str, index: int, target: Path) -> None:
    """Copy tilt ``index`` of a series into a ptyscope 4D-STEM file, block by block."""
    with _open_checked(series_path, "tilt_series") as handle:
        dataset = _read_dataset_group(handle["tilt_series"][f"tilt_{index:03d}"], lazy=True)
        write_dataset(target, dataset)


def _checkpoint_iteration(path: Path) -> int:
    state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    return int(state["iteration"])


def _reconstruct_tilt(task: _TiltTask) -> _Outcome:
    """Reconstruct one tilt (in whatever process runs it); never raises an Exception."""
    start = time.perf_counter()
    try:
        if task.threads is not None:
            torch.set_num_threads(task.threads)
        result = Path(task.result_path)
        iterations = task.config.optimization.iterations
        done = _complete_iterations(result)
        if done is not None and done >= iterations:
            return _Outcome(task.index, "skipped", time.perf_counter() - start, done)
        data = Path(task.data_path)
        if not data.is_file():
            _extract_tilt(task.series_path, task.index, data)
        checkpoint = checkpoint_path(result)
        resume = checkpoint.is_file()
        first = _checkpoint_iteration(checkpoint) if resume else 0
        run = run_reconstruction(
            task.config,
            config_text=task.config_text,
            device=task.device,
            resume=resume,
            progress=False,
            output=result,
            stop_after=task.stop_after,
            write_html_report=False,
        )
        status: Status = "resumed" if resume else "done"
        if run.engine.iteration < iterations:
            status = "interrupted"
        else:
            if task.report:
                from ptyscope.report.reconstruction_report import write_report

                write_report(result, result.with_name(result.stem + "_report"))
            if not task.keep_data:
                data.unlink(missing_ok=True)
        return _Outcome(task.index, status, time.perf_counter() - start, first)
    except Exception as error:
        return _Outcome(
            task.index,
            "failed",
            time.perf_counter() - start,
            message=f"{type(error).__name__}: {error}",
            traceback=traceback.format_exc(),
        )


# ---------------------------------------------------------------------------- executors
def _collect(future: Future[_Outcome], index: int) -> _Outcome:
    """A finished future's outcome; a worker that died is a failure of its tilt."""
    try:
        return future.result()
    except Exception as error:  # e.g. BrokenProcessPool, a lost Dask worker
        return _Outcome(index, "failed", float("nan"), message=f"{type(error).__name__}: {error}")


def _run_sequential(tasks: list[_TiltTask], on_done: Callable[[_Outcome], None]) -> None:
    previous = torch.get_num_threads()
    try:
        for task in tasks:
            on_done(_reconstruct_tilt(task))
    finally:
        torch.set_num_threads(previous)


def _run_processes(
    tasks: list[_TiltTask], workers: int, on_done: Callable[[_Outcome], None]
) -> None:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {pool.submit(_reconstruct_tilt, task): task.index for task in tasks}
        try:
            for future in as_completed(futures):
                on_done(_collect(future, futures[future]))
        except BaseException:  # Ctrl-C: do not start the tilts still queued
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError as error:
        raise ImportError(
            "executor='dask' needs the Dask distributed scheduler, which is not installed: "
            "pip install 'ptyscope[cluster]'"
        ) from error
    return distributed


@contextlib.contextmanager
def _dask_client(address: str | None, workers: int) -> Iterator[Any]:
    distributed = _import_distributed()
    with contextlib.ExitStack() as stack:
        if address is None:
            cluster = stack.enter_context(
                distributed.LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                )
            )
            client = stack.enter_context(distributed.Client(cluster))
        else:
            client = stack.enter_context(distributed.Client(address))
        yield client


def _run_dask(
    tasks: list[_TiltTask],
    address: str | None,
    workers: int,
    on_done: Callable[[_Outcome], None],
) -> None:
    distributed = _import_distributed()
    token = uuid.uuid4().hex[:8]
    with _dask_client(address, workers) as client:
        futures = {
            client.submit(
                _reconstruct_tilt, task, key=f"ptyscope-tilt-{task.index:03d}-{token}", pure=False
            ): task.index
            for task in tasks
        }
        for future in distributed.as_completed(list(futures)):
            on_done(_collect(future, futures[future]))


# ---------------------------------------------------------------------------- inputs
def _template(
    template: ReconstructionConfig | str | os.PathLike[str],
) -> tuple[ReconstructionConfig, str]:
    """The validated template and the text stored with each result."""
    if isinstance(template, ReconstructionConfig):
        config = template
        text = "# template given as a validated ReconstructionConfig (JSON)\n" + "".join(
            f"# {line}\n" for line in template.model_dump_json(indent=2).splitlines()
        )
    elif isinstance(template, str | os.PathLike):
        if isinstance(template, str):
            text, where = template, "template TOML text"
        else:
            path = Path(template)
            if not path.is_file():
                raise ValueError(f"template must be an existing TOML file, got {str(path)!r}")
            text, where = path.read_text(), str(path)
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{where}: not valid TOML: {error}") from None
        data = raw.setdefault("data", {})
        if isinstance(data, dict):  # the runner sets data.path per tilt
            data.setdefault("path", "tilt.h5")
        try:
            config = ReconstructionConfig.model_validate(raw)
        except ValidationError as error:
            lines = [
                f"  {'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']} "
                f"(got {e.get('input')!r})"
                for e in error.errors()
            ]
            raise ConfigError(f"{where}: invalid config\n" + "\n".join(lines)) from None
    else:
        raise TypeError(
            "template must be a ReconstructionConfig, TOML text (str) or a TOML file path, "
            f"got {type(template).__name__}"
        )
    data_config = config.data
    if data_config.dataset_path is not None:
        raise ValueError(
            "template data.dataset_path must be unset for a tilt series (each tilt is read "
            f"from the series), got {data_config.dataset_path!r}"
        )
    if data_config.format not in (None, "hdf5"):
        raise ValueError(
            "template data.format must be unset or 'hdf5' for a tilt series (each tilt is "
            f"copied to a ptyscope HDF5 file), got {data_config.format!r}"
        )
    if config.init.result is not None:
        raise ValueError(
            "template init.result must be unset for a tilt series (every tilt would start "
            f"from the same result), got {str(config.init.result)!r}"
        )
    return config, text


def _fingerprint(config: ReconstructionConfig) -> str:
    """SHA-256 of the template without the per-tilt fields (data.path, seed, output)."""
    neutral = config.model_copy(
        update={
            "data": config.data.model_copy(update={"path": Path("tilt.h5")}),
            "output": type(config.output)(),
        }
    )
    return hashlib.sha256(neutral.model_dump_json().encode()).hexdigest()


def _series_angles(series_path: Path) -> np.ndarray:
    with _open_checked(series_path, "tilt_series") as handle:
        angles = np.asarray(handle["tilt_series"]["euler_deg"][()], dtype=np.float64)
    if angles.ndim != 2 or angles.shape[1] != 3 or len(angles) == 0:
        raise ValueError(
            f"{str(series_path)!r}: euler_deg must have shape (tilts, 3) with at least one "
            f"tilt, got {angles.shape}"
        )
    return angles


def _select_tilts(tilts: Sequence[int] | None, count: int) -> list[int]:
    if tilts is None:
        return list(range(count))
    chosen = list(tilts)
    for t in chosen:
        if isinstance(t, bool) or not isinstance(t, int | np.integer) or not 0 <= t < count:
            raise ValueError(
                f"tilts must hold tilt indices in [0, {count - 1}] (the series has {count} "
                f"tilts), got {list(tilts)!r}"
            )
    if not chosen:
        raise ValueError(f"tilts must name at least one tilt (or be None for all), got {tilts!r}")
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"tilts must not repeat an index, got {list(tilts)!r}")
    return sorted(int(t) for t in chosen)


def _check_executor(
    executor: str, workers: int | None, scheduler_address: str | None, threads: int | None
) -> None:
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {list(EXECUTORS)}, got {executor!r}")
    for name, value in (("workers", workers), ("threads_per_worker", threads)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{name} must be an integer >= 1 or None, got {value!r}")
        if value is not None and value < 1:
            raise ValueError(f"{name} must be an integer >= 1 or None, got {value!r}")
    if scheduler_address is not None and executor != "dask":
        raise ValueError(
            f"scheduler_address needs executor='dask', got executor={executor!r} with "
            f"scheduler_address={scheduler_address!r}"
        )
    if scheduler_address is not None and workers is not None:
        raise ValueError(
            "workers sizes a local cluster; with scheduler_address the cluster's own "
            f"workers run the tilts, got workers={workers!r}"
        )


# ---------------------------------------------------------------------------- manifest
def _read_manifest(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{str(path)!r} is not a readable manifest: {error}") from None
    if manifest.get("format") != _MANIFEST_FORMAT:
        raise ValueError(
            f"{str(path)!r} is not a ptyscope tilt-series manifest (format "
            f"{manifest.get('format')!r}, expected {_MANIFEST_FORMAT!r})"
        )
    return manifest


def _check_manifest(
    manifest: dict[str, Any], fingerprint: str, angles: np.ndarray, path: Path
) -> None:
    if manifest.get("template_sha256") != fingerprint:
        raise ValueError(
            f"{str(path.parent)!r} holds results of a different template (its manifest "
            "records another template fingerprint); use a new out_dir, or delete the old "
            "results to start again"
        )
    stored = np.asarray([t["euler_deg"] for t in manifest.get("tilts", [])], dtype=np.float64)
    if stored.shape != angles.shape or not np.array_equal(stored, angles):
        raise ValueError(
            f"{str(path.parent)!r} holds results of a series with other tilts (euler_deg "
            f"{stored.tolist()} [deg], this series has {angles.tolist()}); use a new out_dir"
        )


def _write_manifest(
    path: Path, series: Path, fingerprint: str, records: Sequence[TiltRecord]
) -> None:
    tilts = []
    for record in records:
        entry = dataclasses.asdict(record)
        entry["euler_deg"] = list(record.euler_deg)
        entry["result"] = os.path.relpath(record.result, path.parent)
        tilts.append(entry)
    manifest = {
        "format": _MANIFEST_FORMAT,
        "format_version": 1,
        "software": f"ptyscope {__version__}",
        "updated": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "series": str(series),
        "template_sha256": fingerprint,
        "euler_convention": "intrinsic ZYZ (phi, theta, psi), active, degrees",
        # Rewritten after every tilt: true only once every tilt has a complete result.
        "complete": all(record.complete for record in records),
        "tilts": tilts,
    }
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1, allow_nan=False) + "\n")


def _previous_records(manifest: dict[str, Any] | None, out_dir: Path) -> dict[int, TiltRecord]:
    if manifest is None:
        return {}
    records = {}
    for entry in manifest.get("tilts", []):
        entry = dict(entry)
        entry["euler_deg"] = tuple(entry["euler_deg"])
        entry["result"] = (out_dir / entry["result"]).resolve()
        records[int(entry["index"])] = TiltRecord(**entry)
    return records


# ---------------------------------------------------------------------------- entry point
def reconstruct_tilt_series(
    series_path: str | os.PathLike[str],
    template: ReconstructionConfig | str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    tilts: Sequence[int] | None = None,
    executor: Literal["sequential", "processes", "dask"] = "sequential",
    workers: int | None = None,
    scheduler_address: str | None = None,
    threads_per_worker: int | None = None,
    device: str = "cpu",
    report: bool = False,
    keep_data: bool = False,
    stop_after: int | None = None,
    progress: bool = True,
) -> TiltSeriesRun:
    """Reconstruct every tilt of a tilt series with one template config, resumably.

    Parameters
    ----------
    series_path:
        Tilt-series file (:func:`ptyscope.io.datafile.write_tilt_series`): one dataset and
        one (φ, θ, ψ) [deg] row of ``euler_deg`` per tilt.
    template:
        The reconstruction settings, as a :class:`~ptyscope.config.ReconstructionConfig`,
        TOML text (``str``) or a TOML file (``pathlib.Path``). ``data.path``, ``output``
        and ``optimization.seed`` are set per tilt (module docstring; TOML text may leave
        ``data.path`` out); ``data.dataset_path`` and ``init.result`` must be unset.
    out_dir:
        Folder of the results, checkpoints and manifest (module docstring); created.
    tilts:
        Indices of the tilts to run (default all); the manifest lists every tilt.
    executor:
        ``"sequential"``, ``"processes"`` or ``"dask"`` (module docstring).
    workers:
        Worker processes (``"processes"``, or a Dask ``LocalCluster``); default
        min(tilts to run, CPU cores). Not allowed with ``scheduler_address``.
    scheduler_address:
        Address of a running Dask scheduler (e.g. ``"tcp://10.0.0.5:8786"``); ``None``
        with ``executor="dask"`` starts a ``LocalCluster`` for this call.
    threads_per_worker:
        ``torch.set_num_threads`` in each worker; default CPU cores // workers for local
        workers, torch's own default on a remote cluster and in this process.
    device:
        Torch device of every tilt's reconstruction (``"cpu"``, ``"cuda"``, ...).
    report:
        Write each complete tilt's HTML report to ``tilt_###_report/``.
    keep_data:
        Keep each tilt's dataset copy ``data/tilt_###.h5`` after its result is complete.
    stop_after:
        End each tilt's run after this many more iterations with a checkpoint, as an
        interruption would (status ``"interrupted"``; used to test resuming).
    progress:
        Show a progress bar over the tilts.

    Returns
    -------
    TiltSeriesRun
        Every tilt's :class:`TiltRecord` and the manifest path.

    Raises
    ------
    TiltSeriesError
        After all tilts ran, if any failed; the message names them and ``error.run``
        holds the records (the manifest has each failure's message).
    ValueError
        For bad arguments, or an ``out_dir`` holding results of another template/series.
    ImportError
        ``executor="dask"`` without ``distributed`` installed.

    Examples
    --------
    >>> run = reconstruct_tilt_series(  # doctest: +SKIP
    ...     "series.h5", Path("template.toml"), "tilts", executor="processes", workers=4)
    >>> run.result_paths[0].name  # doctest: +SKIP
    'tilt_000.h5'
    """
    series = Path(series_path).resolve()
    if not series.is_file():
        raise ValueError(f"series_path must be an existing tilt-series file, got {str(series)!r}")
    config, text = _template(template)
    _check_executor(executor, workers, scheduler_address, threads_per_worker)
    if executor == "dask":
        _import_distributed()  # fail before any work if it is missing
    if stop_after is not None and (not isinstance(stop_after, int) or stop_after < 0):
        raise ValueError(f"stop_after must be an integer >= 0 or None, got {stop_after!r}")
    angles = _series_angles(series)
    selected = _select_tilts(tilts, len(angles))
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / MANIFEST_NAME
    fingerprint = _fingerprint(config)
    manifest = _read_manifest(manifest_path)
    if manifest is not None:
        _check_manifest(manifest, fingerprint, angles, manifest_path)
    previous = _previous_records(manifest, out)

    cores = os.cpu_count() or 1
    count = workers or max(1, min(len(selected), cores))
    local = executor == "processes" or (executor == "dask" and scheduler_address is None)
    threads = threads_per_worker or (max(1, cores // count) if local else None)
    seed = config.optimization.seed
    records: dict[int, TiltRecord] = {}
    tasks = []
    for t, row in enumerate(angles):
        result = tilt_result_path(out, t)
        euler = (float(row[0]), float(row[1]), float(row[2]))
        records[t] = previous.get(t, TiltRecord(t, euler, result, seed + t))
        if t not in selected:
            continue
        records[t] = TiltRecord(t, euler, result, seed + t)  # pending until it reports
        data_path = out / "data" / f"tilt_{t:03d}.h5"
        tilt_config = config.model_copy(
            update={
                "data": config.data.model_copy(update={"path": data_path, "format": None}),
                "optimization": config.optimization.model_copy(update={"seed": seed + t}),
                "output": config.output.model_copy(update={"path": result, "report": None}),
            }
        )
        header = (
            f"# ptyscope.tomography.runner: tilt {t} of {str(series)!r}, euler_deg = "
            f"{list(euler)}\n# set per tilt over the template below: data.path = "
            f"{str(data_path)!r}, optimization.seed = {seed + t}, output.path = "
            f"{str(result)!r}\n"
        )
        tasks.append(
            _TiltTask(
                index=t,
                series_path=str(series),
                config=tilt_config,
                config_text=header + text,
                data_path=str(data_path),
                result_path=str(result),
                device=str(device),
                threads=threads_per_worker if executor == "sequential" else threads,
                stop_after=stop_after,
                report=report,
                keep_data=keep_data,
            )
        )
    _write_manifest(manifest_path, series, fingerprint, [records[t] for t in sorted(records)])

    tracebacks: dict[int, str] = {}
    with tqdm(total=len(tasks), desc="tilts", unit="tilt", disable=not progress) as bar:

        def on_done(outcome: _Outcome) -> None:
            old = records[outcome.index]
            seconds = outcome.seconds if np.isfinite(outcome.seconds) else None
            records[outcome.index] = dataclasses.replace(
                old,
                status=outcome.status,
                seconds=seconds,
                start_iteration=outcome.start_iteration,
                message=outcome.message,
            )
            if outcome.traceback is not None:
                tracebacks[outcome.index] = outcome.traceback
            ordered = [records[t] for t in sorted(records)]
            _write_manifest(manifest_path, series, fingerprint, ordered)
            bar.update()

        if executor == "sequential":
            _run_sequential(tasks, on_done)
        elif executor == "processes":
            _run_processes(tasks, count, on_done)
        else:
            _run_dask(tasks, scheduler_address, count, on_done)

    run = TiltSeriesRun(out, manifest_path, tuple(records[t] for t in sorted(records)))
    failed = [records[t] for t in selected if records[t].status == "failed"]
    if failed:
        details = "\n".join(f"  tilt {r.index}: {r.message}" for r in failed)
        last = tracebacks.get(failed[-1].index, "")
        raise TiltSeriesError(
            f"{len(failed)} of {len(selected)} tilts failed ({[r.index for r in failed]}); "
            f"the others' results are kept, see {str(manifest_path)!r}\n{details}"
            + (f"\nlast traceback:\n{last}" if last else ""),
            run,
        )
    return run
