"""Start a reconstruction from an earlier result of the same data.

This is what the two-stage mixed-object preset needs (Gladyshev et al. 2023, 2025): a first
run with one object state and several probe modes lets the modes absorb the partial spatial
coherence; the second run starts each of its object states from that object, with its own
small random phases (states that start equal stay equal), and keeps the modes.
"""

from __future__ import annotations

import os

import h5py
import numpy as np
import torch

from .setup import ReconstructionSetup

__all__ = ["initialise_from_result"]


def _read(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    try:
        with h5py.File(path, "r") as handle:
            names = ("object", "probe", "positions_ang", "nominal_positions_ang", "state_weights")
            missing = [name for name in names if name not in handle]
            if missing:
                raise ValueError(
                    f"init.result {os.fspath(path)!r} is not a ptyscope result: it lacks {missing}"
                )
            return {name: handle[name][()] for name in names}
    except OSError as exc:
        raise ValueError(f"init.result: cannot read {os.fspath(path)!r} ({exc})") from None


def initialise_from_result(
    setup: ReconstructionSetup,
    path: str | os.PathLike[str],
    *,
    obj: bool = True,
    probe: bool = True,
    positions: bool = True,
    state_noise_rad: float = 0.01,
    seed: int = 0,
) -> None:
    """Overwrite the initial parameters of ``setup`` with those of a result file, in place.

    Parameters
    ----------
    setup:
        From :func:`~ptyscope.reconstruction.setup.prepare` on the same data as the result.
    path:
        The earlier result (``reconstruction.results`` layout).
    obj:
        Every state starts from the weighted mean of the result's states, times
        exp(i·φ_s) with φ_s ~ N(0, ``state_noise_rad``²) per pixel, different per state
        (no noise with one state). Slices and grid must match.
    probe:
        Take the probe modes; their number must match.
    positions:
        Take the fitted scan positions (the nominal ones must match).
    seed:
        Seed of the state phases.
    """
    stored = _read(path)
    params = setup.params
    where = f"init.result {os.fspath(path)!r}"
    if obj:
        previous = stored["object"]
        want = tuple(params.object.shape[1:])
        if previous.ndim != 4 or tuple(previous.shape[1:]) != want:
            raise ValueError(
                f"{where}: its object is (states, slices, ny, nx) = {previous.shape}, this run "
                f"needs (*, {want[0]}, {want[1]}, {want[2]}): use the same data, "
                "object.slices and padding"
            )
        weights = np.asarray(stored["state_weights"], dtype=np.float64).reshape(-1, 1, 1, 1)
        mean = torch.as_tensor((weights * previous).sum(axis=0), dtype=params.object.dtype)
        states = params.num_states
        generator = torch.Generator().manual_seed(seed)
        noise = torch.randn((states, *mean.shape), generator=generator)
        noise *= state_noise_rad if states > 1 else 0.0
        start = mean[None] * torch.polar(torch.ones_like(noise), noise)
        params.object.data.copy_(start.to(params.object.device))
    if probe:
        modes = stored["probe"]
        if tuple(modes.shape) != tuple(params.probe.shape):
            raise ValueError(
                f"{where}: its probe is (modes, ny, nx) = {modes.shape}, this run needs "
                f"{tuple(params.probe.shape)}: set probe.modes = {modes.shape[0]}"
            )
        params.probe.data.copy_(torch.as_tensor(modes).to(params.probe))
    if positions:
        nominal = np.asarray(stored["nominal_positions_ang"], dtype=np.float64)
        mine = setup.positions_ang()
        if nominal.shape != mine.shape or not np.allclose(nominal, mine, atol=1e-3):
            raise ValueError(
                f"{where}: its nominal scan positions differ from this run's data "
                f"({nominal.shape[0]} vs {mine.shape[0]} positions); init.positions needs the "
                "same scan"
            )
        pixel = np.asarray(setup.pixel_size_ang)
        correction = (np.asarray(stored["positions_ang"]) - nominal) / pixel
        params.positions.data.copy_(torch.as_tensor(correction).to(params.positions))
