"""The reconstruction loop: batching, optimiser, constraints, history, checkpoints.

One iteration visits every pattern once. Full batch (``batch_size=None``): the gradient
of the whole dataset is accumulated over memory-bounded chunks, then one step is taken
(required for mixed-object runs, where the states are only defined by all the data).
Mini-batch: a step per batch; batches are random or spatially compact, drawn from a
generator seeded by (seed, iteration), so a resumed run visits the same batches as an
uninterrupted one. Constraints are applied after each iteration when their schedule is
due. Checkpoints (parameters, optimiser, constraints, history) are written atomically.
Data parallel (torchrun, :mod:`~ptyscope.reconstruction.distributed`): every process
computes its share of each batch and the gradients are summed before the step.

Numerical guard: after every iteration the loss and every parameter are checked. A NaN
or Inf (a zero-intensity pattern under a Poisson loss, a step that overflowed) rolls the
run back to the state before the iteration (parameters, optimiser moments, constraints,
history), scales every learning rate by ``rollback_lr_factor`` and repeats the
iteration; after ``max_rollbacks`` failures in a row the run stops with
:class:`NumericalError` and keeps the last good state (and its checkpoint). A loss that
climbs for ``divergence_window`` iterations is reported as an :class:`Event` (and a
warning) but the run goes on: a rising loss can be a schedule turning on a new group.

Lowest loss (``keep_best``): an iteration's loss is measured on the parameters it starts
from (the whole of it with one full batch or L-BFGS; with mini-batches while the
parameters move, so there the pick is approximate). With ``keep_best`` the engine keeps a
copy of the parameters of the lowest loss so far (:attr:`Engine.best`, in checkpoints
too), and :meth:`Engine.best_parameters` lends them for writing the result. The run
itself goes on from its last state, so a resumed run is the same as an uninterrupted one.
Why: with a constant Adam step a long mixed-object run passes its loss minimum and then
degrades (docs/mixed_object_log.md).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import itertools
import math
import pickle
import time
import warnings
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ptyscope._faults import armed, fault_point
from ptyscope.io.atomic import atomic_path

from .chunking import auto_chunk_size, chunk_sizes
from .constraints import Constraint
from .distributed import DataParallel
from .forward import PropagatorCache, predict
from .losses import get_loss
from .parameters import GROUPS, GroupSettings, PtychoParameters

__all__ = [
    "CHECKPOINT_FORMAT",
    "OPTIMIZERS",
    "Best",
    "Engine",
    "EngineSettings",
    "Event",
    "History",
    "NumericalError",
]

#: The ``format`` entry of a checkpoint (refused when missing: not a ptyscope checkpoint).
CHECKPOINT_FORMAT = "ptyscope-checkpoint-1"

#: Registry: optimiser name -> factory(param_groups, settings) (L-BFGS is handled by the
#: engine).
OPTIMIZERS: dict[str, Callable[[list[dict[str, Any]], EngineSettings], torch.optim.Optimizer]] = {
    "adam": lambda groups, s: torch.optim.Adam(groups, betas=(0.9, s.adam_beta2)),
    "sgd": lambda groups, s: torch.optim.SGD(groups, momentum=0.9),
    "lbfgs": lambda groups, s: torch.optim.LBFGS(
        [p for g in groups for p in g["params"]],
        lr=1.0,
        history_size=10,
        line_search_fn="strong_wolfe",
    ),
}


@dataclass
class EngineSettings:
    """How to optimise.

    Attributes
    ----------
    iterations:
        Number of iterations (passes over the data).
    batch_size:
        Patterns per update; ``None`` = full batch.
    batching:
        ``"random"`` or ``"compact"`` (spatially contiguous tiles) mini-batches.
    chunk_size:
        Most patterns per forward/backward pass; each batch is split into equal chunks
        (:func:`~ptyscope.reconstruction.chunking.chunk_sizes`). ``None``: the
        :func:`~ptyscope.reconstruction.chunking.auto_chunk_size` of the run.
    loss, optimizer:
        Names from the registries (:data:`~ptyscope.reconstruction.losses.LOSSES`,
        :data:`OPTIMIZERS`).
    groups:
        Settings per parameter group (missing groups are frozen). Learning rates: object
        in transmission units, probe relative to its initial peak amplitude, positions in
        object pixels, tilt in mrad, thickness in Å, state weights in logits.
    constraints:
        Scheduled constraints, applied in order after each iteration.
    seed:
        Seed of the batch order.
    lr_decay:
        Every learning rate is multiplied by this factor after each iteration
        (exponential decay; 1 keeps them constant). Damps Adam's late oscillations.
    adam_beta2:
        Adam's decay of its squared-gradient average: it remembers about
        1 / (1 − adam_beta2) updates (1000 with the default 0.999).
    checkpoint_every, checkpoint_path:
        Write a checkpoint every k iterations (``None`` = never).
    progress:
        Show a progress bar with the loss.
    guard:
        Check the loss and the parameters after every iteration and roll back on NaN/Inf
        (module docstring). Costs one copy of the parameters and optimiser state.
    max_rollbacks:
        Failed attempts at one iteration before :class:`NumericalError`.
    rollback_lr_factor:
        Every learning rate is multiplied by this after each rollback (kept afterwards).
    divergence_window:
        A loss that rose in at least 80 % of the last ``divergence_window`` steps and ended
        more than 2 % above where the window began is reported as diverging (Adam's
        late oscillations rise in about half the steps).
    keep_best:
        Keep a copy of the parameters of the lowest loss (module docstring); costs one
        copy of the parameters per iteration.
    """

    iterations: int = 20
    batch_size: int | None = None
    batching: str = "random"
    chunk_size: int | None = None
    loss: str = "amplitude"
    optimizer: str = "adam"
    groups: dict[str, GroupSettings] = field(
        default_factory=lambda: {
            "object": GroupSettings(lr=2e-2),
            "probe": GroupSettings(lr=1e-2),
        }
    )
    constraints: Sequence[Constraint] = ()
    seed: int = 0
    lr_decay: float = 1.0
    adam_beta2: float = 0.999
    checkpoint_every: int | None = None
    checkpoint_path: Path | None = None
    progress: bool = False
    guard: bool = True
    max_rollbacks: int = 3
    rollback_lr_factor: float = 0.5
    divergence_window: int = 10
    keep_best: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.iterations, int) or self.iterations < 0:
            raise ValueError(f"iterations must be an integer >= 0, got {self.iterations!r}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None, got {self.batch_size}")
        if not 0 < self.lr_decay <= 1:
            raise ValueError(f"lr_decay must lie in (0, 1], got {self.lr_decay}")
        if not 0 < self.adam_beta2 < 1:
            raise ValueError(f"adam_beta2 must lie in (0, 1), got {self.adam_beta2}")
        if self.batching not in ("random", "compact"):
            raise ValueError(f"batching must be 'random' or 'compact', got {self.batching!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"optimizer must be one of {sorted(OPTIMIZERS)}, got {self.optimizer!r}"
            )
        if not isinstance(self.max_rollbacks, int) or self.max_rollbacks < 0:
            raise ValueError(f"max_rollbacks must be an integer >= 0, got {self.max_rollbacks!r}")
        if not 0 < self.rollback_lr_factor < 1:
            raise ValueError(
                f"rollback_lr_factor must lie in (0, 1), got {self.rollback_lr_factor}"
            )
        if not isinstance(self.divergence_window, int) or self.divergence_window < 2:
            raise ValueError(
                f"divergence_window must be an integer >= 2, got {self.divergence_window!r}"
            )
        get_loss(self.loss)
        unknown = sorted(set(self.groups) - set(GROUPS))
        if unknown:
            raise ValueError(f"groups must be among {list(GROUPS)}, got {unknown}")


@dataclass
class History:
    """Per-iteration record.

    ``probe_mode_power`` holds, per iteration, the power of each orthogonalised probe mode
    (the eigenvalues of the modes' overlap matrix, strongest first): what the mixed state
    puts in each mode, whatever basis the fitted modes happen to be in. It is empty in a
    checkpoint written before it was recorded.
    """

    loss: list[float] = field(default_factory=list)
    tilt_y_mrad: list[float] = field(default_factory=list)
    tilt_x_mrad: list[float] = field(default_factory=list)
    slice_thickness_ang: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    probe_mode_power: list[list[float]] = field(default_factory=list)


@dataclass
class Best:
    """The parameters of the lowest loss so far: ``params`` (a state dict of copies) after
    ``iteration`` updates, where that iteration measured ``loss``."""

    iteration: int
    loss: float
    params: dict[str, torch.Tensor]


@dataclass
class Event:
    """Something the user should know about a run: ``kind`` is "rollback" or "divergence"."""

    iteration: int
    kind: str
    message: str


class NumericalError(RuntimeError):
    """An iteration kept producing NaN/Inf after every allowed rollback.

    The engine is left in the last good state (the start of the failing iteration).
    """


def _mode_power(probe: torch.Tensor) -> list[float]:
    """Power of each orthogonalised mode of ``probe`` (complex (modes, ny, nx)), strongest
    first: the eigenvalues of the overlap G_ij = <m_i, m_j>, in float64 on the CPU."""
    modes = probe.reshape(probe.shape[0], -1)
    overlap = (modes.conj() @ modes.T).cpu().to(torch.complex128)
    return [float(value) for value in torch.linalg.eigvalsh(overlap).flip(0)]


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars and arrays turned into Python numbers and lists, so a
    checkpoint loads with ``torch.load(weights_only=True)`` (no pickled classes)."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_plain(item) for item in value)
    if hasattr(value, "tolist") and not isinstance(value, torch.Tensor):
        return value.tolist()
    return value


class Engine:
    """Runs a reconstruction of ``measured`` intensities with ``params``.

    Parameters
    ----------
    params:
        The parameters (on the device of the run).
    measured:
        Real (N, ny, nx) measured intensities, zero frequency at (ny//2, nx//2); may live
        on the CPU (moved per chunk) or on the device.
    cache:
        Window frequencies, wavelength and band limit of the propagator.
    settings:
        :class:`EngineSettings`.
    grid_shape:
        (scan_y, scan_x) of the positions, for compact batches (optional).
    parallel:
        This process's place in a data-parallel run
        (:mod:`~ptyscope.reconstruction.distributed`): each process computes its share of
        every batch and the gradients are summed before the step; only the main process
        writes checkpoints, warns and shows progress. ``None`` = a single process.
    """

    def __init__(
        self,
        params: PtychoParameters,
        measured: torch.Tensor,
        cache: PropagatorCache,
        settings: EngineSettings,
        grid_shape: tuple[int, int] | None = None,
        parallel: DataParallel | None = None,
    ) -> None:
        if measured.ndim != 3 or measured.shape[0] != params.num_positions:
            raise ValueError(
                f"measured must have shape (N={params.num_positions}, ny, nx), "
                f"got {tuple(measured.shape)}"
            )
        if tuple(measured.shape[1:]) != tuple(params.probe.shape[1:]):
            raise ValueError(
                f"pattern shape {tuple(measured.shape[1:])} must equal the probe window "
                f"{tuple(params.probe.shape[1:])}"
            )
        self.params = params
        self.measured = measured
        self.cache = cache
        self.settings = settings
        self.grid_shape = grid_shape
        self.parallel = parallel if parallel is not None else DataParallel()
        self.parallel.check(params.num_positions, settings.batch_size)
        self.loss_fn = get_loss(settings.loss)
        self.intensity_scale = float(measured.sum(dim=(1, 2)).mean())
        self.history = History()
        self.events: list[Event] = []
        self._diverging = False
        self.iteration = 0
        #: The parameters of the lowest loss so far (``settings.keep_best``), else None.
        self.best: Best | None = None
        #: Settings a checkpoint must have been written with to be resumed here (set by
        #: the run from its config; ``None`` skips the check).
        self.fingerprint: dict[str, Any] | None = None
        #: The fingerprint of the default settings: a setting that a checkpoint predates
        #: (added to ptyscope after it was written) matches when this run uses its default.
        self.fingerprint_defaults: dict[str, Any] = {}
        #: L-BFGS minimises loss / (its loss at the first evaluation): see :meth:`_lbfgs_step`.
        self._lbfgs_scale: float | None = None
        peak = float(params.probe.detach().abs().max())
        groups = []
        for name in GROUPS:
            group = self._group(name)
            lr = group.lr * peak if name == "probe" else group.lr
            groups.append({"params": [params.group(name)], "lr": lr, "name": name})
        self.optimizer = OPTIMIZERS[settings.optimizer](groups, settings)
        limit = settings.chunk_size
        if limit is None:
            limit = auto_chunk_size(
                (int(params.probe.shape[-2]), int(params.probe.shape[-1])),
                int(params.probe.shape[0]),
                int(params.object.shape[0]),
                params.object.device,
            )
        elif limit < 1:
            raise ValueError(f"chunk_size must be >= 1 or None (auto), got {limit!r}")
        #: Most patterns per forward/backward pass (``settings.chunk_size`` or "auto").
        self.chunk_limit: int = limit

    # ------------------------------------------------------------------ batches
    def _order(self, iteration: int) -> list[torch.Tensor]:
        n = self.params.num_positions
        size = self.settings.batch_size
        if size is None or size >= n:
            return [torch.arange(n)]
        generator = torch.Generator().manual_seed(self.settings.seed * 100_003 + iteration)
        if self.settings.batching == "random" or self.grid_shape is None:
            order = torch.randperm(n, generator=generator)
            return list(torch.split(order, size))
        # Compact: square tiles of about batch_size positions, visited in random order.
        sx = self.grid_shape[1]
        side = max(1, round(math.sqrt(size)))
        rows = torch.arange(n) // sx
        cols = torch.arange(n) % sx
        tile = (rows // side) * math.ceil(sx / side) + cols // side
        tiles = [torch.nonzero(tile == t).flatten() for t in torch.unique(tile)]
        return [tiles[int(i)] for i in torch.randperm(len(tiles), generator=generator)]

    def _group(self, name: str) -> GroupSettings:
        """The settings of parameter group ``name`` (a missing group is frozen)."""
        return self.settings.groups.get(name, GroupSettings(fit=False))

    def _active(self, name: str, iteration: int) -> bool:
        return self._group(name).active(iteration)

    # ------------------------------------------------------------------ one pass
    def _loss_and_backward(self, indices: torch.Tensor, iteration: int, total: int) -> float:
        """Accumulate gradients over ``indices`` in chunks; returns the summed loss / total.

        This process's share only: :meth:`_gradient` sums over the processes.
        """
        trainable = self._active("tilt", iteration) or self._active("thickness", iteration)
        device = self.params.object.device
        value = 0.0
        if len(indices) == 0:  # a process's share of a batch smaller than the world
            return value
        for chunk in torch.split(indices, chunk_sizes(len(indices), self.chunk_limit)):
            predicted = predict(
                self.params,
                chunk.to(device),
                self.cache,
                self.intensity_scale,
                propagator_trainable=trainable,
            )
            measured = self.measured[chunk.to(self.measured.device)].to(device)
            loss = self.loss_fn(predicted, measured) / total
            torch.autograd.backward(loss)
            value += float(loss.detach())
            fault_point("iteration")
        return value

    def _mask_inactive(self, iteration: int) -> None:
        for name in GROUPS:
            if not self._active(name, iteration):
                self.params.group(name).grad = None

    def _gradient(self, batch: torch.Tensor, iteration: int, total: int) -> float:
        """Loss / total and gradients of ``batch`` (summed over the processes of a
        data-parallel run), the inactive groups' gradients cleared."""
        value = self._loss_and_backward(self.parallel.shard(batch), iteration, total)
        self._mask_inactive(iteration)
        active = [self.params.group(name) for name in GROUPS if self._active(name, iteration)]
        return self.parallel.all_reduce(active, value, self.params.object.device)

    def step(self) -> float:
        """Run one iteration; returns its loss (mean per pattern)."""
        iteration = self.iteration
        n = self.params.num_positions
        start = time.perf_counter()
        before = self._parameters_copy() if self.settings.keep_best else None
        if self.settings.optimizer == "lbfgs":
            loss = self._lbfgs_step(iteration, n)
        else:
            loss = 0.0
            with self._warmed_up(iteration):
                for batch in self._order(iteration):
                    self.optimizer.zero_grad(set_to_none=True)
                    loss += self._gradient(batch, iteration, n)
                    self.optimizer.step()
        better = self.best is None or loss < self.best.loss
        if before is not None and math.isfinite(loss) and better:
            self.best = Best(iteration, loss, before)
        if self.settings.lr_decay != 1.0:
            for group in self.optimizer.param_groups:
                group["lr"] *= self.settings.lr_decay
        with torch.no_grad():
            for constraint in self.settings.constraints:
                if constraint.schedule.due(iteration):
                    constraint.apply(self.params, iteration)
        # The tilt and thickness may have moved (by a gradient step or a constraint such
        # as the tilt alignment): rebuild the propagator next iteration (cheap, once).
        self.cache.clear()
        tilt = self.params.tilt.detach().reshape(-1, 2).mean(dim=0)
        self.history.loss.append(loss)
        self.history.tilt_y_mrad.append(float(tilt[0]))
        self.history.tilt_x_mrad.append(float(tilt[1]))
        self.history.slice_thickness_ang.append(float(self.params.thickness.detach()))
        self.history.probe_mode_power.append(_mode_power(self.params.probe.detach()))
        self.history.seconds.append(time.perf_counter() - start)
        self.iteration += 1
        return loss

    def _lbfgs_step(self, iteration: int, n: int) -> float:
        """One L-BFGS iteration on all patterns; returns the loss at its start.

        torch's L-BFGS has absolute scales: its first step is lr · min(1, 1/‖g‖₁) · g, and
        it stops below fixed gradient and change tolerances. The loss, a mean per pattern of
        patterns that sum to ~1, is small and its gradient smaller (near convergence of a
        mixed-state run ‖g‖₁ ~ 4e-4 at a loss of 1.2e-6), so the first step moved pixels by
        1e-8 and the line search, lost in float32 round-off, never left the start. It
        therefore minimises the loss divided by its value at the first evaluation (kept
        for the whole run and in checkpoints, so the curvature pairs stay consistent).
        """

        def closure() -> torch.Tensor:
            self.optimizer.zero_grad(set_to_none=True)
            value = self._gradient(torch.arange(n), iteration, n)
            if self._lbfgs_scale is None and math.isfinite(value) and value > 0:
                self._lbfgs_scale = 1.0 / value
            scale = self._lbfgs_scale or 1.0
            for name in GROUPS:
                grad = self.params.group(name).grad
                if grad is not None:
                    grad.mul_(scale)
            return torch.tensor(value * scale)

        scaled = float(self.optimizer.step(closure))  # type: ignore[arg-type]
        return scaled / (self._lbfgs_scale or 1.0)

    @contextlib.contextmanager
    def _warmed_up(self, iteration: int) -> Iterator[None]:
        """Inside the block each group's learning rate is scaled by its warm-up factor
        (:meth:`GroupSettings.warmup_factor`); the rates are restored exactly after it."""
        saved = [group["lr"] for group in self.optimizer.param_groups]
        for group in self.optimizer.param_groups:
            group["lr"] = group["lr"] * self._group(group["name"]).warmup_factor(iteration)
        try:
            yield
        finally:
            for group, lr in zip(self.optimizer.param_groups, saved, strict=True):
                group["lr"] = lr

    def run(self, stop_after: int | None = None) -> History:
        """Iterate up to ``settings.iterations`` (or stop after ``stop_after`` more)."""
        target = self.settings.iterations
        if stop_after is not None:
            target = min(target, self.iteration + stop_after)
        with tqdm(
            total=target - self.iteration,
            desc="reconstruct",
            unit="it",
            disable=not (self.settings.progress and self.parallel.is_main),
        ) as bar:
            while self.iteration < target:
                loss = self.guarded_step() if self.settings.guard else self.step()
                bar.set_postfix(loss=f"{loss:.4g}")
                bar.update()
                every = self.settings.checkpoint_every
                if every and self.settings.checkpoint_path and self.iteration % every == 0:
                    self.save_checkpoint(self.settings.checkpoint_path)
        return self.history

    def _parameters_copy(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.params.state_dict().items()}

    @contextlib.contextmanager
    def best_parameters(self) -> Iterator[int]:
        """Inside the block the parameters are those of the lowest loss (with
        ``settings.keep_best`` and at least one iteration; otherwise the current ones);
        yields how many updates they have had. The current parameters are restored after
        the block."""
        if self.best is None or not self.settings.keep_best:
            yield self.iteration
            return
        current = self._parameters_copy()
        self.params.load_state_dict(self.best.params)
        self.cache.clear()
        try:
            yield self.best.iteration
        finally:
            self.params.load_state_dict(current)
            self.cache.clear()

    # ------------------------------------------------------------------ numerical guard
    def guarded_step(self) -> float:
        """:meth:`step` with the rollback on NaN/Inf and the divergence report."""
        good = copy.deepcopy(self.state_dict())
        for attempt in range(self.settings.max_rollbacks + 1):
            loss = self.step()
            problem = self._nonfinite(loss)
            if problem is None:
                self._watch_divergence()
                return loss
            iteration = self.iteration - 1
            events = self.events  # the rollbacks of this iteration stay on the record
            self.load_state_dict(copy.deepcopy(good))
            self.events = events
            if attempt == self.settings.max_rollbacks:
                raise NumericalError(
                    f"iteration {iteration}: {problem} after {attempt} rollbacks with the "
                    f"learning rates scaled by {self.settings.rollback_lr_factor} each time; "
                    "the state before this iteration is kept. Check the data for bad "
                    "patterns and lower the learning rates (object.lr, probe.lr, ...)."
                )
            for group in self.optimizer.param_groups:
                group["lr"] *= self.settings.rollback_lr_factor
            self._report(
                iteration,
                "rollback",
                f"{problem}: rolled back and repeated with the learning rates × "
                f"{self.settings.rollback_lr_factor}",
            )
        raise AssertionError("unreachable")  # pragma: no cover

    def _nonfinite(self, loss: float) -> str | None:
        """A description of the first NaN/Inf in a parameter or the loss, else ``None``.

        Parameters first: a bad step poisons a parameter and, through it, every later loss.
        """
        for name in GROUPS:
            value = self.params.group(name).detach()
            if not bool(torch.isfinite(value).all()):
                bad = int((~torch.isfinite(value)).sum())
                return f"parameter {name!r} has {bad} non-finite elements"
        if not math.isfinite(loss):
            return f"the loss is {loss}"
        return None

    def _watch_divergence(self) -> None:
        losses = self.history.loss
        window = self.settings.divergence_window
        if losses[-1] <= min(losses):
            self._diverging = False  # a new best: re-arm
        if self._diverging or len(losses) <= window:
            return
        recent = losses[-window - 1 :]
        rises = sum(after > before for before, after in itertools.pairwise(recent))
        if rises >= 0.8 * window and recent[-1] > 1.02 * recent[0]:
            self._diverging = True
            self._report(
                self.iteration - 1,
                "divergence",
                f"the loss rose in {rises} of the last {window} iterations, from "
                f"{recent[0]:.5g} to {recent[-1]:.5g} (best {min(losses):.5g}); lower the "
                "learning rates or start the probe/position/tilt fits later",
            )

    def _report(self, iteration: int, kind: str, message: str) -> None:
        self.events.append(Event(iteration, kind, message))
        if self.parallel.is_main:  # every process records it; one says it
            warnings.warn(f"iteration {iteration}: {message}", RuntimeWarning, stacklevel=3)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "fingerprint": self.fingerprint,
            "iteration": self.iteration,
            "params": self.params.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "history": dataclasses.asdict(self.history),
            "events": [dataclasses.asdict(event) for event in self.events],
            "diverging": self._diverging,
            "constraints": _plain([dataclasses.asdict(c) for c in self.settings.constraints]),
            "best": None if self.best is None else vars(self.best).copy(),  # no tensor copies
            "lbfgs_scale": self._lbfgs_scale,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.params.load_state_dict(state["params"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.history = History(**state["history"])
        self.events = [Event(**event) for event in state["events"]]
        self._diverging = bool(state["diverging"])
        self.iteration = int(state["iteration"])
        best = state.get("best")  # absent in checkpoints written before keep_best
        self.best = None if best is None else Best(**best)
        self._lbfgs_scale = state.get("lbfgs_scale")  # absent before 2026-11-24: set anew
        for constraint, saved in zip(self.settings.constraints, state["constraints"], strict=True):
            for key, value in saved.items():
                if key != "schedule":
                    setattr(constraint, key, value)
        self.cache.clear()

    def save_checkpoint(self, path: Path) -> None:
        """Write the full engine state atomically (an interrupted write keeps the old one).

        In a data-parallel run only the main process writes (all hold the same state).
        """
        if not self.parallel.is_main:
            return
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            sink = _KillMidWrite(handle) if armed("checkpoint_write") else handle
            torch.save(self.state_dict(), sink)

    def load_checkpoint(self, path: Path) -> None:
        """Continue from the checkpoint at ``path``.

        Loaded without unpickling code (``weights_only``). Refused, with the reason, when
        the file is not a readable ptyscope checkpoint, was written by a run with other
        settings (:attr:`fingerprint`), or holds parameters of other shapes.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint not found: {str(path)!r}")
        device = self.params.object.device
        try:
            state = torch.load(path, map_location=device, weights_only=True)
        except (RuntimeError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile) as exc:
            raise ValueError(
                f"checkpoint {str(path)!r} is unreadable ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}); delete it to start over"
            ) from None
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            found = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise ValueError(
                f"{str(path)!r} is not a ptyscope checkpoint (format must be "
                f"{CHECKPOINT_FORMAT!r}, got {found!r})"
            )
        differences = _differences(
            state.get("fingerprint"), self.fingerprint, self.fingerprint_defaults
        )
        if differences:
            raise ValueError(
                f"checkpoint {str(path)!r} was written by a run with other settings "
                f"({'; '.join(differences)}); resume with the same config, or delete the "
                "checkpoint to start over"
            )
        try:
            self.load_state_dict(state)
        except (RuntimeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f"checkpoint {str(path)!r} does not fit this run ({str(exc).splitlines()[0]}); "
                "delete it to start over"
            ) from None


def _differences(
    saved: dict[str, Any] | None, current: dict[str, Any] | None, defaults: dict[str, Any]
) -> list[str]:
    """``"key: checkpoint A, config B"`` for every setting that differs (none if unknown).

    A setting missing from the checkpoint (it predates the setting) matches its default.
    """
    if saved is None or current is None:
        return []
    saved = {**{k: v for k, v in defaults.items() if k in current}, **saved}
    keys = sorted(set(saved) | set(current))
    return [
        f"{key}: checkpoint {saved.get(key)!r}, config {current.get(key)!r}"
        for key in keys
        if saved.get(key) != current.get(key)
    ]


class _KillMidWrite:
    """A file wrapper that reaches the ``checkpoint_write`` fault point after the first
    chunk is written (fault-injection tests only; see :mod:`ptyscope._faults`)."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        self._visited = False

    def write(self, data: bytes) -> int:
        count: int = self._handle.write(data)
        if count and not self._visited:  # once per checkpoint, with bytes on the disk
            self._visited = True
            self._handle.flush()
            fault_point("checkpoint_write")
        return count

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)
