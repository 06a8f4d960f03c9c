"""Mixed-object ptychography and CAVIAR on a thin crystal with known vibrations.

Reproduces the simulated experiments of Gladyshev et al. (2025, Fig. 2) on data from
ptyscope's simulator. The specimen is a tetragonal crystal (a = 4 Å, c = 3 Å, 2 layers) with
Sr at (0, 0, 0) and Ti at (a/2, a/2, 0). Viewed along z its columns form a checkerboard, and
its vibrations come from central springs to the first two shells (k1, 0.4·k1). The periodic
supercell has N × N × 2 cells, and the scan covers exactly one period of it (300 kV,
25 mrad, 40 Å underfocus, 0.5 Å steps, noise-free).

Four datasets (and a fifth on request), each the incoherent sum over M frozen
configurations:

* static: one snapshot repeated (no thermal diffuse scattering);
* einstein: independent Gaussian displacements, with the harmonic model's rms per atom;
* correlated: M exact snapshots of the harmonic model;
* coherence: the correlated snapshots with partial spatial coherence simulated as the
  paper did, by averaging neighbouring patterns with Gaussian weights (σ = 0.2 Å ≈ 47 pm
  FWHM on 0.5 Å steps). That is a mixed probe whose first mode holds 85 % of the power
  and 5 modes 99 %; the Gaussian source of the same σ holds 44 % in its first mode and
  needs 11 for 99 % (:func:`ptyscope.physics.probe.source_modes`);
* source (only with ``--only source``): the correlated snapshots with that exact Gaussian
  source (17 simulated probe modes), reconstructed with 11 modes that start as the
  source's.

Each is reconstructed with the two-stage preset:

1. one object state with the probe fitted (``--probe-modes``, 4 by default, for the
   coherence case);
2. M object states, the probe modes held for 150 iterations and then fitted with them.

Per state, the column positions are measured on the phase summed over the slices. The
script then prints:

* the LSM and CSM of the Green's tensor blocks (self plus nearest neighbours) against
  those of the true snapshots' column displacements; then CSM over the self blocks and
  over the neighbour blocks alone, and, as "(M/∞)", the neighbour CSM of the M true
  snapshots against a 400-snapshot estimate of the same model: how much of the M
  snapshots' neighbour correlation is sampling noise (CAVIAR's 0.98 is close to what the
  self blocks give; its Fig. 2 draws self-correlations for every atom and neighbour
  correlations for one reference atom);
* "LSMc" and "CSMc": the same two metrics on CAVIAR's own vector set, the self blocks of
  the scored columns and the blocks of one reference column (the central one) with its 4
  nearest neighbours;
* the ratio of neighbour to self correlation, two ways, for the reconstruction and for
  the true snapshots: "nb/self", the mean norm of the 2 × 2 neighbour blocks over the
  mean norm of the self blocks, pair by pair; and "avg", the same after averaging the
  blocks over equivalent pairs (same basis atoms and cell offset, as CAVIAR Fig. 4 does).
  With M snapshots a pair's sampled correlation carries noise of relative size ~1/√M,
  which the pair-by-pair ratio adds up: the true Einstein snapshots (independent
  columns) give 0.39 with 12 snapshots and 0.18 with 48, but 0.18 and 0.09 averaged;
* "snap": the share of the states' phase deviations (from their mean, over the scored
  area) that linear combinations of the true snapshots' deviations explain, and "(ind)"
  the share of the true snapshots' deviations that an independent draw of snapshots
  from the same model explains: the level that states with the right statistics but
  unrelated configurations would reach. The data fix the ensemble's statistics more
  firmly than its members, so snap can stay near (ind) while the correlations come out;
* B = 8π²(⟨u_x²⟩ + ⟨u_y²⟩);
* Kong's branch-averaged frequencies at the supercell's commensurate q. These are given
  for the reconstruction, for the true snapshots through the same analysis, and from the
  exact harmonic model.

The data are simulated without the ⅔ anti-aliasing band limit, on the sampling the
reconstruction then uses (0.12 Å), so that the reconstruction's model can represent the
true states; ``--antialias`` restores the band limit for comparison.

``--fixed-probe`` is a diagnostic: stage 1 keeps the simulation's probe instead of
fitting it, which separates the probe's errors from the states' (docs/mixed_object_log.md).
Stage 2 fits the probe again from its iteration 150 on (``--refit-probe START``), once the
states carry the thermal scattering that the stage-1 probe partly took up;
``--hold-probe`` keeps the stage-1 probe throughout, as the preset did before 2026-11-24.
``--fixed-probe`` implies it. ``--probe-stop STOP`` holds the refitted probe again from
stage 2's iteration STOP on (partially coherent data: the modes first give the thermal
scattering back to the states, then take it back). ``--probe-warmup K`` raises the
refit's step linearly over its first K iterations (Adam's first step otherwise moves every
probe pixel by the full step and throws the loss up). ``--adam-beta2`` sets stage 2's
``optimization.adam_beta2`` (default 0.999). ``--lbfgs K`` goes on from stage 2's states
with K L-BFGS iterations (stage 3, ``init.states = "keep"``, the probe held and the
amplitude limit off; its rows are numbered on from stage 2's last).
``--workdir DIR`` keeps the data, results and checkpoints; the same command with more
``--iterations`` goes on with stage 2 from its last checkpoint.

Run: ``python validation/mixed_object.py [--cells 3] [--states 12] [--iterations 800]
[--only correlated] [--antialias] [--fixed-probe | --hold-probe] [--refit-probe 150]
[--probe-stop STOP] [--probe-warmup K] [--adam-beta2 B2] [--lbfgs K] [--probe-modes N]
[--workdir DIR]``
(800 stage-2 iterations by default: about 30 minutes per dataset on 2 cores, 2 hours for
the partially coherent one with its 4 probe modes).
"""

from __future__ import annotations

import argparse
import functools
import math
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import ase
import numpy as np
import torch

from ptyscope.analysis.columns import Lattice, assign_sites
from ptyscope.analysis.dispersion import branch_averages, kong_dispersion
from ptyscope.analysis.images import load_phase_states
from ptyscope.analysis.registration import sample_periodic
from ptyscope.analysis.truth import column_displacements
from ptyscope.analysis.vibrations import (
    average_equivalent_pairs,
    correlation_pairs,
    debye_waller,
    displacements,
    greens_tensor,
    pair_blocks,
    pair_cosines,
    similarity,
    state_positions,
)
from ptyscope.config import ReconstructionConfig
from ptyscope.io.datafile import read_dataset, write_dataset
from ptyscope.physics.constants import interaction_constant
from ptyscope.reconstruction.run import checkpoint_path, run_reconstruction
from ptyscope.simulation.acquisition import apply_source_size
from ptyscope.simulation.lattice_dynamics import (
    ForceConstantBlocks,
    force_constant_blocks,
    in_plane_dispersion,
    sample_supercell,
)
from ptyscope.simulation.phonons import einstein_displacements
from ptyscope.simulation.potential import slice_potential, specimen_grid
from ptyscope.simulation.stem4d import (
    ProbeSettings,
    ScanSettings,
    SimulationResult,
    simulate_4dstem,
)

A, C, LAYERS = 4.0, 3.0, 2
MASSES_AMU = (87.62, 47.87)  # Sr, Ti
SPRING_EV_PER_ANG2 = 0.6
TEMPERATURE_K = 300.0
PROBE = ProbeSettings(300e3, 25.0, {"defocus": 40.0})
STEP_ANG = 0.5
#: Simulation pixel and probe window: 80 × 80 pixels of 0.12 Å. Without a band limit the
#: detector keeps all of them, so the reconstruction's pixel (window / detector pixels) is
#: the simulation's, on the same grid, and the true states fit the data to round-off
#: (loss 6e-14). Until 2026-11-24 the window was 75 pixels (9.0 Å), the detector kept 74,
#: and the reconstruction worked on 0.1216 Å pixels, where the true states, interpolated,
#: have a loss of 4e-6 to 1.7e-5: more than the reconstructions reach
#: (docs/mixed_object_log.md, "One pixel short"). The simulator now makes such windows even.
SAMPLING_ANG, WINDOW_ANG = 0.12, 9.6
SOURCE_SIGMA_ANG = 0.2
CASES = ("static", "einstein", "correlated", "coherence")
#: Run only when named (``--only source``): the exact Gaussian source needs ~11 probe modes
#: and 17 simulated ones, GPU work.
EXTRA_CASES = ("source",)
#: Probe modes by case (``--probe-modes`` overrides): 5 hold 99 % of the scan average's
#: power, but the preset was measured with 4; 11 hold 99 % of the exact source's.
DEFAULT_MODES = {"coherence": 4, "source": 11}
#: Band limit of the simulation (``--antialias``: ⅔). Off by default: the reconstruction
#: has no band limit and works on the detector's sampling, so only data simulated the same
#: way can be fitted exactly by the true states. With ⅔ the reconstruction's pixel is 1.5×
#: the simulation's and the true states fit the data worse than the reconstruction does
#: (docs/mixed_object_log.md, "Where the problem lies").
ANTIALIAS_FRACTION: float | None = None


def crystal() -> tuple[ase.Atoms, ForceConstantBlocks]:
    cell = ase.Atoms("SrTi", positions=[(0, 0, 0), (A / 2, A / 2, 0)], cell=[A, A, C], pbc=True)
    shells = [(3.1, SPRING_EV_PER_ANG2), (4.2, 0.4 * SPRING_EV_PER_ANG2)]
    return cell, force_constant_blocks(cell, shells)


def snapshots(case: str, cells: int, states: int, seed: int = 0) -> tuple[ase.Atoms, np.ndarray]:
    cell, blocks = crystal()
    supercell: ase.Atoms = cell.repeat((cells, cells, LAYERS))  # type: ignore[no-untyped-call]
    generator = np.random.default_rng(seed)
    u = sample_supercell(blocks, (cells, cells, LAYERS), TEMPERATURE_K, states, generator)
    if case == "static":
        u = np.repeat(u[:1], states, axis=0)
    elif case == "einstein":
        rms = float(np.sqrt(np.mean(u**2)))
        u = einstein_displacements(supercell, rms, states, np.random.default_rng(seed + 1))
    return supercell, u


def reconstruct(
    root: Path,
    case: str,
    cells: int,
    states: int,
    iterations: int,
    every: int,
    optimizer: str = "adam",
    fixed_probe: bool = False,
    refit_probe: int | None = None,
    probe_stop: int | None = None,
    probe_warmup: int = 0,
    adam_beta2: float = 0.999,
    lbfgs: int = 0,
    probe_modes: int | None = None,
) -> Iterator[tuple[int, Path]]:
    """Stage 1, then stage 2 in segments of ``every`` iterations (resumed exactly from its
    checkpoint); yields (stage-2 iterations done, result) after each segment.
    ``fixed_probe``: stage 1 keeps the simulation's probe instead of fitting it.
    ``refit_probe``: stage 2 fits the probe again from that iteration on, until
    ``probe_stop`` (``None``: to the end), its step rising over ``probe_warmup``
    iterations. ``lbfgs``: then that many L-BFGS iterations from stage 2's states (stage
    3: probe held, no amplitude limit), yielded as (``iterations`` + done, result) every
    5. ``probe_modes``: the partially coherent cases' number of probe modes (``None``: the
    case's default)."""
    # A --workdir keeps these files, so their names carry what sets their contents apart;
    # a stage 2 with other settings is refused when it is resumed.
    tag = f"{case}-{cells}cells-{states}states" + ("-antialias" if ANTIALIAS_FRACTION else "")
    data = root / f"{tag}.h5"
    sampling: dict[str, str | float | int] = {
        "validation_sampling_ang": SAMPLING_ANG,
        "validation_window_ang": WINDOW_ANG,
    }
    if case == "coherence":  # replicated scan edges until 2026-11-25
        sampling["validation_scan_average"] = f"sigma {SOURCE_SIGMA_ANG} A, periodic"
    elif case == "source":
        sampling["validation_source"] = f"Gaussian, sigma {SOURCE_SIGMA_ANG} A, exact modes"
    if not data.exists():
        dataset = simulate(case, cells, states).dataset
        dataset.metadata.update(sampling)
        write_dataset(data, dataset)
    metadata = read_dataset(data, lazy=True).metadata  # the patterns stay on disk
    stored = {key: metadata.get(key) for key in sampling}
    if stored != sampling:  # e.g. the 75-px window used until 2026-11-24
        raise SystemExit(
            f"{data} was simulated with {stored}, this validation simulates {sampling}: "
            "delete it (and the results beside it), or use another --workdir"
        )
    default_modes = DEFAULT_MODES.get(case, 1)
    modes = default_modes if probe_modes is None or default_modes == 1 else probe_modes
    # Results with other than the case's default number of modes carry their number.
    results = tag + (f"-{modes}modes" if modes != default_modes else "")
    # The exact source's modes start as the source's (probe.source_sigma_ang, σ known).
    source_init = {"source_sigma_ang": SOURCE_SIGMA_ANG} if case == "source" else {}

    def config(name: str, **sections: dict[str, object]) -> ReconstructionConfig:
        raw: dict[str, dict[str, object]] = {
            "data": {"path": str(data)},
            "probe": {
                "defocus_ang": 40.0,
                "start": 1,
                "modes": modes,
                "hold_defocus": True,
                **source_init,
            },
            "object": {"slices": LAYERS, "slice_thickness_ang": C},
            "optimization": {"iterations": 60, "batch_size": None, "checkpoint_every": 50},
            "output": {"path": str(root / f"{results}_{name}.h5")},
        }
        for key, values in sections.items():
            raw[key] = {**raw[key], **values} if key in raw else values
        return ReconstructionConfig.model_validate(raw)

    stage1_config = (
        config("stage1-trueprobe", probe={"fit": False}) if fixed_probe else config("stage1")
    )
    stage1_result = stage1_config.output.path
    if not stage1_result.exists():
        run_reconstruction(stage1_config, progress=False, write_html_report=False)
    refit: dict[str, object] = {"fit": False}
    if refit_probe is not None:
        refit = {"fit": True, "start": refit_probe, "stop": probe_stop, "warmup": probe_warmup}
    stage2 = config(
        "stage2",
        probe=refit,
        object={"states": states, "state_weights": "equal", "state_noise_rad": 0.02},
        optimization={
            "iterations": iterations,
            "optimizer": optimizer,
            "adam_beta2": adam_beta2,
        },
        init={"result": str(stage1_result)},
    )
    yield from _segments(stage2, every)
    if not lbfgs:
        return
    stage3 = config(
        "stage3-lbfgs",
        probe={"fit": False},
        object={"states": states, "state_weights": "equal", "amplitude_limit": False},
        optimization={"iterations": lbfgs, "optimizer": "lbfgs", "checkpoint_every": 5},
        init={"result": str(stage2.output.path), "states": "keep"},
    )
    for done, result in _segments(stage3, 5):
        yield iterations + done, result


def _segments(config: ReconstructionConfig, every: int) -> Iterator[tuple[int, Path]]:
    """Run ``config`` in segments ending at multiples of ``every`` iterations, each resumed
    exactly from the last checkpoint (also one that a --workdir kept from an earlier run);
    yields (iterations done, result) after each."""
    total = config.optimization.iterations
    done, resume = 0, False
    checkpoint = checkpoint_path(config.output.path)
    if checkpoint.exists():
        done, resume = int(torch.load(checkpoint, weights_only=False)["iteration"]), True
    while done < total:
        step = min(every - done % every, total - done)
        run = run_reconstruction(
            config, progress=False, write_html_report=False, resume=resume, stop_after=step
        )
        done, resume = run.engine.iteration, True
        yield done, run.result_path


def simulate(case: str, cells: int, states: int) -> SimulationResult:
    """The case's 4D-STEM data: the scan covers one period of the supercell.

    The partially coherent case averages neighbouring patterns with Gaussian weights, as
    Gladyshev et al. (2025) simulated it (:func:`apply_source_size`), not the exact
    Gaussian source of the same σ, which is far less coherent (its first probe mode holds
    44 % of the power against 85 %; docs/mixed_object_log.md). The scan covers one period
    of the supercell, so the average wraps around its edges; until 2026-11-25 it
    replicated them, and 92 of the 576 patterns were no probe's."""
    supercell, u = snapshots(case, cells, states)
    n = round(cells * A / STEP_ANG)
    result = simulate_4dstem(
        supercell,
        PROBE,
        ScanSettings((n, n), (STEP_ANG, STEP_ANG), origin_ang=(0.0, 0.0)),
        sampling_ang=SAMPLING_ANG,
        slice_thickness_ang=C,
        window_ang=WINDOW_ANG,
        displacements_ang=u,
        antialias_fraction=ANTIALIAS_FRACTION,
        source_sigma_ang=SOURCE_SIGMA_ANG if case == "source" else 0.0,
    )
    if case == "coherence":
        data = torch.from_numpy(result.dataset.data)
        # The scan covers one period: the neighbours beyond an edge are the opposite edge's.
        averaged = apply_source_size(data, STEP_ANG, SOURCE_SIGMA_ANG, periodic=True)
        result.dataset.data = averaged.numpy()
    return result


def exact_branches(q_reduced: np.ndarray) -> np.ndarray:
    """In-plane frequencies of the harmonic model at q_z = 0, averaged per branch [THz]."""
    _, blocks = crystal()
    result: np.ndarray = in_plane_dispersion(blocks, q_reduced / A).mean(axis=0)
    return result


@functools.cache
def true_phases(
    case: str,
    cells: int,
    states: int,
    shape: tuple[int, int],
    pixel: tuple[float, float],
    origin: tuple[float, float],
    seed: int = 0,
) -> np.ndarray:
    """The snapshots' phase, σ·(projected potential summed over the slices), on the
    object grid of a result: float (states, ny, nx) [rad]. ``seed=1``: an independent draw
    of snapshots from the same model."""
    supercell, u = snapshots(case, cells, states, seed)
    grid = specimen_grid(supercell, SAMPLING_ANG)
    sigma = interaction_constant(PROBE.energy_ev)
    phases = []
    for displaced in u:
        potential = slice_potential(
            supercell, grid, C, displacements_ang=displaced, dtype=torch.float64
        )
        phase = sigma * potential.slices_vang.sum(dim=0).numpy()
        phases.append(sample_periodic(phase, grid.pixel_size_ang, origin, shape, pixel))
    return np.stack(phases)


def snapshot_share(phases: np.ndarray, snapshots_phase: np.ndarray) -> float:
    """Share of the states' phase deviations from their mean that linear combinations of
    the snapshots' deviations explain (least squares over the pixels; each state's mean
    removed, since a constant phase per state leaves the patterns unchanged). 1: every
    state is a mixture of snapshots; NaN for snapshots without motion."""

    def deviations(stack: np.ndarray) -> np.ndarray:
        flat: np.ndarray = (stack - stack.mean(axis=0)).reshape(len(stack), -1)
        centred: np.ndarray = flat - flat.mean(axis=1, keepdims=True)
        return centred

    target, basis = deviations(phases), deviations(snapshots_phase)
    if not np.any(np.abs(basis) > 1e-9):
        return math.nan
    coefficients, *_ = np.linalg.lstsq(basis.T, target.T, rcond=None)
    residual = target - (basis.T @ coefficients).T
    return float(1.0 - np.sum(residual**2) / np.sum(target**2))


def analyse(result: Path, case: str, cells: int, states: int) -> dict[str, object]:
    supercell, u = snapshots(case, cells, states)
    columns, true_u = column_displacements(supercell.positions, u)
    phase, image, _ = load_phase_states(result)
    pixel, origin = image.pixel_size_ang, image.origin_ang
    projected = phase.sum(axis=1, keepdims=True)  # thin crystal: the projection
    found = state_positions(projected, columns, pixel, 0.9, origin_ang=origin)[:, 0]
    rows, cols = image.inner_slices(1.0)  # the scored area, as for the columns below
    grid_key = (image.phase_rad.shape, pixel, origin)
    true_phase = true_phases(case, cells, states, *grid_key)[:, rows, cols]
    snapshot = snapshot_share(projected[:, 0, rows, cols], true_phase)
    chance = snapshot_share(
        true_phase, true_phases(case, cells, states, *grid_key, seed=1)[:, rows, cols]
    )
    g_rec = greens_tensor(displacements(found))
    g_true = greens_tensor(displacements(true_u))
    if case == "static":  # score against the vibrations that are absent from the data
        _, vibrating = snapshots("correlated", cells, states)
        g_true = greens_tensor(
            displacements(column_displacements(supercell.positions, vibrating)[1])
        )
    # Scored on the columns at least 1 Å inside the scanned area (those on its edge are
    # seen by half the probe positions); self pairs and the 4 nearest neighbours (2.83 Å).
    scan_end = round(cells * A / STEP_ANG - 1) * STEP_ANG
    inner = np.nonzero(np.all((columns >= 1.0) & (columns <= scan_end - 1.0), axis=1))[0]
    pairs = inner[correlation_pairs(columns[inner], 2.9)]
    rec_blocks, true_blocks = pair_blocks(g_rec, pairs), pair_blocks(g_true, pairs)
    scores = similarity(rec_blocks, true_blocks)
    cosines = pair_cosines(rec_blocks, true_blocks)
    self_pair = pairs[:, 0] == pairs[:, 1]
    # CAVIAR's own vector set (Fig. 2): the self-correlation of every column and the
    # correlations of one reference column with its neighbours; here the inner column
    # nearest the centre of the inner ones is the reference.
    inner_columns = columns[inner]
    centre = inner_columns.mean(axis=0)
    reference = inner[np.argmin(np.linalg.norm(inner_columns - centre, axis=1))]
    caviar_set = self_pair | (pairs[:, 0] == reference)
    caviar_scores = similarity(rec_blocks[caviar_set], true_blocks[caviar_set])
    # How far M snapshots' own neighbour blocks are from the model's (a 400-snapshot
    # estimate): the sampling noise a reconstruction of M states is scored through.
    _, many = snapshots("correlated" if case == "static" else case, cells, 400, seed=5)
    g_many = greens_tensor(displacements(column_displacements(supercell.positions, many)[1]))
    sampling = pair_cosines(true_blocks, pair_blocks(g_many, pairs))
    lattice = Lattice((0.0, 0.0), (0.0, A), (A, 0.0), (("Sr", (0.0, 0.0)), ("Ti", (0.5, 0.5))))
    cell_index, basis, _ = assign_sites(columns, lattice)
    ratios = {
        name: neighbour_ratios(g, pairs, cell_index, basis)
        for name, g in (("rec", g_rec), ("truth", greens_tensor(displacements(true_u))))
    }
    q = np.array(
        [(i / cells, j / cells) for i in range(cells // 2 + 1) for j in range(i + 1) if i or j]
    )
    masses = np.array(MASSES_AMU) * LAYERS  # a column of LAYERS atoms moves as one body
    branches = {}
    for name, disp in (("rec", displacements(found)), ("truth", displacements(true_u))):
        try:
            dispersion = kong_dispersion(disp, cell_index, basis, masses, TEMPERATURE_K, q)
            branches[name] = branch_averages(dispersion)
        except ValueError:
            branches[name] = np.full(4, np.nan)
    return {
        "lsm": scores.lsm,
        "csm": scores.csm,
        "lsm_caviar_set": caviar_scores.lsm,
        "csm_caviar_set": caviar_scores.csm,
        "csm_self": float(cosines[self_pair].mean()),
        "csm_neighbours": float(cosines[~self_pair].mean()),
        "csm_neighbours_sampling": float(sampling[~self_pair].mean()),
        "neighbour_ratio": ratios["rec"][0],
        "neighbour_ratio_avg": ratios["rec"][1],
        "neighbour_ratio_truth": ratios["truth"][0],
        "neighbour_ratio_avg_truth": ratios["truth"][1],
        "snapshot_share": snapshot,
        "snapshot_share_chance": chance,
        "b_rec": float(debye_waller(g_rec).mean()),
        "b_true": float(debye_waller(greens_tensor(displacements(true_u))).mean()),
        "branches_rec": branches["rec"],
        "branches_truth": branches["truth"],
        "branches_exact": exact_branches(q),
    }


def neighbour_ratios(
    greens: np.ndarray, pairs: np.ndarray, cells: np.ndarray, basis: np.ndarray
) -> tuple[float, float]:
    """(pair by pair, averaged over equivalent pairs) ratio of the neighbour blocks' mean
    norm to the self blocks' (module docstring)."""
    norms = np.linalg.norm(pair_blocks(greens, pairs), axis=(1, 2))
    self_pair = pairs[:, 0] == pairs[:, 1]
    plain = float(norms[~self_pair].mean() / norms[self_pair].mean())
    average = average_equivalent_pairs(greens, pairs, cells, basis)
    mean_norms = np.linalg.norm(average.blocks, axis=(1, 2))
    self_kind = average.is_self
    return plain, float(mean_norms[~self_kind].mean() / mean_norms[self_kind].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=3, help="supercell N (N x N x 2 cells)")
    parser.add_argument("--states", type=int, default=12, help="snapshots = object states")
    parser.add_argument("--iterations", type=int, default=800, help="stage-2 iterations")
    parser.add_argument("--only", choices=CASES + EXTRA_CASES, action="append")
    parser.add_argument("--every", type=int, default=100, help="print a row every N iterations")
    parser.add_argument(
        "--optimizer", default="adam", choices=["adam", "sgd", "lbfgs"], help="stage 2"
    )
    parser.add_argument(
        "--antialias", action="store_true", help="simulate with the ⅔ band limit (inconsistent)"
    )
    parser.add_argument(
        "--fixed-probe",
        action="store_true",
        help="diagnostic: stage 1 keeps the simulation's probe (no probe is fitted at all)",
    )
    parser.add_argument(
        "--refit-probe",
        type=int,
        default=150,
        metavar="START",
        help="stage 2 fits the probe again from its iteration START on (the preset: 150)",
    )
    parser.add_argument(
        "--probe-stop",
        type=int,
        metavar="STOP",
        help="stage 2 holds the refitted probe again from its iteration STOP on",
    )
    parser.add_argument(
        "--probe-warmup",
        type=int,
        default=0,
        metavar="K",
        help="the refit's step rises linearly to the full step over its first K iterations",
    )
    parser.add_argument(
        "--adam-beta2",
        type=float,
        default=0.999,
        metavar="B2",
        help="stage 2's optimization.adam_beta2 (Adam's squared-gradient decay)",
    )
    parser.add_argument(
        "--lbfgs",
        type=int,
        default=0,
        metavar="K",
        help="after stage 2, K L-BFGS iterations from its states (probe held; rows every 5)",
    )
    parser.add_argument(
        "--hold-probe",
        action="store_true",
        help="stage 2 keeps the stage-1 probe throughout (the preset before 2026-11-24)",
    )
    parser.add_argument(
        "--probe-modes",
        type=int,
        metavar="N",
        help="probe modes of the partially coherent cases (default: 4 for coherence, 11 for "
        "source)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        help="keep data, results and checkpoints here; run again to go on with stage 2",
    )
    args = parser.parse_args()
    no_refit = args.hold_probe or args.fixed_probe
    if args.probe_stop is not None and no_refit:
        parser.error(
            f"--probe-stop {args.probe_stop} ends a probe refit, and --hold-probe and "
            "--fixed-probe have none: drop one of them"
        )
    if args.probe_warmup and no_refit:
        parser.error(
            f"--probe-warmup {args.probe_warmup} eases a probe refit in, and --hold-probe "
            "and --fixed-probe have none: drop one of them"
        )
    if not 0 < args.adam_beta2 < 1:
        parser.error(f"--adam-beta2 must lie in (0, 1), got {args.adam_beta2}")
    if args.probe_modes is not None and args.probe_modes < 1:
        parser.error(f"--probe-modes must be >= 1, got {args.probe_modes}")
    if args.lbfgs < 0:
        parser.error(f"--lbfgs must be >= 0, got {args.lbfgs}")
    if args.probe_warmup < 0:
        parser.error(f"--probe-warmup must be >= 0, got {args.probe_warmup}")
    if args.probe_stop is not None and args.probe_stop <= args.refit_probe:
        parser.error(
            f"--probe-stop must be greater than --refit-probe ({args.refit_probe}), "
            f"got {args.probe_stop}"
        )
    global ANTIALIAS_FRACTION
    ANTIALIAS_FRACTION = 2.0 / 3.0 if args.antialias else None
    print(
        f"{'case':<11} {'iter':>5} {'LSM':>6} {'CSM':>6} {'LSMc':>5} {'CSMc':>5} "
        f"{'self':>5} {'nb':>5} {'(M/∞)':>6} "
        f"{'nb/self':>8} {'(truth)':>8} "
        f"{'avg':>6} {'(truth)':>8} {'snap':>5} {'(ind)':>5} {'B rec':>7} {'B true':>7}  "
        "branch averages [THz]: rec / truth (same analysis) / exact"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = args.workdir or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        for case in args.only or CASES:
            start = time.perf_counter()
            segments = reconstruct(
                root,
                case,
                args.cells,
                args.states,
                args.iterations,
                args.every,
                args.optimizer,
                args.fixed_probe,
                None if no_refit else args.refit_probe,
                args.probe_stop,
                args.probe_warmup,
                args.adam_beta2,
                args.lbfgs,
                args.probe_modes,
            )
            for done, result in segments:
                r = analyse(result, case, args.cells, args.states)
                print(
                    f"{case:<11} {done:5d} {r['lsm']:6.3f} {r['csm']:6.3f} "
                    f"{r['lsm_caviar_set']:5.2f} {r['csm_caviar_set']:5.2f} "
                    f"{r['csm_self']:5.2f} {r['csm_neighbours']:5.2f} "
                    f"{r['csm_neighbours_sampling']:6.2f} "
                    f"{r['neighbour_ratio']:8.3f} {r['neighbour_ratio_truth']:8.3f} "
                    f"{r['neighbour_ratio_avg']:6.3f} {r['neighbour_ratio_avg_truth']:8.3f} "
                    f"{r['snapshot_share']:5.2f} {r['snapshot_share_chance']:5.2f} "
                    f"{r['b_rec']:7.3f} {r['b_true']:7.3f}  "
                    f"{_row(r['branches_rec'])} / {_row(r['branches_truth'])} / "
                    f"{_row(r['branches_exact'])}   ({time.perf_counter() - start:.0f} s)",
                    flush=True,
                )


def _row(values: object) -> str:
    return " ".join(f"{v:5.2f}" for v in np.asarray(values))


if __name__ == "__main__":
    main()
