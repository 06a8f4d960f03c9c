"""Fault injection for reliability tests: kill the process at a named point.

A run reads ``PTYSCOPE_FAULT`` once, e.g. ``PTYSCOPE_FAULT="checkpoint_write:3"``: the
process sends itself SIGKILL the third time it reaches the point ``checkpoint_write``.
Points:

``iteration``
    Inside an iteration, after the first gradient chunk (a half-done update).
``checkpoint_write``
    Inside a checkpoint write, after some bytes of the new checkpoint reached the disk and
    before the rename (the case atomic writes exist for).

The tests use it to show that a hard kill at the worst moment costs nothing: ``--resume``
continues from the last complete checkpoint and ends bit-identical to an uninterrupted
run. Unset (always, outside tests) it costs one dictionary lookup per point.
"""

from __future__ import annotations

import functools
import os
import signal

__all__ = ["ENV_VAR", "armed", "fault_point"]

ENV_VAR = "PTYSCOPE_FAULT"

_counts: dict[str, int] = {}


@functools.cache
def _plan() -> tuple[str, int] | None:
    text = os.environ.get(ENV_VAR, "").strip()
    if not text:
        return None
    name, _, count = text.partition(":")
    try:
        number = int(count or "1")
    except ValueError:
        raise ValueError(
            f"{ENV_VAR} must look like 'point:count' (e.g. 'iteration:3'), got {text!r}"
        ) from None
    if number < 1:
        raise ValueError(f"{ENV_VAR} count must be >= 1, got {text!r}")
    return name, number


def armed(point: str) -> bool:
    """Whether ``PTYSCOPE_FAULT`` names ``point`` (so a caller may prepare a kill)."""
    plan = _plan()
    return plan is not None and plan[0] == point


def fault_point(point: str) -> None:
    """Kill this process with SIGKILL on the planned visit to ``point``; else return."""
    plan = _plan()
    if plan is None or plan[0] != point:
        return
    _counts[point] = _counts.get(point, 0) + 1
    if _counts[point] == plan[1]:
        os.kill(os.getpid(), signal.SIGKILL)
