"""Dataset4D: consistent calibration through crops and binning, and block-wise lazy access."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import ptyscope.data.dataset as dataset_module
from ptyscope.data.dataset import Calibration, Dataset4D, scan_grid_positions
from ptyscope.io.datafile import read_dataset, write_dataset


def _calibration(**changes: object) -> Calibration:
    base: dict[str, object] = {
        "energy_ev": 300e3,
        "scan_step_ang": (0.4, 0.5),
        "detector_pixel_inv_ang": (0.05, 0.04),
        "scan_rotation_deg": 25.0,
        "scan_origin_ang": (1.0, -2.0),
        "detector_center_px": (7.0, 6.0),
    }
    base.update(changes)
    return Calibration(**base)  # type: ignore[arg-type]


def _spot_dataset(counts: bool = False) -> Dataset4D:
    """(6, 5) scan of (16, 12) patterns, each with one bright pixel at a known frequency."""
    rng = np.random.default_rng(4)
    data = rng.poisson(3.0, size=(6, 5, 16, 12)).astype(np.uint16 if counts else np.float32)
    data[..., 10, 3] = 500  # k = ((10 − 7)·0.05, (3 − 6)·0.04) Å⁻¹
    return Dataset4D(data, _calibration())


def _spot_frequency(ds: Dataset4D) -> tuple[float, float]:
    mean = ds.mean_pattern()
    row, col = np.unravel_index(np.argmax(mean), mean.shape)
    # Intensity-weighted position of the brightest 3x3 neighbourhood (binning spreads it).
    ys, xs = np.mgrid[0 : mean.shape[0], 0 : mean.shape[1]]
    near = (abs(ys - row) <= 1) & (abs(xs - col) <= 1)
    weights = np.where(near, mean - np.median(mean), 0.0).clip(min=0)
    py, px = (ys * weights).sum() / weights.sum(), (xs * weights).sum() / weights.sum()
    cy, cx = ds.detector_center_px
    dk = ds.calibration.detector_pixel_inv_ang
    return float((py - cy) * dk[0]), float((px - cx) * dk[1])


def test_detector_operations_keep_the_physical_frequency() -> None:
    ds = _spot_dataset()
    expected = (3 * 0.05, -3 * 0.04)
    assert _spot_frequency(ds) == pytest.approx(expected, abs=1e-3)
    cropped = ds.crop_detector(slice(2, 14), slice(1, 11))
    assert cropped.detector_shape == (12, 10)
    assert _spot_frequency(cropped) == pytest.approx(expected, abs=1e-3)
    padded = ds.pad_detector((21, 18))
    assert _spot_frequency(padded) == pytest.approx(expected, abs=1e-3)
    assert padded.data.sum() == pytest.approx(ds.data.sum())
    # Binning by 2: the spot lands inside one bin; the centroid of the bin grid moves by at
    # most half a new pixel, so compare within one binned pixel.
    binned = ds.bin_detector(2)
    assert binned.detector_shape == (8, 6)
    assert binned.calibration.detector_pixel_inv_ang == pytest.approx((0.1, 0.08))
    got = _spot_frequency(binned)
    assert abs(got[0] - expected[0]) <= 0.05 + 1e-9
    assert abs(got[1] - expected[1]) <= 0.04 + 1e-9
    assert binned.data.sum() == pytest.approx(ds.data.sum(), rel=1e-6)


def test_scan_crop_and_binning_keep_positions() -> None:
    ds = _spot_dataset(counts=True)
    positions = ds.positions_ang()
    crop = ds.crop_scan(slice(2, 5), slice(1, 4))
    np.testing.assert_allclose(crop.positions_ang(), positions[2:5, 1:4], atol=1e-12)
    np.testing.assert_array_equal(crop.data, ds.data[2:5, 1:4])
    binned = ds.bin_scan(2)
    assert binned.scan_shape == (3, 2)
    block_centres = positions[:6, :4].reshape(3, 2, 2, 2, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(binned.positions_ang(), block_centres, atol=1e-12)
    expected = ds.data[:6, :4].astype(np.int64).reshape(3, 2, 2, 2, 16, 12).sum(axis=(1, 3))
    np.testing.assert_array_equal(binned.data, expected)  # counts stay exact integers
    with pytest.raises(ValueError, match="unit-step"):
        ds.crop_scan(slice(0, 4, 2), slice(None))
    with pytest.raises(ValueError, match="factor must be an integer"):
        ds.bin_detector(0)


def test_transposed_scan_swaps_the_roles_of_the_steps() -> None:
    # The data of a transposed scan is the plain scan with its two scan axes swapped.
    plain = scan_grid_positions((4, 3), (0.4, 0.5), 30.0, (0.0, 0.0))
    mirrored = scan_grid_positions((3, 4), (0.5, 0.4), 30.0, (0.0, 0.0), scan_transpose=True)
    np.testing.assert_allclose(mirrored, plain.transpose(1, 0, 2), atol=1e-12)
    # Transposed: index i walks along the fast direction ê_fast = (sin ρ, cos ρ).
    step = mirrored[1, 0] - mirrored[0, 0]
    np.testing.assert_allclose(step, 0.5 * np.array([np.sin(np.pi / 6), np.cos(np.pi / 6)]))
    cal = _calibration(scan_transpose=True)
    assert cal.scan_transpose is True


def test_lazy_memmap_is_binned_block_by_block(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # A 192 MiB float32 file binned with 8 MiB blocks: numpy's allocations (tracked by
    # tracemalloc) must stay near one block plus the 12 MiB result, far below the file.
    shape = (64, 48, 128, 128)
    path = tmp_path / "big.npy"
    data = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
    data[5, 7, 64, 64] = 3.0
    data.flush()
    del data
    mapped = np.load(path, mmap_mode="r")
    ds = Dataset4D(mapped, _calibration(detector_center_px=None))
    assert ds.is_lazy
    assert ds.nbytes == 192 * 2**20
    monkeypatch.setattr(dataset_module, "DEFAULT_BLOCK_BYTES", 8 * 2**20)
    tracemalloc.start()
    binned = ds.bin_detector(4)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert binned.detector_shape == (32, 32)
    assert binned.data[5, 7, 16, 16] == 3.0
    assert peak < 48 * 2**20, f"peak traced memory {peak / 2**20:.1f} MiB"


def test_hdf5_lazy_read_and_block_wise_write(tmp_path: Path) -> None:
    ds = _spot_dataset(counts=True)
    write_dataset(tmp_path / "a.h5", ds)
    lazy = read_dataset(tmp_path / "a.h5", lazy=True)
    assert lazy.is_lazy
    assert lazy.calibration == ds.calibration
    np.testing.assert_array_equal(lazy.data[2], ds.data[2])
    # Writing a lazy dataset copies it block by block into a new file.
    write_dataset(tmp_path / "b.h5", lazy.bin_scan(1))
    np.testing.assert_array_equal(read_dataset(tmp_path / "b.h5").data, ds.data)
    eager = read_dataset(tmp_path / "a.h5")
    assert not eager.is_lazy


@pytest.mark.slow
def test_file_larger_than_half_the_memory_is_inspected_and_binned(tmp_path: Path) -> None:
    # 13 GiB of float32 patterns (more than half of a 24 GiB machine), as a sparse .npy:
    # opened, inspected and binned 4x4 without loading it; numpy's own allocations stay
    # below one default block (256 MiB) plus the 0.8 GiB result.
    shape = (208, 256, 256, 256)  # 13 GiB
    path = tmp_path / "huge.npy"
    data = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
    data[100, 200, 128, 130] = 7.0
    data.flush()
    del data
    ds = Dataset4D(np.load(path, mmap_mode="r"), _calibration(detector_center_px=None))
    assert ds.nbytes == 13 * 2**30
    tracemalloc.start()
    binned = ds.bin_detector(4)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert binned.data[100, 200, 32, 32] == 7.0
    assert peak < binned.nbytes + 2 * dataset_module.DEFAULT_BLOCK_BYTES


def test_count_statistics_estimate_the_dose(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from ptyscope.cli import main
    from ptyscope.data.summary import count_statistics

    rng = np.random.default_rng(8)
    lam = 0.05  # counts per pixel: 0.05 x 256 pixels = 12.8 electrons per pattern
    data = rng.poisson(lam, size=(40, 30, 16, 16)).astype(np.float32)
    ds = Dataset4D(data, _calibration())
    stats = count_statistics(ds, max_rows=8)
    assert stats.sampled_patterns == 8 * 30
    assert stats.integer_valued
    # 240 sampled totals, each Poisson(12.8): the mean is within 5 standard errors.
    assert abs(stats.mean_counts - 12.8) < 5 * np.sqrt(12.8 / 240)
    assert stats.dose_e_per_ang2 == pytest.approx(stats.mean_counts / (0.4 * 0.5))
    assert not count_statistics(Dataset4D(data * 0.5 + 0.25, _calibration())).integer_valued
    write_dataset(tmp_path / "d.h5", ds)
    result = CliRunner().invoke(main, ["info", str(tmp_path / "d.h5")])
    assert result.exit_code == 0, result.output
    assert "dose:" in result.output
    assert "scan 40 x 30, detector 16 x 16" in result.output


def test_big_endian_blocks_come_back_in_native_order() -> None:
    data = np.arange(2 * 3 * 4 * 4, dtype=">u2").reshape(2, 3, 4, 4)
    ds = Dataset4D(data, _calibration())
    for _, block in ds.iter_scan_rows():
        assert block.dtype.isnative
        np.testing.assert_array_equal(block, data[: block.shape[0]])
    assert ds.to_memory().data.dtype.isnative
    assert ds.crop_scan(slice(0, 1), slice(0, 2)).data.dtype.isnative
