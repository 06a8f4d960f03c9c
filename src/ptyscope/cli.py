"""The ``ptyscope`` command line."""

from __future__ import annotations

import click

from ptyscope import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="ptyscope")
def main() -> None:
    """ptyscope: 3D and 4D electron ptychography from 4D-STEM data."""


if __name__ == "__main__":
    main()
