"""Checks of a 4D-STEM dataset before any work starts: what the array itself can tell.

:func:`check_dataset` reads the data once, a block of scan rows at a time (bounded memory;
``numpy.memmap`` and ``h5py.Dataset`` stay on disk), and returns one :class:`Issue` per
broken rule. Each issue names the parameter, the rule and the value received, e.g.
``"dataset patterns must hold only finite values (no NaN or Inf), got 3 NaN ..."``.
:func:`raise_for_issues` turns a list of issues into one :class:`PreflightError` that
lists every error, one line each, and emits the warnings as :class:`PreflightWarning`.

Rules
-----
Errors refuse the data; warnings flag what is unusual but possible.

*Shapes* (errors): the data are 4D ``(scan_y, scan_x, det_y, det_x)``; explicit
``scan_positions_ang`` have shape ``(scan_y, scan_x, 2)``, are finite and do not all
coincide.

*Non-finite values* (error): any NaN or Inf; the count of each and the first scan index.

*Negative values.* A counting detector cannot record a negative count, but gain- and
dark-corrected integrating detectors record read noise of zero mean around zero in the
dark field, so small negatives are legitimate. Two signs separate that noise from a fault:

1. *Bias* (error): a pixel of the mean pattern (average over the S scan points) lies below
   zero by more than ``BIAS_SIGMAS`` = 6 standard errors σ_pixel/√S (zero-mean noise
   averages away, an over-subtracted dark reference does not; 6σ keeps false alarms below
   10⁻⁹ per pixel) *and* by more than ``BIAS_FRACTION`` = 10⁻³ of the mean pattern's
   peak (an offset that small, e.g. round-off, cannot affect a reconstruction).
2. *Outliers* (error): a value below minus the mean pattern's peak. Zero-mean read noise
   in the dark field is far weaker than the bright-field intensity; values this negative
   come from integer wrap-around, a wrong dtype or flagged (dead) pixels.

*All-zero patterns.* A pattern with no signal at all is a dropped frame or a blanked beam:
the detector collects most of the beam at every scan position. An error, unless the data
are low-dose counts: integer-valued with a mean of fewer than ``LOW_DOSE_COUNTS`` = 20
counts per pattern, where counting statistics leave a pattern empty with probability
e^(−mean) (a warning then). Every pattern zero is always an error.

*Weak patterns* (warning): a pattern whose total is below ``WEAK_FRACTION`` = 10% of the
median total (part of the frame lost, or the beam blanked during it); not applied to
low-dose counts.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .dataset import Dataset4D

__all__ = [
    "BIAS_FRACTION",
    "BIAS_SIGMAS",
    "LOW_DOSE_COUNTS",
    "WEAK_FRACTION",
    "DataStatistics",
    "Issue",
    "PreflightError",
    "PreflightWarning",
    "Severity",
    "check_dataset",
    "data_statistics",
    "raise_for_issues",
]

#: Standard errors of the mean pattern below zero that make a pixel's offset significant.
BIAS_SIGMAS = 6.0
#: Fraction of the mean pattern's peak below which a negative offset is negligible.
BIAS_FRACTION = 1e-3
#: Mean counts per pattern below which empty patterns are expected from counting statistics.
LOW_DOSE_COUNTS = 20.0
#: Fraction of the median pattern total below which a pattern is flagged as weak.
WEAK_FRACTION = 0.1
#: Default bound on one block of scan rows read at a time [bytes] (float64 copies double it).
CHECK_BLOCK_BYTES = 32 * 2**20

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Issue:
    """One broken rule: the parameter, the rule, the value received and a hint.

    ``str(issue)`` reads ``"<parameter> <rule>, got <value>; <hint>"``.
    """

    severity: Severity
    parameter: str
    rule: str
    value: str
    hint: str = ""

    def __str__(self) -> str:
        text = f"{self.parameter} {self.rule}, got {self.value}"
        return f"{text}; {self.hint}" if self.hint else text


class PreflightError(ValueError):
    """Inputs that must not start a run; the message lists every error, one per line.

    Attributes
    ----------
    issues:
        Every :class:`Issue` found (errors and warnings).
    """

    def __init__(self, message: str, issues: Sequence[Issue] = ()) -> None:
        super().__init__(message)
        self.issues = list(issues)


class PreflightWarning(UserWarning):
    """An input value that is unusual but possible (the run still starts)."""


def raise_for_issues(issues: Sequence[Issue], subject: str, *, warn: bool = True) -> list[Issue]:
    """Raise :class:`PreflightError` if any issue is an error; otherwise return the
    warnings (emitted as :class:`PreflightWarning` when ``warn``).

    The error message starts with ``subject`` and lists each error on its own line, then
    the warnings.
    """
    errors = [issue for issue in issues if issue.severity == "error"]
    warned = [issue for issue in issues if issue.severity == "warning"]
    if errors:
        lines = [f"{subject}: {len(errors)} problem(s) to fix before starting:"]
        lines += [f"  - {issue}" for issue in errors]
        if warned:
            lines.append("and warning(s):")
            lines += [f"  - {issue}" for issue in warned]
        raise PreflightError("\n".join(lines), issues)
    if warn:
        for issue in warned:
            warnings.warn(str(issue), PreflightWarning, stacklevel=2)
    return warned


@dataclass(frozen=True)
class DataStatistics:
    """What one block-wise pass over a dataset measures (:func:`data_statistics`).

    Attributes
    ----------
    nan_count, inf_count:
        Number of NaN and ±Inf values.
    nonfinite:
        bool (scan_y, scan_x): patterns holding a NaN or Inf.
    zero:
        bool (scan_y, scan_x): finite patterns whose every value is 0.
    totals:
        float64 (scan_y, scan_x): sum of each pattern's finite values.
    minima:
        float64 (scan_y, scan_x): smallest finite value of each pattern (+inf if none).
    mean_pattern:
        float64 (det_y, det_x): mean over scan points (non-finite values count as 0).
    std_error:
        float64 (det_y, det_x): standard error of ``mean_pattern``, σ_pixel / √S, with
        σ_pixel the standard deviation of the pixel over the S scan points.
    integer_valued:
        The values are whole numbers (counting data): an integer dtype, or floats whose
        first block of scan rows holds only whole numbers.
    """

    nan_count: int
    inf_count: int
    nonfinite: np.ndarray
    zero: np.ndarray
    totals: np.ndarray
    minima: np.ndarray
    mean_pattern: np.ndarray
    std_error: np.ndarray
    integer_valued: bool


def data_statistics(dataset: Dataset4D, max_bytes: int | None = None) -> DataStatistics:
    """Measure a dataset in one pass, a block of scan rows at a time.

    Parameters
    ----------
    dataset:
        The data (in memory, memmap or HDF5).
    max_bytes:
        Bound on one block as stored [bytes]; default 32 MiB (float64 working copies of a
        block take up to twice that).

    Returns
    -------
    DataStatistics
    """
    max_bytes = CHECK_BLOCK_BYTES if max_bytes is None else max_bytes
    scan, det = dataset.scan_shape, dataset.detector_shape
    nonfinite = np.zeros(scan, dtype=bool)
    zero = np.zeros(scan, dtype=bool)
    totals = np.zeros(scan)
    minima = np.full(scan, np.inf)
    pixel_sum, pixel_sq = np.zeros(det), np.zeros(det)
    nan_count = inf_count = 0
    integer_valued = dataset.dtype.kind in "iu"
    for rows, block in dataset.iter_scan_rows(max_bytes):
        if block.dtype.kind == "f":
            finite = np.isfinite(block)
            if not finite.all():
                nan_count += int(np.isnan(block).sum())
                inf_count += int(np.isinf(block).sum())
                nonfinite[rows] = ~finite.all(axis=(2, 3))
                block = np.where(finite, block, 0)
            if rows.start == 0:  # whole numbers: judged on the first block
                integer_valued = bool(np.array_equal(block, np.rint(block)))
        flat = block.reshape(block.shape[0] * block.shape[1], -1)
        totals[rows] = flat.sum(axis=1, dtype=np.float64).reshape(block.shape[:2])
        minima[rows] = flat.min(axis=1).reshape(block.shape[:2])
        zero[rows] = ~flat.any(axis=1).reshape(block.shape[:2])
        pixel_sum += flat.sum(axis=0, dtype=np.float64).reshape(det)
        pixel_sq += np.einsum("pk,pk->k", flat, flat, dtype=np.float64).reshape(det)
    count = scan[0] * scan[1]
    mean = pixel_sum / count
    variance = np.maximum(pixel_sq / count - mean**2, 0.0)
    return DataStatistics(
        nan_count=nan_count,
        inf_count=inf_count,
        nonfinite=nonfinite,
        zero=zero & ~nonfinite,
        totals=totals,
        minima=minima,
        mean_pattern=mean,
        std_error=np.sqrt(variance / count),
        integer_valued=integer_valued,
    )


def _first(mask: np.ndarray) -> str:
    i, j = (int(v) for v in np.argwhere(mask)[0])
    return f"({i}, {j})"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _shape_issues(dataset: Dataset4D, name: str) -> list[Issue]:
    shape = tuple(getattr(dataset.data, "shape", ()))
    if len(shape) != 4:
        return [
            Issue("error", f"{name} data", "must be 4D (scan_y, scan_x, det_y, det_x)", str(shape))
        ]
    positions = dataset.scan_positions_ang
    if positions is None:
        return []
    where = f"{name} scan_positions_ang"
    expected = (shape[0], shape[1], 2)
    if tuple(positions.shape) != expected:
        return [
            Issue(
                "error",
                where,
                f"must have shape (scan_y, scan_x, 2) = {expected}, one (y, x) per pattern",
                f"shape {tuple(positions.shape)}",
            )
        ]
    finite = np.isfinite(positions).all(axis=-1)
    if not finite.all():
        return [
            Issue(
                "error",
                where,
                "must be finite",
                f"{_plural(int((~finite).sum()), 'non-finite position')}, first at scan "
                f"(i, j) = {_first(~finite)}",
            )
        ]
    extent = np.ptp(positions.reshape(-1, 2), axis=0)
    if positions.shape[0] * positions.shape[1] > 1 and float(extent.max()) == 0.0:
        return [
            Issue(
                "error",
                where,
                "must not all coincide (ptychography needs the probe to move)",
                f"every position at {tuple(positions[0, 0].tolist())} Å",
            )
        ]
    return []


def _finite_issues(stats: DataStatistics, where: str) -> list[Issue]:
    if not stats.nonfinite.any():
        return []
    return [
        Issue(
            "error",
            where,
            "must hold only finite values (no NaN or Inf)",
            f"{stats.nan_count} NaN and {stats.inf_count} Inf values in "
            f"{_plural(int(stats.nonfinite.sum()), 'pattern')}, first at scan (i, j) = "
            f"{_first(stats.nonfinite)}",
            "repair or drop those frames (a detector readout or a division by zero made them)",
        )
    ]


def _zero_issues(stats: DataStatistics, where: str) -> list[Issue]:
    total = stats.zero.size
    n_zero = int(stats.zero.sum())
    if n_zero == 0:
        return []
    if n_zero + int(stats.nonfinite.sum()) == total:
        return [Issue("error", where, "must hold some signal", "every pattern all zero")]
    mean_counts = float(stats.totals[~stats.nonfinite].mean())
    low_dose = stats.integer_valued and mean_counts < LOW_DOSE_COUNTS
    expected = total * math.exp(-mean_counts) if low_dose else 0.0
    rule = "must not be all zero (a dropped frame or a blanked beam)"
    hint = (
        f"at {mean_counts:.3g} counts per pattern, counting statistics leave about "
        f"{expected:.3g} patterns empty"
        if low_dose
        else "repair those frames (e.g. the mean of their scan neighbours) or crop the scan "
        "to leave them out"
    )
    return [
        Issue(
            "warning" if low_dose else "error",
            where,
            rule,
            f"{n_zero} all-zero patterns of {total}, first at scan (i, j) = {_first(stats.zero)}",
            hint,
        )
    ]


def _weak_issues(stats: DataStatistics, where: str) -> list[Issue]:
    peak = float(stats.mean_pattern.max())
    valid = ~stats.zero & ~stats.nonfinite & (stats.minima >= -peak)  # outliers: elsewhere
    if not valid.any():
        return []
    median = float(np.median(stats.totals[valid]))
    if median <= 0 or (stats.integer_valued and median < LOW_DOSE_COUNTS):
        return []
    weak = valid & (stats.totals < WEAK_FRACTION * median)
    if not weak.any():
        return []
    return [
        Issue(
            "warning",
            where,
            f"should each total at least {WEAK_FRACTION:.0%} of the median pattern total "
            f"{median:.4g} (the detector collects most of the beam at every position)",
            f"{_plural(int(weak.sum()), 'weak pattern')}, first at scan (i, j) = "
            f"{_first(weak)} with total {float(stats.totals[weak].min()):.4g}",
            "frames partly lost or the beam blanked during them",
        )
    ]


def _negative_issues(stats: DataStatistics, where: str) -> list[Issue]:
    peak = float(stats.mean_pattern.max())
    if peak <= 0 or float(stats.minima.min()) >= 0:
        return []
    issues = []
    outliers = stats.minima < -peak
    if outliers.any():
        issues.append(
            Issue(
                "error",
                where,
                f"must not hold values below minus the mean pattern's peak (−{peak:.4g}); "
                "dark-subtraction noise is far weaker",
                f"{_plural(int(outliers.sum()), 'pattern')} with such values, first at scan "
                f"(i, j) = {_first(outliers)}, lowest {float(stats.minima.min()):.4g}",
                "integer wrap-around, a wrong dtype or flagged pixels (ptyscope preprocess "
                "repairs bad pixels)",
            )
        )
    tolerance = BIAS_SIGMAS * stats.std_error + BIAS_FRACTION * peak
    biased = stats.mean_pattern < -tolerance
    if biased.any():
        worst = np.unravel_index(int(np.argmin(stats.mean_pattern + tolerance)), biased.shape)
        y, x = (int(v) for v in worst)
        issues.append(
            Issue(
                "error",
                where,
                f"must average to >= 0 on every detector pixel within noise (mean pattern "
                f"above −({BIAS_SIGMAS:g} standard errors + {BIAS_FRACTION:g} × peak))",
                f"{_plural(int(biased.sum()), 'pixel')} below, e.g. pixel ({y}, {x}) with "
                f"mean {float(stats.mean_pattern[y, x]):.4g} ± "
                f"{float(stats.std_error[y, x]):.2g}",
                "the dark reference or background was over-subtracted; counts cannot be "
                "negative on average",
            )
        )
    return issues


def check_dataset(
    dataset: Dataset4D,
    *,
    name: str = "dataset",
    statistics: DataStatistics | None = None,
    max_bytes: int | None = None,
) -> list[Issue]:
    """Check a dataset's shapes and values (the rules are in the module docstring).

    Parameters
    ----------
    dataset:
        The data to check; read once, block-wise, unless ``statistics`` is given.
    name:
        How messages call the dataset, e.g. ``"data 'scan.h5'"``.
    statistics:
        :func:`data_statistics` of ``dataset`` already measured.
    max_bytes:
        Bound on one block read [bytes] (see :func:`data_statistics`).

    Returns
    -------
    list of Issue
        Errors and warnings, empty for good data; pass them to :func:`raise_for_issues`.

    Examples
    --------
    >>> import numpy as np
    >>> from ptyscope.data.dataset import Calibration, Dataset4D
    >>> data = np.ones((2, 2, 4, 4), dtype=np.float32)
    >>> data[0, 1, 2, 2] = np.nan
    >>> ds = Dataset4D(data, Calibration(300e3, (0.4, 0.4), (0.1, 0.1)))
    >>> print(check_dataset(ds)[0])  # doctest: +ELLIPSIS
    dataset patterns must hold only finite values (no NaN or Inf), got 1 NaN and 0 Inf ...
    """
    issues = _shape_issues(dataset, name)
    if any(issue.parameter == f"{name} data" for issue in issues):
        return issues
    stats = statistics if statistics is not None else data_statistics(dataset, max_bytes)
    where = f"{name} patterns"
    issues += _finite_issues(stats, where)
    issues += _zero_issues(stats, where)
    issues += _weak_issues(stats, where)
    issues += _negative_issues(stats, where)
    return issues
