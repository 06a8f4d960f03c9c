"""The interactive viewer: embedded images against the result file, errors, and the page
driven in a real headless Chromium."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from ptyscope.reconstruction.engine import Engine, EngineSettings
from ptyscope.reconstruction.forward import PropagatorCache
from ptyscope.reconstruction.parameters import PtychoParameters
from ptyscope.reconstruction.results import write_result
from ptyscope.reconstruction.setup import ReconstructionSetup
from ptyscope.report.reconstruction_figures import probe_power_fractions
from ptyscope.report.viewer import encode_image, nice_scale_length_ang, view_command, write_viewer

STATES, SLICES, NY, NX, MODES = 2, 5, 40, 48, 3
PIXEL_ANG = (0.1, 0.12)
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


def known_phases() -> np.ndarray:
    """float64 (states, slices, ny, nx) [rad]: each slice a different pattern plus noise, so
    no two slices look alike after scaling to their own range."""
    rng = np.random.default_rng(3)
    y, x = np.mgrid[:NY, :NX]
    slices = np.stack(
        [
            0.3 * np.sin(2 * np.pi * (k + 1) * x / NX) * np.cos(2 * np.pi * y / NY)
            + 0.05 * rng.standard_normal((NY, NX))
            for k in range(SLICES)
        ]
    )
    return np.stack([slices + 0.05 * s * rng.standard_normal(slices.shape) for s in range(STATES)])


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A result file written by the real writer around a known object (no iterations)."""
    generator = torch.Generator().manual_seed(0)
    amplitude = 1.0 - 0.1 * torch.rand(STATES, SLICES, NY, NX, generator=generator)
    obj = torch.polar(amplitude, torch.from_numpy(known_phases()).float())
    probe = torch.randn(MODES, 16, 16, dtype=torch.complex64, generator=generator)
    probe *= torch.tensor([1.0, 0.5, 0.2])[:, None, None]
    positions = torch.rand(6, 2, generator=generator, dtype=torch.float64) * 20 + 8
    params = PtychoParameters(obj, probe, positions, torch.zeros(2), 2.0)
    k = torch.fft.fftfreq(16, 0.1)
    ky, kx = torch.meshgrid(k, k, indexing="ij")
    cache = PropagatorCache(ky, kx, 0.0197)
    measured = torch.ones(6, 16, 16)
    engine = Engine(params, measured, cache, EngineSettings(iterations=1))
    setup = ReconstructionSetup(params, measured, cache, PIXEL_ANG, (1.0, 2.0), None)
    path = tmp_path_factory.mktemp("viewer") / "reconstruction.h5"
    write_result(path, setup, engine, energy_ev=300e3, semiangle_mrad=20.0)
    return path


@pytest.fixture(scope="module")
def page(result: Path) -> Path:
    return write_viewer(result)


def embedded(page: Path) -> dict[str, Any]:
    match = re.search(
        r'<script type="application/json" id="viewer-data">(.*?)</script>', page.read_text()
    )
    assert match is not None
    data: dict[str, Any] = json.loads(match.group(1))
    return data


def decode(image: dict[str, Any]) -> np.ndarray:
    """float64 (ny, nx): an embedded image decoded (by Pillow) back to values."""
    png = Image.open(io.BytesIO(base64.b64decode(image["png"])))
    assert png.mode == "L"
    q = np.asarray(png, dtype=np.float64)
    return image["min"] + q * (image["max"] - image["min"]) / 255.0


def file_object(result: Path) -> np.ndarray:
    with h5py.File(result, "r") as handle:
        return np.asarray(handle["object"])


def expected_q(values: np.ndarray) -> np.ndarray:
    """The 8-bit rendering of a real image over its own range."""
    low, high = values.min(), values.max()
    return np.round((values - low) / (high - low) * 255.0).astype(np.uint8)


def step(image: dict[str, Any]) -> float:
    return float(image["max"] - image["min"]) / 255.0


# --------------------------------------------------------------------------- unit tests


def test_page_embeds_one_image_per_slice_and_state(result: Path, page: Path) -> None:
    assert page == result.with_name("reconstruction_viewer.html")
    data = embedded(page)
    assert data["object"]["shape"] == [STATES, SLICES, NY, NX]
    assert data["object"]["pixel_size_ang"] == pytest.approx(PIXEL_ANG)
    assert data["object"]["origin_ang"] == pytest.approx([1.0, 2.0])
    for quantity in ("phase", "amplitude"):
        images = data["object"][quantity]
        # Each state and their mean; each slice and all slices.
        assert len(images) == STATES + 1
        assert all(len(row) == SLICES + 1 for row in images)
    assert len(data["probe"]["intensity"]) == MODES
    for name in ("slice-slider", "state-slider", "mode-slider", "slice-label", "object-canvas"):
        assert f'id="{name}"' in page.read_text()


def test_embedded_slices_equal_the_result_within_the_quantisation_step(
    result: Path, page: Path
) -> None:
    obj = file_object(result)
    data = embedded(page)["object"]
    phase = np.angle(obj).astype(np.float64)
    amplitude = np.abs(obj).astype(np.float64)
    weights = np.full(STATES, 1.0 / STATES)
    truths = {
        "phase": (phase, phase.sum(axis=1), np.tensordot(weights, phase, axes=1)),
        "amplitude": (amplitude, amplitude.prod(axis=1), np.tensordot(weights, amplitude, axes=1)),
    }
    for quantity, (per_slice, over_slices, over_states) in truths.items():
        images = data[quantity]
        for s in range(STATES):
            for k in range(SLICES):
                image = images[s][k]
                assert image["min"] == pytest.approx(per_slice[s, k].min())
                assert image["max"] == pytest.approx(per_slice[s, k].max())
                error = np.abs(decode(image) - per_slice[s, k]).max()
                assert error <= 0.5 * step(image) * (1 + 1e-6), (quantity, s, k)
            image = images[s][SLICES]
            assert np.abs(decode(image) - over_slices[s]).max() <= 0.5 * step(image) + 1e-6
        for k in range(SLICES):
            image = images[STATES][k]
            assert np.abs(decode(image) - over_states[k]).max() <= 0.5 * step(image) + 1e-6
    # The known phases survive the float32 round trip through the file.
    np.testing.assert_allclose(phase, known_phases(), atol=1e-5)


def test_probe_intensity_and_power_fractions(result: Path, page: Path) -> None:
    with h5py.File(result, "r") as handle:
        probe = np.asarray(handle["probe"])
    data = embedded(page)["probe"]
    np.testing.assert_allclose(data["power_fraction"], probe_power_fractions(probe))
    for mode, image in enumerate(data["intensity"]):
        truth = np.abs(probe[mode]).astype(np.float64) ** 2
        assert np.abs(decode(image) - truth).max() <= 0.5 * step(image) * (1 + 1e-6)


def test_page_is_self_contained(page: Path) -> None:
    text = page.read_text()
    outside = re.sub(r'(<script type="application/json"[^>]*>).*?(</script>)', r"\1\2", text)
    for forbidden in ("http:", "https:", "//cdn", "<link", "src=", "import(", "fetch("):
        assert forbidden not in outside, forbidden
    assert text.count("<script") == 2  # the data and the inline script


def test_one_state_one_slice_has_no_mean_or_sum_images(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    with h5py.File(path, "w") as handle:
        handle.attrs["format"] = "ptyscope-result"
        obj = handle.create_dataset("object", data=np.ones((1, 1, 8, 6), np.complex64))
        obj.attrs["pixel_size_ang"] = (0.2, 0.2)
        handle.create_dataset("probe", data=np.ones((1, 4, 4), np.complex64))
    out = write_viewer(path, tmp_path / "sub" / "v.html")
    data = embedded(out)
    assert len(data["object"]["phase"]) == 1 and len(data["object"]["phase"][0]) == 1
    assert data["object"]["phase"][0][0]["min"] == data["object"]["phase"][0][0]["max"] == 0.0
    assert 'id="slice-sum" disabled' in out.read_text()
    assert not list(out.parent.glob(".*.tmp"))  # the atomic write left no temporary file


def test_page_size_for_five_slices_two_states_of_200_px(tmp_path: Path) -> None:
    """White-noise phase, the worst case for PNG: the page stays under 2.2 MB."""
    rng = np.random.default_rng(0)
    shape = (2, 5, 200, 200)
    obj = (1 - 0.1 * rng.random(shape)) * np.exp(1j * rng.uniform(-np.pi, np.pi, shape))
    path = tmp_path / "big.h5"
    with h5py.File(path, "w") as handle:
        dataset = handle.create_dataset("object", data=obj.astype(np.complex64))
        dataset.attrs["pixel_size_ang"] = (0.1, 0.1)
        handle.create_dataset("probe", data=np.ones((3, 64, 64), np.complex64))
    size = write_viewer(path).stat().st_size
    assert 1.0e6 < size < 2.2e6, size


def test_encode_image_and_scale_length() -> None:
    encoded = encode_image(np.array([[0.0, np.nan], [1.0, 3.0]]))
    assert (encoded["min"], encoded["max"]) == (0.0, 3.0)
    np.testing.assert_array_equal(decode(encoded), [[0.0, 0.0], [1.0, 3.0]])
    with pytest.raises(ValueError, match=r"image must be a non-empty \(ny, nx\) array"):
        encode_image(np.zeros(3))
    assert [nice_scale_length_ang(w) for w in (4.8, 10.0, 26.0, 240.0)] == [0.5, 2.0, 5.0, 20.0]
    with pytest.raises(ValueError, match="width_ang must be a finite number > 0"):
        nice_scale_length_ang(-1.0)


def _write(path: Path, *, fmt: str = "ptyscope-result", **datasets: Any) -> Path:
    with h5py.File(path, "w") as handle:
        handle.attrs["format"] = fmt
        for name, (data, attrs) in datasets.items():
            dataset = handle.create_dataset(name, data=data)
            dataset.attrs.update(attrs)
    return path


GOOD_OBJECT = (np.ones((1, 2, 4, 4), np.complex64), {"pixel_size_ang": (0.1, 0.1)})
GOOD_PROBE = (np.ones((1, 4, 4), np.complex64), {})


def test_bad_inputs_give_errors_naming_the_parameter_and_rule(tmp_path: Path) -> None:
    missing = tmp_path / "nope.h5"
    with pytest.raises(
        FileNotFoundError, match=r"result must be an existing .*nope\.h5.*not found"
    ):
        write_viewer(missing)
    with pytest.raises(ValueError, match="result must be a result file, got the directory"):
        write_viewer(tmp_path)
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    with pytest.raises(ValueError, match=r"result must be a ptyscope result file \(HDF5\).*not"):
        write_viewer(text)
    other = _write(tmp_path / "other.h5", fmt="ptyscope-data", object=GOOD_OBJECT)
    with pytest.raises(ValueError, match=r"format attribute 'ptyscope-result'.*'ptyscope-data'"):
        write_viewer(other)
    no_probe = _write(tmp_path / "no_probe.h5", object=GOOD_OBJECT)
    with pytest.raises(ValueError, match=r"holding the datasets object and probe.*without probe"):
        write_viewer(no_probe)
    real = _write(tmp_path / "real.h5", object=(np.ones((1, 1, 4, 4)), {}), probe=GOOD_PROBE)
    with pytest.raises(ValueError, match=r"object must be complex \(states, slices, ny, nx\)"):
        write_viewer(real)
    flat = _write(
        tmp_path / "flat.h5", object=(np.ones((4, 4), np.complex64), {}), probe=GOOD_PROBE
    )
    with pytest.raises(ValueError, match=r"got complex64 \(4, 4\)"):
        write_viewer(flat)
    unscaled = (GOOD_OBJECT[0], {})
    no_pixel = _write(tmp_path / "no_pixel.h5", object=unscaled, probe=GOOD_PROBE)
    with pytest.raises(ValueError, match="object must have the attribute pixel_size_ang"):
        write_viewer(no_pixel)
    negative = (GOOD_OBJECT[0], {"pixel_size_ang": (0.1, -0.2)})
    bad_pixel = _write(tmp_path / "bad_pixel.h5", object=negative, probe=GOOD_PROBE)
    with pytest.raises(ValueError, match=r"pixel_size_ang must be two finite values > 0.*-0\.2"):
        write_viewer(bad_pixel)
    good = _write(tmp_path / "good.h5", object=GOOD_OBJECT, probe=GOOD_PROBE)
    with pytest.raises(ValueError, match="output must differ from result"):
        write_viewer(good, good)
    with pytest.raises(ValueError, match="output must be a file path, got the directory"):
        write_viewer(good, tmp_path)


def test_view_command_prints_the_path(result: Path, tmp_path: Path) -> None:
    out = tmp_path / "v.html"
    run = CliRunner().invoke(view_command, [str(result), "-o", str(out)])
    assert run.exit_code == 0, run.output
    assert run.output.strip() == str(out) and out.is_file()
    failed = CliRunner().invoke(view_command, [str(tmp_path / "missing.h5")])
    assert failed.exit_code == 1
    assert "result must be an existing result file" in failed.output


# --------------------------------------------------------------------------- in a browser


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """Debian's headless Chromium through its chromedriver (never a downloaded driver)."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.skip(f"browser test needs {' and '.join(missing)} (apt: chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1200,900",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


_READ_CANVAS = """
const canvas = document.getElementById("object-canvas");
const rgba = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
return [canvas.width, canvas.height, Array.from(rgba)];
"""


def canvas_q(driver: Any) -> np.ndarray:
    """uint8 (ny, nx): the grey level the object canvas shows (checked grey and opaque)."""
    width, height, values = driver.execute_script(_READ_CANVAS)
    rgba = np.asarray(values, dtype=np.uint8).reshape(height, width, 4)
    np.testing.assert_array_equal(rgba[..., 1], rgba[..., 0])
    np.testing.assert_array_equal(rgba[..., 2], rgba[..., 0])
    assert (rgba[..., 3] == 255).all()
    return rgba[..., 0]


def wait_shown(driver: Any, key: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 10).until(
        lambda d: d.find_element("id", "object-canvas").get_attribute("data-shown") == key
    )


def test_viewer_switches_slices_in_a_headless_browser(
    browser: Any, result: Path, page: Path
) -> None:
    from selenium.webdriver.common.keys import Keys

    phase = np.angle(file_object(result)).astype(np.float64)
    browser.get(page.resolve().as_uri())
    wait_shown(browser, "phase/state-1/slice-1")
    label = browser.find_element("id", "slice-label")
    assert label.text == "slice 1 / 5"
    first = canvas_q(browser)
    np.testing.assert_array_equal(first, expected_q(phase[0, 0]))

    slider = browser.find_element("id", "slice-slider")
    slider.send_keys(Keys.ARROW_RIGHT, Keys.ARROW_RIGHT)  # key presses, as a user would
    assert slider.get_attribute("value") == "3"
    assert label.text == "slice 3 / 5"
    wait_shown(browser, "phase/state-1/slice-3")
    third = canvas_q(browser)
    np.testing.assert_array_equal(third, expected_q(phase[0, 2]))
    assert (third != first).mean() > 0.5

    browser.find_element("id", "state-slider").send_keys(Keys.ARROW_RIGHT)
    wait_shown(browser, "phase/state-2/slice-3")
    assert browser.find_element("id", "state-label").text.startswith("state 2 / 2")
    np.testing.assert_array_equal(canvas_q(browser), expected_q(phase[1, 2]))

    browser.find_element("id", "slice-sum").click()
    wait_shown(browser, "phase/state-2/sum")
    assert label.text == "sum of 5 slices"
    summed = canvas_q(browser).astype(int) - expected_q(phase[1].sum(axis=0))
    assert np.abs(summed).max() <= 1  # float rounding of the sum may move a level

    browser.find_element("id", "object-canvas").click()  # the pointer over the image
    hover = browser.find_element("id", "object-hover").text
    assert re.fullmatch(r"y = -?[\d.]+ Å, x = -?[\d.]+ Å: -?[\d.e+-]+ rad", hover), hover
    assert browser.find_element("id", "object-max").text.endswith(" rad")
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
