"""The documentation generated from the code: the config reference (``ptyscope.config_docs``),
the result-file page and the tilt figure, each checked against the code it describes."""

from __future__ import annotations

import importlib.util
import math
import os
import re
from pathlib import Path
from types import ModuleType
from typing import Annotated, Literal

import h5py
import numpy as np
import pytest
from pydantic import BaseModel, ConfigDict, Field

from ptyscope import config
from ptyscope.config_docs import MISSING, FieldDoc, field_docs, model_doc, reference_markdown, unit

DOCS = Path(__file__).resolve().parents[2] / "docs"

#: The commands' configs; every other model is reached from these.
TOP_MODELS = (
    config.ReconstructionConfig,
    config.SimulationConfig,
    config.PreprocessConfig,
    config.TomographyConfig,
)

#: Fields with no ``#:`` comment in src/ptyscope/config.py yet (the reference shows an empty
#: meaning, or only the unit). Shrink this list by documenting them; a newly added field
#: without a comment fails ``test_every_config_key_is_documented_or_a_known_gap``.
KNOWN_GAPS: dict[str, tuple[str, ...]] = {
    "DataConfig": ("path", "energy_ev", "scan_step_ang", "semiangle_mrad", "scan_rotation_deg"),
    "ReconProbeConfig": ("defocus_ang", "modes"),
    "ObjectConfig": ("slices", "slice_thickness_ang", "states", "lr", "state_weights_lr"),
    "PropagatorConfig": (
        "tilt_y_mrad",
        "fit_tilt",
        "tilt_start",
        "map_start",
        "fit_thickness",
        "thickness_start",
    ),
    "PositionsConfig": ("fit", "start", "remove_affine"),
    "OptimizationConfig": (
        "iterations",
        "batching",
        "loss",
        "optimizer",
        "device",
        "seed",
    ),
    "OutputConfig": ("path",),
    "InitConfig": ("result", "probe", "positions"),
    "SimulationConfig": ("output", "device", "seed", "memory_limit_gb"),
    "SpecimenConfig": (
        "kind",
        "repeat_xy",
        "thickness_ang",
        "lattice_constant_ang",
        "path",
        "repeat",
        "symbols",
        "structure",
        "radius_ang",
        "vacuum_ang",
        "euler_deg",
    ),
    "ProbeConfig": ("energy_ev", "semiangle_mrad", "defocus_ang"),
    "ScanConfig": ("shape", "step_ang", "origin_ang", "rotation_deg"),
    "SamplingConfig": ("pixel_ang", "slice_thickness_ang"),
    "TiltConfig": ("tilt_x_mrad", "tilt_y_mrad", "gradient_y_mrad_per_ang"),
    "PhononConfig": ("model", "configs", "temperature_k"),
    "DetectorConfig": ("max_angle_mrad", "binning"),
    "TiltSeriesConfig": ("min_deg", "max_deg", "step_deg", "euler_deg"),
    "PreprocessConfig": ("output",),
    "InputConfig": ("path", "energy_ev", "scan_step_ang", "semiangle_mrad"),
    "PreprocessSteps": ("repair_bad_pixels", "correct_descan", "bin_detector", "bin_scan"),
    "TomoReconstructionConfig": ("executor", "workers", "device"),
    "TomoProjectionsConfig": (
        "state",
        "denoise",
        "denoise_strength",
        "normalize_mass",
        "mask_threshold",
        "mask_dilate_ang",
    ),
    "TomoAlignmentConfig": (
        "center_of_mass",
        "common_line",
        "refine",
        "levels",
        "outer_iterations",
        "volume_iterations",
        "fit_angles",
        "fit_shifts",
    ),
    "TomoVolumeConfig": ("method", "iterations", "tv_weight", "gaussian_sigma_ang", "positivity"),
    "TomoAtomsConfig": ("trace", "min_distance_ang", "structure"),
}


def _config_models() -> list[type[BaseModel]]:
    """Every config model of ``ptyscope.config`` that has fields."""
    return [
        value
        for value in vars(config).values()
        if isinstance(value, type)
        and issubclass(value, BaseModel)
        and value.__module__ == config.__name__
        and value.model_fields
    ]


def _nested(annotation: object) -> bool:
    """Whether a field holds a model (a TOML table, documented by the model's docstring)."""
    candidates = [annotation, *getattr(annotation, "__args__", ())]
    return any(isinstance(c, type) and issubclass(c, BaseModel) for c in candidates)


# -- field_docs ------------------------------------------------------------------------


class _Documented(BaseModel):
    """A model for the comment reader.

    Second paragraph.
    """

    model_config = ConfigDict(extra="forbid")

    #: Step [Å], on
    #: two lines.
    step_ang: Annotated[float, Field(gt=0)] = 0.5
    # A plain comment is not documentation.
    plain: int = 1
    #: Not directly above its field (a blank line follows), so it documents nothing.

    detached: bool = True
    mode: Literal["a", "b"] = "a"  #: A trailing doc comment.
    #: Required.
    name: str
    pair: tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]] | None = None
    fraction: Annotated[float, Field(gt=0, le=1)] = 1.0
    table: dict[str, float] = Field(default_factory=lambda: {"C30": 1.0})


class _Child(_Documented):
    #: Added by the subclass.
    extra_mrad: float = 0.0


def test_field_docs_read_the_comments_above_each_field() -> None:
    docs = field_docs(_Documented)
    assert list(docs) == [
        "step_ang",
        "plain",
        "detached",
        "mode",
        "name",
        "pair",
        "fraction",
        "table",
    ]
    assert docs["step_ang"].description == "Step [Å], on two lines."
    assert docs["plain"].description == ""
    assert docs["detached"].description == ""
    assert docs["mode"].description == "A trailing doc comment."
    assert docs["name"] == FieldDoc("name", "str", MISSING, True, "Required.")
    assert docs["step_ang"].annotation == "float > 0"
    assert docs["pair"].annotation == "(int >= 1, int >= 1) | None"
    assert docs["fraction"].annotation == "float in (0, 1]"
    assert docs["table"].annotation == "{str: float}"
    assert docs["table"].default == {"C30": 1.0}  # from the default factory
    assert model_doc(_Documented) == "A model for the comment reader.\n\nSecond paragraph."


def test_inherited_fields_come_first_with_their_comments() -> None:
    docs = field_docs(_Child)
    assert list(docs)[-1] == "extra_mrad" and list(docs)[:-1] == list(field_docs(_Documented))
    assert docs["step_ang"].description == "Step [Å], on two lines."
    assert docs["extra_mrad"].description == "Added by the subclass."
    assert model_doc(_Child) == ""  # a docstring is not inherited
    real = field_docs(config.DataConfig)
    assert list(real)[: len(config.InputConfig.model_fields)] == list(
        config.InputConfig.model_fields
    )
    assert "known_formats" in real["format"].description  # InputConfig's comment
    assert "interleaved half" in real["scan_half"].description  # DataConfig's own


def test_fit_tilt_and_other_real_fields() -> None:
    fit_tilt = field_docs(config.PropagatorConfig)["fit_tilt"]
    assert fit_tilt.annotation == '"off" | "global" | "map"'
    assert fit_tilt.default == "off" and not fit_tilt.required
    tilt = field_docs(config.PropagatorConfig)["tilt_x_mrad"]
    assert tilt.annotation == "float" and tilt.default == 0.0
    assert tilt.description.startswith("Initial specimen tilt [mrad]")
    path = field_docs(config.InputConfig)["path"]
    assert path.required and path.default is MISSING and path.annotation == "path"
    assert field_docs(config.SimulationConfig)["tilt_series"].annotation == "table | None"
    assert field_docs(config.PreprocessSteps)["descan_order"].annotation == "1 | 2"
    assert field_docs(config.ProbeConfig)["aberrations"].default == {}
    window = field_docs(config.SamplingConfig)["window_ang"]
    assert window.annotation == "float > 0 | None" and window.default is None
    assert field_docs(config.TomoProjectionsConfig)["state"].annotation == '"mean" | int >= 0'


def test_units_come_from_the_names() -> None:
    assert unit("scan_step_ang") == "Å"
    assert unit("semiangle_mrad") == "mrad"
    assert unit("state_noise_rad") == "rad"
    assert unit("energy_ev") == "eV"
    assert unit("rotation_deg") == "°"
    assert unit("gradient_x_mrad_per_ang") == "mrad/Å"
    assert unit("dose_e_per_ang2") == "e/Å²"
    assert unit("iterations") == ""


def test_every_config_key_is_documented_or_a_known_gap() -> None:
    missing: dict[str, tuple[str, ...]] = {}
    for model in _config_models():
        names = tuple(
            name
            for name, doc in field_docs(model).items()
            if not doc.description and not _nested(model.model_fields[name].annotation)
        )
        if names:
            missing[model.__name__] = names
    new = {m: sorted(set(n) - set(KNOWN_GAPS.get(m, ()))) for m, n in missing.items()}
    new = {m: n for m, n in new.items() if n}
    assert not new, f"config fields without a '#:' comment in src/ptyscope/config.py: {new}"
    fixed = {m: sorted(set(n) - set(missing.get(m, ()))) for m, n in KNOWN_GAPS.items()}
    fixed = {m: n for m, n in fixed.items() if n}
    assert not fixed, f"documented now, remove them from KNOWN_GAPS in {__file__}: {fixed}"


# -- the generated reference -----------------------------------------------------------


@pytest.mark.parametrize("model", TOP_MODELS, ids=lambda m: m.__name__)
def test_reference_mentions_every_key_of_every_table(model: type[BaseModel]) -> None:
    text = reference_markdown(model, title="ptyscope command")
    assert text.startswith("# ptyscope command\n")

    def walk(current: type[BaseModel], section: tuple[str, ...]) -> None:
        if section:
            assert f"## `[{'.'.join(section)}]`" in text
        for name, info in current.model_fields.items():
            nested = [
                c
                for c in (info.annotation, *getattr(info.annotation, "__args__", ()))
                if isinstance(c, type) and issubclass(c, BaseModel)
            ]
            if nested:
                walk(nested[0], (*section, name))
            else:
                assert re.search(rf"^\| `{name}` \|", text, re.M), f"{section}.{name} missing"

    walk(model, ())


@pytest.mark.parametrize("model", TOP_MODELS, ids=lambda m: m.__name__)
def test_reference_tables_have_four_cells_per_row(model: type[BaseModel]) -> None:
    """Pipes inside a cell ("a" | "b") must be escaped, or the row gets more columns."""
    rows = [line for line in reference_markdown(model, title="t").splitlines() if line[:1] == "|"]
    assert rows
    for row in rows:
        cells = re.split(r"(?<!\\)\|", row)[1:-1]
        assert len(cells) == 4, row


def test_reference_shows_defaults_units_and_descriptions() -> None:
    text = reference_markdown(config.ReconstructionConfig, title="t")
    row = next(line for line in text.splitlines() if line.startswith("| `fit_tilt` "))
    assert row == '| `fit_tilt` | "off" \\| "global" \\| "map" | `"off"` |  |'
    assert "| `path` | path | *required* |" in text
    assert "| `state_lowpass_ang` | float > 0 \\| None | *unset* | Gaussian σ" in text
    assert "| `slice_thickness_ang` | float > 0 | `10.0` | [Å] |" in text  # unit alone
    assert model_doc(config.PropagatorConfig).splitlines()[0] in text


def test_config_reference_page_generates_every_command() -> None:
    page = (DOCS / "config_reference.md").read_text()
    named = set(re.findall(r"^<!-- config-reference: (\w+) \| .+ -->$", page, re.M))
    assert named == {model.__name__ for model in TOP_MODELS}


# -- the result-file page --------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_result(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real result file: 4x4 positions of simulated SrTiO3, a tilt map, one iteration."""
    from ptyscope.io.datafile import write_dataset
    from ptyscope.reconstruction.run import run_reconstruction
    from ptyscope.simulation.specimens import SRTIO3_LATTICE_CONSTANT_ANG as A
    from ptyscope.simulation.specimens import srtio3_slab
    from ptyscope.simulation.stem4d import ProbeSettings, ScanSettings, simulate_4dstem

    folder = tmp_path_factory.mktemp("result")
    sim = simulate_4dstem(
        srtio3_slab((3, 3), 2 * A),
        ProbeSettings(300e3, 22.0, {"defocus": 5.0}),
        ScanSettings((4, 4), (1.0, 1.0), origin_ang=(4.0, 4.0)),
        sampling_ang=0.2,
        slice_thickness_ang=A,
        window_ang=4.0,
        seed=0,
    )
    write_dataset(folder / "data.h5", sim.dataset)
    run_config = config.ReconstructionConfig.model_validate(
        {
            "data": {"path": str(folder / "data.h5")},
            "object": {"slices": 2, "slice_thickness_ang": A},
            "propagator": {"fit_tilt": "map"},  # writes tilt_map_mrad too
            "optimization": {"iterations": 1, "batch_size": 8, "checkpoint_every": None},
            "output": {"path": str(folder / "reconstruction.h5")},
        }
    )
    run = run_reconstruction(
        run_config, config_text="[data]\n", progress=False, write_html_report=False
    )
    return run.result_path


def _page_table(page: str, heading: str) -> list[list[str]]:
    """The body rows of the first table under ``## heading``, cells without backticks."""
    section = page.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")][2:]
    return [[cell.strip().strip("`") for cell in row.strip("|").split(" | ")] for row in rows]


def test_result_format_page_documents_exactly_what_write_result_writes(
    tiny_result: Path,
) -> None:
    page = (DOCS / "result_format.md").read_text()
    documented_nodes = {row[0] for row in _page_table(page, "Datasets and groups")}
    documented_attrs = {(row[0], row[1]) for row in _page_table(page, "Attributes")}
    nodes: set[str] = set()
    attrs = {("/", name) for name in h5py.File(tiny_result, "r").attrs}

    def visit(name: str, obj: h5py.Group | h5py.Dataset) -> None:
        nodes.add("/" + name)
        attrs.update(("/" + name, key) for key in obj.attrs)

    with h5py.File(tiny_result, "r") as handle:
        handle.visititems(visit)
    assert nodes - documented_nodes == set(), "written but not documented"
    assert documented_nodes - nodes == set(), "documented but not written"
    assert attrs - documented_attrs == set(), "attributes written but not documented"
    assert documented_attrs - attrs == set(), "attributes documented but not written"


def test_result_format_page_shapes_and_dtypes(tiny_result: Path) -> None:
    """The dtype column agrees with the file for every dataset."""
    page = (DOCS / "result_format.md").read_text()
    rows = {row[0]: row for row in _page_table(page, "Datasets and groups")}
    with h5py.File(tiny_result, "r") as handle:
        for path, row in rows.items():
            node = handle[path]
            if isinstance(node, h5py.Group):
                assert row[1] == "group", path
                continue
            string = h5py.check_string_dtype(node.dtype) is not None
            expected = "UTF-8 string" if string else str(node.dtype)
            assert row[1] == f"dataset, {expected}", path
            axes = [axis for axis in row[2].strip("()").split(",") if axis.strip()]
            assert len(axes) == node.ndim, f"{path}: {row[2]} vs {node.shape}"


def test_result_format_snippet_runs(tiny_result: Path, capsys: pytest.CaptureFixture[str]) -> None:
    page = (DOCS / "result_format.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", page, re.S)
    assert snippet is not None
    cwd = Path.cwd()
    os.chdir(tiny_result.parent)
    try:
        exec(compile(snippet[1], "result_format.md", "exec"), {})
    finally:
        os.chdir(cwd)
    assert "2 slices" in capsys.readouterr().out


# -- the tilt figure -------------------------------------------------------------------


def _figures_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "make_figures", DOCS / "figures" / "make_figures.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("tilt_mrad", [(0.0, 20.0), (0.0, -20.0), (15.0, 0.0)])
def test_tilt_figure_drift_is_the_propagators(tilt_mrad: tuple[float, float]) -> None:
    """The figure plots the drift it measures; it must be −z·tanθ, as conventions.md says."""
    drift = _figures_module().wave_drift_ang(tilt_mrad, 25.0, 3)
    z = 25.0 * np.arange(4)
    for axis in (0, 1):
        expected = -z * math.tan(tilt_mrad[axis] * 1e-3)
        np.testing.assert_allclose(drift[:, axis], expected, atol=1e-3)


def test_tilt_figure_is_committed_and_shown() -> None:
    assert (DOCS / "figures" / "tilt_convention.png").stat().st_size > 10_000
    assert "figures/tilt_convention.png" in (DOCS / "conventions.md").read_text()
