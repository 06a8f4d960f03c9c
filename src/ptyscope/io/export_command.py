"""``ptyscope export`` and ``ptyscope export-atoms``: results and atoms for other tools.

Two click commands for the ``ptyscope`` group (registered in :mod:`ptyscope.cli`)::

    ptyscope export RESULT --to emd|npy|tiff -o OUT
    ptyscope export-atoms SOURCE -o OUT.xyz|OUT.extxyz|OUT.cif [--symbols Fe,Pt]

Formats and layouts: :mod:`ptyscope.io.export`.
"""

from __future__ import annotations

from pathlib import Path

import click

from .export import EXPORT_FORMATS, ExportFormat

__all__ = ["export", "export_atoms_command"]


@click.command("export")
@click.argument("result", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--to",
    "to",
    type=click.Choice(EXPORT_FORMATS),
    required=True,
    help="emd: one EMD 1.0 HDF5 file (py4DSTEM/emdfile); npy: a folder of .npy files "
    "with metadata.json; tiff: a folder of float32 ImageJ TIFF stacks in Å.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="File (emd) or folder (npy, tiff) to write; default beside RESULT: "
    "<name>.emd, <name>_npy/, <name>_tiff/.",
)
def export(result: Path, to: ExportFormat, output: Path | None) -> None:
    """Export a reconstruction RESULT for other tools: EMD HDF5, NumPy + JSON or TIFF.

    The object (every state and slice), the probe modes and the positions keep
    ptyscope's conventions: arrays (..., y, x), lengths in Å, the probe centred and of
    unit total intensity; the calibration (pixel size, origin, tilt, thickness, energy)
    goes with them.
    """
    from .export import export_result

    if output is None:
        output = (
            result.with_suffix(".emd") if to == "emd" else result.with_name(f"{result.stem}_{to}")
        )
    try:
        written = export_result(result, output, to=to)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    for path in written:
        click.echo(f"wrote {path}")


@click.command("export-atoms")
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    required=True,
    help="Atoms file: .xyz or .extxyz (extended XYZ) or .cif (3D atoms with their cell).",
)
@click.option(
    "--symbols",
    default=None,
    help="Chemical symbols of the species labels 0, 1, ..., comma-separated (tomography "
    "results; default: the [atoms] symbols of the run's config).",
)
def export_atoms_command(source: Path, output: Path, symbols: str | None) -> None:
    """Write atoms found by ptyscope to a file ase (and VESTA, OVITO, ...) reads.

    SOURCE is the tomography.h5 of `ptyscope tomo` (3D atoms with species, in Å) or the
    columns.csv of `ptyscope analyze columns` (2D columns at z = 0).
    """
    from .export import export_atoms

    names = [s.strip() for s in symbols.split(",")] if symbols else None
    try:
        path = export_atoms(source, output, symbols=names)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {path}")
