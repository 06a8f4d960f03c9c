"""NaN/Inf in a gradient: the engine rolls back, reduces its steps and finishes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from ptyscope.reconstruction.constraints import AmplitudeLimit, ProbePower
from ptyscope.reconstruction.engine import Engine, EngineSettings, NumericalError
from ptyscope.reconstruction.parameters import GroupSettings
from ptyscope.reconstruction.setup import prepare
from tests.reconstruction._data import A, srtio3

ITERATIONS = 8
POISONED = 3  # the iteration whose gradient gets a NaN


def _engine(**settings: Any) -> Engine:
    dataset = srtio3(2, scan_shape=8).dataset
    setup = prepare(dataset, num_slices=2, slice_thickness_ang=A, defocus_ang=60.0)
    options: dict[str, Any] = {
        "iterations": ITERATIONS,
        "batch_size": 16,
        "groups": {"object": GroupSettings(lr=1e-2), "probe": GroupSettings(lr=3e-3, start=1)},
        "constraints": [ProbePower(), AmplitudeLimit()],
    }
    options.update(settings)
    return Engine(
        setup.params, setup.measured, setup.cache, EngineSettings(**options), setup.grid_shape
    )


def _poison(engine: Engine, when: Callable[[int, int], bool]) -> None:
    """Put a NaN into the object's gradient whenever ``when(iteration, call)`` holds."""
    calls = {"n": 0}

    def hook(grad: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        if not when(engine.iteration, calls["n"]):
            return grad
        grad = grad.clone()
        grad[0, 0, 20, 20] = float("nan")
        return grad

    engine.params.object.register_hook(hook)  # type: ignore[no-untyped-call]


@pytest.fixture(scope="module")
def clean_losses() -> list[float]:
    engine = _engine()
    engine.run()
    assert not engine.events  # a healthy run reports nothing
    return engine.history.loss


def test_a_nan_gradient_is_rolled_back_and_the_run_completes(clean_losses: list[float]) -> None:
    engine = _engine()
    fired: list[int] = []

    def once(iteration: int, call: int) -> bool:
        if iteration == POISONED and not fired:
            fired.append(call)
            return True
        return False

    _poison(engine, once)
    with pytest.warns(RuntimeWarning, match="rolled back"):
        engine.run()
    assert engine.iteration == ITERATIONS and len(engine.history.loss) == ITERATIONS
    assert [(e.iteration, e.kind) for e in engine.events] == [(POISONED, "rollback")]
    assert "'object'" in engine.events[0].message
    for name in ("object", "probe"):
        assert bool(torch.isfinite(engine.params.group(name)).all())
    # The rollback restores the state before iteration 3 exactly: the run equals a clean
    # run whose learning rates are halved after iteration 2, bit for bit.
    halved = _engine()
    halved.run(stop_after=POISONED)
    for group in halved.optimizer.param_groups:
        group["lr"] *= 0.5
    halved.run()
    assert engine.history.loss == halved.history.loss
    for name in ("object", "probe"):
        assert torch.equal(engine.params.group(name), halved.params.group(name))
    assert engine.history.loss[:POISONED] == clean_losses[:POISONED]
    assert engine.history.loss[-1] < engine.history.loss[POISONED]  # still converging


def test_repeated_nans_stop_the_run_in_the_last_good_state() -> None:
    stopped_early = _engine()
    stopped_early.run(stop_after=POISONED)  # the state a failing iteration 3 must keep

    engine = _engine(max_rollbacks=2)
    _poison(engine, lambda iteration, _: iteration >= POISONED)
    with (
        pytest.warns(RuntimeWarning, match="rolled back"),
        pytest.raises(
            NumericalError,
            match=r"iteration 3: parameter .object. has \d+ non-finite elements after 2 rollbacks",
        ),
    ):
        engine.run()
    assert engine.iteration == POISONED
    assert [e.kind for e in engine.events] == ["rollback", "rollback"]
    for name in ("object", "probe"):
        assert torch.equal(engine.params.group(name), stopped_early.params.group(name))
    assert engine.history.loss == stopped_early.history.loss


def test_a_climbing_loss_is_reported_once() -> None:
    engine = _engine(divergence_window=5)
    engine.history.loss = [1.0, 0.9, 0.8]
    with pytest.warns(RuntimeWarning) as warned:
        for value in [0.81, 0.83, 0.84, 0.86, 0.88, 0.9, 0.95]:
            engine.history.loss.append(value)
            engine.iteration = len(engine.history.loss)
            engine._watch_divergence()
    # 0.86 rises in 4 of 5 steps but is below 1.02 x 0.9; 0.88 rises in 5 of 5 and is
    # above 1.02 x 0.8: reported there, and not again while it keeps climbing.
    assert len(warned) == 1
    assert [(e.kind, e.iteration) for e in engine.events] == [("divergence", 7)]
    assert "rose in 5 of the last 5 iterations, from 0.8 to 0.88" in engine.events[0].message


def test_adam_oscillations_are_not_divergence() -> None:
    engine = _engine(divergence_window=10)
    engine.history.loss = []
    for k in range(30):  # up, down, up ... around a constant
        engine.history.loss.append(1.0 + 0.01 * (-1) ** k)
        engine._watch_divergence()
    assert engine.events == []
