"""The ``ptyscope`` command line."""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path
from typing import NoReturn, TextIO

import click

from ptyscope import __version__


def _fail(message: str) -> NoReturn:
    raise click.ClickException(message)


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """Warnings as one ``warning: ...`` line on stderr (no source lines)."""
    click.echo(f"warning: {message}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="ptyscope")
@click.pass_context
def main(context: click.Context) -> None:
    """ptyscope: 3D and 4D electron ptychography from 4D-STEM data.

    Units throughout are Å, eV, mrad and radians; arrays are (..., y, x) and 4D-STEM data
    is (scan_y, scan_x, det_y, det_x).
    """
    shown = warnings.showwarning
    warnings.showwarning = _show_warning

    def restore() -> None:
        warnings.showwarning = shown

    context.call_on_close(restore)


@main.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--format", "file_format", default=None, help="Reader name (default: by extension).")
@click.option("--scan-shape", nargs=2, type=int, default=None, help="SCAN_Y SCAN_X of frame files.")
@click.option("--scan-step-ang", nargs=2, type=float, default=None, help="STEP_Y STEP_X [Å].")
@click.option("--energy-ev", type=float, default=None, help="Beam energy [eV].")
@click.option("--dataset-path", default=None, help="4D dataset inside a foreign HDF5 file.")
def info(
    file: Path,
    file_format: str | None,
    scan_shape: tuple[int, int] | None,
    scan_step_ang: tuple[float, float] | None,
    energy_ev: float | None,
    dataset_path: str | None,
) -> None:
    """Show what FILE holds: arrays, calibration, counts per pattern and dose estimate.

    Reads every format ptyscope knows (HDF5 incl. ptyscope's own, .npy/.npz, EMPAD .raw,
    Merlin .mib, and RosettaSciIO formats with the `io` extra) without loading the data:
    counts are estimated from a few scan rows. Calibration the file lacks can be given as
    options; without it the dose is not reported.
    """
    from ptyscope.data.formats._common import MissingCalibrationError
    from ptyscope.data.readers import read_4dstem
    from ptyscope.data.summary import describe_dataset
    from ptyscope.io.inspect import KNOWN_SUFFIXES, describe_file

    if not file.exists():
        _fail(f"path must be an existing file, got {str(file)!r}")
    if file.suffix.lower() in KNOWN_SUFFIXES:
        try:
            click.echo(describe_file(file).render())
        except (FileNotFoundError, ValueError) as exc:
            _fail(str(exc))
    given = {
        "scan_shape": scan_shape,
        "scan_step_ang": scan_step_ang,
        "energy_ev": energy_ev,
        "dataset_path": dataset_path,
    }
    options: dict[str, object] = {k: v for k, v in given.items() if v is not None}
    try:
        dataset = read_4dstem(file, file_format, **options)
        missing: list[str] = []
    except MissingCalibrationError as exc:
        # Show what can be shown: placeholders for what is missing, reported as unknown.
        missing = exc.missing
        placeholders: dict[str, object] = {
            "energy_ev": 300e3,
            "scan_step_ang": (1.0, 1.0),
            "detector_pixel": (1.0, 1.0),
        }
        for name in missing:
            options["detector_pixel_inv_ang" if name == "detector_pixel" else name] = placeholders[
                name
            ]
        try:
            dataset = read_4dstem(file, file_format, **options)
        except ValueError as again:
            _fail(str(again))
    except ValueError as exc:
        if file.suffix.lower() in KNOWN_SUFFIXES:
            return  # not a 4D-STEM dataset: the array listing above is the answer
        _fail(str(exc))
    except (FileNotFoundError, NotImplementedError, ImportError) as exc:
        _fail(str(exc))
    click.echo(describe_dataset(dataset, unknown=missing))


@main.command()
@click.option(
    "--output",
    "-o",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("ptyscope-demo"),
    show_default=True,
    help="Folder for the demo's files.",
)
@click.option(
    "--device",
    default="auto",
    show_default=True,
    help="'auto', 'cpu', 'cuda' or 'cuda:N'.",
)
def demo(output: Path, device: str) -> None:
    """Run the demo and write its results to OUTPUT.

    Part 1 checks the physics core on a realistic probe (300 kV, 25 mrad, 20 nm
    underfocus): measured focus, width, depth of field, disk and tilt drift beside their
    closed-form values. Part 2 simulates a 2 mrad-mistilted SrTiO3 [001] slab (47 Å,
    Poisson noise), reconstructs it with 3 slices, scores the phase against the true
    projected potential, and writes the data, the result and an HTML report.
    """
    from ptyscope._device import resolve_device
    from ptyscope.demo import run_demo
    from ptyscope.demo_reconstruction import run_reconstruction_demo

    try:
        dev = resolve_device(device)
    except ValueError as exc:
        _fail(str(exc))
    click.echo(f"ptyscope {__version__} demo on {dev}")
    start = time.perf_counter()
    measurements = run_demo(output, dev)
    click.echo(f"\n1. probe physics\n{'quantity':<26}{'measured':>12}{'theory':>12}  unit   rule")
    worst = 0.0
    for m in measurements:
        worst = max(worst, m.relative_error)
        click.echo(f"{m.name:<26}{m.measured:>12.4f}{m.expected:>12.4f}  {m.unit:<6} {m.rule}")
    click.echo(f"largest relative deviation from theory: {worst:.2%}")
    click.echo("\n2. simulate and reconstruct mistilted SrTiO3 [001]")
    recon = run_reconstruction_demo(output, dev)
    click.echo(
        f"simulated 18x18 patterns in {recon.simulate_seconds:.1f} s; reconstructed "
        f"{recon.iterations} iterations in {recon.reconstruct_seconds:.1f} s "
        f"(loss {recon.first_loss:.4g} -> {recon.final_loss:.4g})"
    )
    click.echo(
        f"summed phase vs true projected potential: Pearson r = {recon.pearson_r:.3f} "
        "(truth at 0.2 Å resolution, sub-pixel registered)"
    )
    click.echo(f"\nwrote {output}/: probe.h5, probe.png, summary.json, data.h5, reconstruction.h5")
    if recon.report_path is not None:
        click.echo(f"report: {recon.report_path}")
    click.echo(
        f"done in {time.perf_counter() - start:.1f} s. Inspect: ptyscope info {output / 'data.h5'}"
    )


@main.command()
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Data file to write (default: the config's `output`).",
)
@click.option(
    "--device", default=None, help="'auto', 'cpu', 'cuda' or 'cuda:N' (overrides the config)."
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def simulate(config: Path, output: Path | None, device: str | None, quiet: bool) -> None:
    """Simulate 4D-STEM data (or a tilt series) from the TOML file CONFIG.

    Writes one HDF5 data file with the patterns, their calibration, the config and the
    ground truth (atoms, potential slices, tilt, phonon snapshots and dispersion). An
    annotated example is examples/simulate_srtio3.toml.
    """
    from ptyscope._device import resolve_device
    from ptyscope.config import ConfigError, SimulationConfig, load_config
    from ptyscope.simulation.run import run_simulation

    try:
        settings = load_config(config, SimulationConfig)
        dev = resolve_device(device or settings.device)
    except (ConfigError, ValueError) as exc:
        _fail(str(exc))
    scan = settings.scan
    click.echo(
        f"ptyscope {__version__} simulate on {dev}: {settings.specimen.kind}, "
        f"{scan.shape[0]}x{scan.shape[1]} positions, phonons={settings.phonons.model}"
    )
    start = time.perf_counter()
    try:
        written = run_simulation(
            settings,
            config_text=config.read_text(),
            base_dir=config.resolve().parent,
            output=output,
            device=dev,
            progress=not quiet,
        )
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    click.echo(
        f"wrote {written} in {time.perf_counter() - start:.1f} s; inspect: ptyscope info {written}"
    )


@main.command("init")
@click.argument("datafile", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("run.toml"),
    show_default=True,
    help="The reconstruction config to write.",
)
@click.option("--format", "file_format", default=None, help="Reader name (default: by extension).")
@click.option("--scan-shape", nargs=2, type=int, default=None, help="SCAN_Y SCAN_X of frame files.")
@click.option("--energy-ev", type=float, default=None, help="Beam energy [eV].")
@click.option("--semiangle-mrad", type=float, default=None, help="Probe semiangle [mrad].")
@click.option("--scan-step-ang", nargs=2, type=float, default=None, help="STEP_Y STEP_X [Å].")
@click.option("--thickness-ang", type=float, default=None, help="Specimen thickness [Å].")
@click.option("--iterations", type=click.IntRange(min=1), default=60, show_default=True)
@click.option("--force", is_flag=True, help="Replace existing config files.")
def init(
    datafile: Path,
    output: Path,
    file_format: str | None,
    scan_shape: tuple[int, int] | None,
    energy_ev: float | None,
    semiangle_mrad: float | None,
    scan_step_ang: tuple[float, float] | None,
    thickness_ang: float | None,
    iterations: int,
    force: bool,
) -> None:
    """Inspect DATAFILE and write a commented starter config for `ptyscope reconstruct`.

    Measures the bright-field disk (detector calibration), scan rotation, dose, defocus
    (parallax of bright-field images), object pixel and overlap, and suggests slices from
    the depth of field and --thickness-ang. What the file does not record and no option
    gives is filled with a typical value and marked CONFIRM in the config. Writes a
    preprocess config too when the patterns need centring first.
    """
    from ptyscope.starter import inspect_for_reconstruction, write_starter

    if not datafile.exists():
        _fail(f"datafile must be an existing file, got {str(datafile)!r}")
    try:
        starter = inspect_for_reconstruction(
            datafile,
            file_format=file_format,
            scan_shape=scan_shape,
            energy_ev=energy_ev,
            semiangle_mrad=semiangle_mrad,
            scan_step_ang=scan_step_ang,
            thickness_ang=thickness_ang,
        )
        written = write_starter(starter, output, overwrite=force, iterations=iterations)
    except (ValueError, FileExistsError, FileNotFoundError, NotImplementedError) as exc:
        _fail(str(exc))
    for name, reason in starter.confirm.items():
        click.echo(f"CONFIRM {name}: {reason}")
    for note in starter.notes:
        click.echo(f"note: {note}")
    for path in written:
        click.echo(f"wrote {path}")
    steps = [f"ptyscope preprocess {written[0]}"] if len(written) == 2 else []
    steps.append(f"ptyscope reconstruct {written[-1]}")
    click.echo("next: " + " && ".join(steps))


@main.command()
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
def preprocess(config: Path) -> None:
    """Calibrate and correct a 4D-STEM file as the TOML file CONFIG says.

    Reads the detector file lazily, repairs hot and dead pixels, calibrates the detector
    from the bright-field disk, removes the descan, crops and bins, and solves the scan
    rotation and transpose from the centre of mass. Writes a calibrated HDF5 dataset and
    a PNG panel (PACBED, virtual bright field, CoM rotation curve, iCoM). An annotated
    example is examples/preprocess.toml.
    """
    from ptyscope.config import ConfigError, PreprocessConfig, load_config
    from ptyscope.data.pipeline import run_preprocess

    start = time.perf_counter()
    try:
        settings = load_config(config, PreprocessConfig)
        report = run_preprocess(settings, base_dir=config.resolve().parent)
    except (ConfigError, ValueError, FileNotFoundError, NotImplementedError, ImportError) as exc:
        _fail(str(exc))
    for line in report.lines:
        click.echo(line)
    click.echo(
        f"wrote {report.output} and {report.figure} in {time.perf_counter() - start:.1f} s; "
        f"inspect: ptyscope info {report.output}"
    )


@main.command()
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--resume", is_flag=True, help="Continue from the run's checkpoint.")
@click.option("--device", default=None, help="'auto', 'cpu', 'cuda' or 'cuda:N' (overrides).")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--no-report", is_flag=True, help="Skip the HTML report (the result is complete).")
@click.option(
    "--skip-memory-check",
    is_flag=True,
    help="Start even when the predicted peak memory exceeds the available memory.",
)
def reconstruct(
    config: Path,
    resume: bool,
    device: str | None,
    output: Path | None,
    quiet: bool,
    no_report: bool,
    skip_memory_check: bool,
) -> None:
    """Reconstruct a 4D-STEM dataset as the TOML file CONFIG says.

    Multislice, mixed-state ptychography: object slices and states, probe modes and scan
    positions, with checkpoints (Ctrl-C writes one; --resume continues exactly). Writes
    one HDF5 result file. An annotated example is examples/reconstruct.toml. Data
    parallel over scan positions on several GPUs or CPU processes: launch with torchrun,
    e.g. torchrun --nproc-per-node 2 -m ptyscope.cli reconstruct CONFIG (docs/parallel.md).
    """
    from ptyscope._device import resolve_device
    from ptyscope.config import ConfigError, ReconstructionConfig, load_config
    from ptyscope.reconstruction.distributed import DistributedError, join_torchrun
    from ptyscope.reconstruction.engine import NumericalError
    from ptyscope.reconstruction.run import run_reconstruction

    try:
        settings = load_config(config, ReconstructionConfig)
        if skip_memory_check:
            optimization = settings.optimization.model_copy(update={"memory_check": False})
            settings = settings.model_copy(update={"optimization": optimization})
        dev = resolve_device(device or settings.optimization.device)
        parallel, dev = join_torchrun(dev)  # a single process outside torchrun
    except (ConfigError, ValueError, RuntimeError) as exc:
        _fail(str(exc))
    where = f"{parallel.describe()}: " if parallel.world_size > 1 else ""
    if parallel.is_main:
        processes = f", {parallel.world_size} processes" if parallel.world_size > 1 else ""
        resuming = " (resuming)" if resume else ""
        click.echo(f"ptyscope {__version__} reconstruct on {dev}{processes}{resuming}")
    else:  # rank 0 speaks for all; the others only report their errors
        warnings.simplefilter("ignore")
    start = time.perf_counter()
    try:
        run = run_reconstruction(
            settings,
            config_text=config.read_text(),
            base_dir=config.resolve().parent,
            device=dev,
            resume=resume,
            progress=not quiet,
            output=output,
            write_html_report=not no_report,
            parallel=parallel,
        )
    except KeyboardInterrupt:
        _fail(f"{where}interrupted: checkpoint written; continue with --resume")
    except NumericalError as exc:
        _fail(
            f"{where}{exc} The checkpoint holds that state; lower the learning rates and start "
            "again."
        )
    except (ValueError, FileNotFoundError, NotImplementedError, ImportError) as exc:
        _fail(f"{where}{exc}")
    except DistributedError as exc:
        _fail(str(exc))
    parallel.close()
    if not parallel.is_main:
        return
    for event in run.engine.events:
        click.echo(f"note: iteration {event.iteration}: {event.kind}: {event.message}")
    history = run.engine.history
    click.echo(
        f"{run.engine.iteration} iterations, final loss {history.loss[-1]:.5g}"
        if history.loss
        else "no iterations run"
    )
    click.echo(f"wrote {run.result_path} in {time.perf_counter() - start:.1f} s")
    if run.report is not None:
        click.echo(f"report: {run.report}")


@main.command()
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--device", default=None, help="'auto', 'cpu', 'cuda' or 'cuda:N' (overrides).")
def estimate(config: Path, device: str | None) -> None:
    """Predict the peak memory and time per iteration of `ptyscope reconstruct CONFIG`.

    Reads only the data file's header. Prints every memory term in MiB at the moments
    that matter (reading the data, a chunk's forward and backward pass, the optimiser
    step), the predicted peak beside the available memory, the FFTs per iteration and
    the predicted seconds per iteration (FFTs timed on the device). Exit status 1 when
    the run would not fit (docs/performance.md).
    """
    from ptyscope._device import resolve_device
    from ptyscope.config import ConfigError, ReconstructionConfig, load_config
    from ptyscope.data.readers import read_4dstem
    from ptyscope.reconstruction.estimate import available_memory, estimate_run, render

    try:
        settings = load_config(config, ReconstructionConfig)
        dev = resolve_device(device or settings.optimization.device)
        data = settings.data
        path = data.path if data.path.is_absolute() else config.resolve().parent / data.path
        dataset = read_4dstem(path, data.format, **data.reader_options())
        prediction = estimate_run(settings, dataset, dev)
    except (ConfigError, ValueError, FileNotFoundError, NotImplementedError, ImportError) as exc:
        _fail(str(exc))
    available = {"device": available_memory(dev)}
    if dev.type == "cuda":
        available["host"] = available_memory("cpu")
    click.echo(f"ptyscope {__version__} estimate for {config} on {dev}")
    click.echo(render(prediction, available))
    fits = all(
        free is None or prediction.peak(where) <= free.nbytes for where, free in available.items()
    )
    if not fits:
        click.echo(
            "the run would not fit: lower optimization.chunk_size or batch_size, object.states, "
            "probe.modes or object.slices, or use another device",
            err=True,
        )
        raise click.exceptions.Exit(1)


@main.command()
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def tomo(config: Path, quiet: bool) -> None:
    """Tilt series → per-tilt ptychography → aligned volume → atoms, as CONFIG says.

    Every tilt is reconstructed with the template config (resumable: run the command
    again after an interruption), the summed phases are aligned jointly with the volume,
    and atoms are traced, classified, refined and exported. Writes tomography.h5,
    atoms.xyz/.cif and figures under the config's `output`. An annotated example is
    examples/tomo.toml.
    """
    from ptyscope.config import ConfigError, TomographyConfig, load_config
    from ptyscope.tomography.pipeline import run_tomography

    try:
        settings = load_config(config, TomographyConfig)
    except ConfigError as exc:
        _fail(str(exc))
    click.echo(f"ptyscope {__version__} tomo: {settings.series.path}")
    start = time.perf_counter()
    try:
        result = run_tomography(
            settings,
            base_dir=config.resolve().parent,
            config_text=config.read_text(),
            progress=not quiet,
        )
    except KeyboardInterrupt:
        _fail("interrupted: finished tilts are kept; run the same command to continue")
    except (ValueError, FileNotFoundError, ImportError, RuntimeError) as exc:
        _fail(str(exc))
    metrics = result.metrics
    click.echo(
        "resolution per axis [Å]: "
        + ", ".join(f"{k} {v:.2f}" for k, v in metrics.get("resolution_ang", {}).items())
    )
    if "non_atoms" in metrics:
        click.echo(
            f"atoms: {metrics['peaks_traced'] - metrics['non_atoms']} of "
            f"{metrics['peaks_traced']} traced peaks ({metrics['non_atoms']} non-atoms dropped)"
        )
    truth = metrics.get("ground_truth") or {}
    if truth:
        click.echo(
            f"atoms vs ground truth: {truth['recall']:.1%} found, precision "
            f"{truth['precision']:.1%}, RMSD {truth['rmsd_ang']:.3f} Å, species "
            f"{truth['species_accuracy']:.1%}"
        )
    for name, path in result.files.items():
        click.echo(f"{name}: {path}")
    click.echo(f"done in {time.perf_counter() - start:.1f} s")


@main.group()
def analyze() -> None:
    """Measure a reconstruction: atomic columns and displacements, resolution, slice
    alignment, correlated vibrations and phonons."""


@analyze.command("columns")
@click.argument("result", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--method", type=click.Choice(["gaussian", "com"]), default="gaussian")
@click.option("--a-ang", type=float, default=3.905, show_default=True, help="Lattice constant [Å].")
@click.option("--radius-ang", type=float, default=0.6, show_default=True)
@click.option("--slice", "slice_index", type=int, default=None, help="One slice (default: sum).")
@click.option("--state", type=int, default=0, show_default=True)
@click.option(
    "--sr-at",
    nargs=2,
    type=float,
    default=None,
    help="Y X [Å] of one Sr column (default: the brightest column is taken as Sr).",
)
def analyze_columns_command(
    result: Path,
    out_dir: Path | None,
    method: str,
    a_ang: float,
    radius_ang: float,
    slice_index: int | None,
    state: int,
    sr_at: tuple[float, float] | None,
) -> None:
    """Fit the [001] perovskite lattice to RESULT, refine every column, and report the
    polar displacements d_Sr-TiO and d_O-TiO (CSV + PNG in --out)."""
    from ptyscope.analysis.commands import analyze_columns, default_folder

    folder = out_dir or default_folder(result)
    try:
        report = analyze_columns(
            result,
            folder,
            method=method,
            a_ang=a_ang,
            radius_ang=radius_ang,
            slice_index=slice_index,
            state=state,
        )
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    click.echo(
        f"{report.columns} columns; lattice |a|, |b| = {report.lattice_a_ang[0]:.4f}, "
        f"{report.lattice_a_ang[1]:.4f} Å; median σ {report.median_sigma_pm:.2f} pm"
    )
    for name, (my, mx, sy, sx) in (
        ("d_Sr-TiO", report.d_sr_tio_pm),
        ("d_O-TiO", report.d_o_tio_pm),
    ):
        click.echo(f"{name}: (y, x) = ({my:+.2f}, {mx:+.2f}) pm, std ({sy:.2f}, {sx:.2f}) pm")
    click.echo(f"wrote {report.table} and {report.figure}")


@analyze.command("resolution")
@click.argument("result", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--other",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="A second reconstruction on the same grid (the other scan half) for FRC.",
)
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None)
def analyze_resolution_command(result: Path, other: Path | None, out_dir: Path | None) -> None:
    """Information limit of RESULT's diffractogram, and the FRC against --other."""
    from ptyscope.analysis.commands import analyze_resolution, default_folder

    folder = out_dir or default_folder(result)
    try:
        report = analyze_resolution(result, folder, other_path=other)
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    click.echo(f"information limit (diffractogram): {report.information_limit_ang:.3f} Å")
    if report.frc_resolution_ang is not None:
        click.echo(f"FRC resolution (half-bit): {report.frc_resolution_ang:.3f} Å")
    click.echo(f"wrote {report.figure}" + (f" and {report.table}" if report.table else ""))


@analyze.command("align")
@click.argument("result", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--state", type=int, default=0, show_default=True)
def analyze_align_command(result: Path, out_dir: Path | None, state: int) -> None:
    """Post-align RESULT's slices by cross-correlation; report the shift per slice and the
    apparent tilt it implies (the fixed-propagator baseline of Sha et al. 2022)."""
    from ptyscope.analysis.commands import analyze_alignment, default_folder

    folder = out_dir or default_folder(result)
    try:
        report = analyze_alignment(result, folder, state=state)
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    for j, (dy, dx) in enumerate(report.shifts_ang):
        click.echo(f"slice {j}: shift (y, x) = ({dy:+.4f}, {dx:+.4f}) Å")
    ty, tx = report.apparent_tilt_mrad
    click.echo(f"apparent tilt left in the slices: (θ_y, θ_x) = ({ty:+.3f}, {tx:+.3f}) mrad")
    fy, fx = report.fitted_tilt_mrad
    click.echo(f"tilt in the result's propagator:  (θ_y, θ_x) = ({fy:+.3f}, {fx:+.3f}) mrad")
    click.echo(f"wrote {report.table}")


def _parse_masses(
    _context: click.Context, _parameter: click.Parameter, value: str
) -> tuple[float, ...]:
    try:
        masses = tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(
            f"give one mass [amu] per basis atom separated by commas, e.g. 14.007,10.81; "
            f"got {value!r}"
        ) from None
    if not masses:
        raise click.BadParameter(f"give at least one mass [amu], got {value!r}")
    return masses


def _parse_slices(
    _context: click.Context, _parameter: click.Parameter, value: str | None
) -> slice | None:
    if value is None:
        return None
    parts = value.split(":")
    try:
        if len(parts) == 1:
            index = int(parts[0])
            return slice(index, index + 1)
        if len(parts) == 2:
            start, stop = (int(p) if p.strip() else None for p in parts)
            return slice(start, stop)
    except ValueError:
        pass
    raise click.BadParameter(
        f"give START:STOP (0-based, STOP excluded, e.g. 2:6) or one index, got {value!r}"
    )


@analyze.command("vibrations")
@click.argument("result", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--temperature",
    "--temperature-k",
    "temperature_k",
    type=float,
    required=True,
    help="Specimen temperature [K].",
)
@click.option(
    "--masses",
    "--masses-amu",
    "masses_amu",
    required=True,
    callback=_parse_masses,
    help="Mass [amu] per basis atom, brightest column first, comma-separated (e.g. "
    "14.007,10.81): the mass moving with the column within one slice.",
)
@click.option(
    "--slices",
    default=None,
    callback=_parse_slices,
    help="Slices analysed, START:STOP (0-based, STOP excluded) or one index (default: all).",
)
@click.option(
    "--projected",
    is_flag=True,
    help="Analyse the phase summed over the chosen slices (thin crystals).",
)
@click.option(
    "--radius",
    "--radius-ang",
    "radius_ang",
    type=float,
    default=None,
    help="Column refinement radius [Å] (default: 0.35 × neighbour distance).",
)
@click.option(
    "--pair-distance-ang",
    type=float,
    default=None,
    help="Largest pair separation averaged and drawn [Å] (default: 1.2 × neighbour distance).",
)
@click.option(
    "--reference",
    "reference_ang",
    nargs=2,
    type=float,
    default=None,
    help="Y X [Å] near the reference column of the correlation figure.",
)
@click.option(
    "--no-bias-correction",
    is_flag=True,
    help="Leave out the few-states (inverse-Wishart) correction of the frequencies.",
)
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None)
def analyze_vibrations_command(
    result: Path,
    temperature_k: float,
    masses_amu: tuple[float, ...],
    slices: slice | None,
    projected: bool,
    radius_ang: float | None,
    pair_distance_ang: float | None,
    reference_ang: tuple[float, float] | None,
    no_bias_correction: bool,
    out_dir: Path | None,
) -> None:
    """Correlated vibrations of RESULT's object states (CAVIAR): columns, lattice and basis
    found automatically; Green's tensor, Debye-Waller factors and phonon branch averages
    (CSV, NPY and PNG in --out)."""
    from ptyscope.analysis.commands import default_folder
    from ptyscope.analysis.vibration_command import analyze_vibrations

    folder = out_dir or default_folder(result)
    try:
        report = analyze_vibrations(
            result,
            folder,
            temperature_k=temperature_k,
            masses_amu=masses_amu,
            slices=slices,
            projected=projected,
            radius_ang=radius_ang,
            pair_distance_ang=pair_distance_ang,
            reference_ang=reference_ang,
            correct_bias=not no_bias_correction,
        )
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    lattice = report.lattice
    chosen = report.slices
    contiguous = list(chosen) == list(range(chosen[0], chosen[-1] + 1))
    slices_text = ",".join(map(str, chosen))
    if contiguous and len(chosen) > 2:
        slices_text = f"{chosen[0]}-{chosen[-1]}"
    click.echo(
        f"{report.columns} columns, {report.states} states, slices {slices_text}; lattice "
        f"|a| = {math.hypot(*lattice.a_ang):.4f} Å, |b| = {math.hypot(*lattice.b_ang):.4f} Å, "
        f"{report.angle_deg:.2f}° ({report.lattice_kind})"
    )
    click.echo(
        f"{'basis':<6}{'(u, v)':>16}{'phase [rad]':>13}{'mass [amu]':>12}{'columns':>9}"
        f"{'<u_y²>, <u_x²> [pm²]':>22}{'mean B [Å²]':>13}"
    )
    for atom in report.basis:
        u, v = atom.fractional
        uy, ux = atom.mean_self_pm2
        click.echo(
            f"{atom.index:<6}{f'({u:.3f}, {v:.3f})':>16}{atom.mean_phase_rad:>13.3f}"
            f"{atom.mass_amu:>12.3f}{atom.columns:>9}{f'{uy:.1f}, {ux:.1f}':>22}"
            f"{atom.mean_b_ang2:>13.4f}"
        )
    path = "-".join(report.path_labels)
    averages = ", ".join(f"{f:.2f}" for f in report.branch_averages_thz)
    click.echo(f"branch averages along {path} ({report.cells} cells): {averages} THz")
    click.echo(f"wrote {report.vibrations_csv.parent}")


def _register_commands() -> None:
    """Commands defined beside the code they drive."""
    from ptyscope.io.export_command import export, export_atoms_command
    from ptyscope.report.viewer import view_command

    main.add_command(view_command)
    main.add_command(export)
    main.add_command(export_atoms_command)


_register_commands()

if __name__ == "__main__":
    main()
