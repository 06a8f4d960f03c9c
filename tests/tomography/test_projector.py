"""The projector against physics: 3D potentials of rotated atoms, shifts, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from ptyscope.simulation.specimens import fcc_cluster, rotate_atoms, rotation_matrix
from ptyscope.simulation.tilt_series import potential_volume
from ptyscope.tomography.projector import (
    ProjectionOperator,
    box_center_ang,
    project,
    rotation_matrices,
)

VOXEL_ANG = 0.4


@pytest.fixture(scope="module")
def cluster():
    return fcc_cluster("Au", 4.08, radius_ang=5.0, vacuum_ang=5.0)  # 43 atoms, 20 Å box


def test_rotation_matrices_match_the_simulation_convention():
    rng = np.random.default_rng(0)
    angles = rng.uniform(-180, 180, size=(6, 3))
    ours = rotation_matrices(torch.tensor(angles)).numpy()
    for row, matrix in zip(angles, ours, strict=True):
        np.testing.assert_allclose(matrix, rotation_matrix(row), atol=1e-12)


@pytest.mark.parametrize(
    ("euler", "blur_ang", "tolerance"),
    [
        ((0.0, 30.0, 0.0), 0.5, 0.03),
        ((0.0, -70.0, 0.0), 0.5, 0.03),
        ((20.0, -50.0, 70.0), 1.0, 0.025),
    ],
)
def test_projection_equals_the_potential_of_the_rotated_atoms(cluster, euler, blur_ang, tolerance):
    """Projecting the unrotated potential at (φ, θ, ψ) is the potential of the atoms moved
    by simulation.rotate_atoms, summed along z: this pins the angle, sign and centre
    conventions to the simulator's. Each bilinear resampling of peaks a few voxels wide
    blurs them: a single-axis tilt (one resampling) is within 1.5 % RMS once both sides
    are blurred by 0.5 Å; general angles (ψ, θ and φ: three resamplings) are 6 % there and
    1.2 % at 1 Å. The integral (mass) agrees within 0.5 % at every angle."""
    volume = potential_volume(cluster, VOXEL_ANG)
    voxel = volume["voxel_size_ang"][0]
    ours = project(torch.tensor(volume["potential_v"]), torch.tensor([euler]), voxel)[0].numpy()
    center = (0.5 * cluster.cell.lengths()).tolist()
    rotated = potential_volume(rotate_atoms(cluster, list(euler), center), VOXEL_ANG)
    truth = rotated["potential_v"].sum(axis=0) * voxel
    blur = blur_ang / voxel
    a, b = ndimage.gaussian_filter(ours, blur), ndimage.gaussian_filter(truth, blur)
    assert np.sqrt(np.mean((a - b) ** 2) / np.mean(b**2)) < tolerance
    assert ours.sum() == pytest.approx(truth.sum(), rel=5e-3)
    assert box_center_ang(volume["potential_v"].shape, voxel) == pytest.approx(center)


def _blob(shape, centre_zyx, sigma_px):
    k, i, j = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    r2 = (k - centre_zyx[0]) ** 2 + (i - centre_zyx[1]) ** 2 + (j - centre_zyx[2]) ** 2
    return torch.tensor(np.exp(-r2 / (2 * sigma_px**2)), dtype=torch.float64)


def _centroid(image):
    total = image.sum()
    i, j = np.meshgrid(*(np.arange(n) for n in image.shape), indexing="ij")
    return np.array([(i * image).sum() / total, (j * image).sum() / total])


def test_shift_moves_the_projection_by_plus_s():
    volume = _blob((24, 24, 24), (12, 10, 13), 1.5)
    euler = torch.tensor([[0.0, 40.0, 0.0]] * 2, dtype=torch.float64)
    shifts = torch.tensor([[0.0, 0.0], [0.7, -1.3]], dtype=torch.float64)  # Å
    images = project(volume, euler, 0.5, shifts_ang=shifts).numpy()
    moved = (_centroid(images[1]) - _centroid(images[0])) * 0.5
    np.testing.assert_allclose(moved, [0.7, -1.3], atol=0.01)


def test_rotation_about_y_moves_a_blob_where_the_matrix_says():
    """A blob at r projects to (R (r − c) + c) in (y, x)."""
    voxel, centre_zyx = 0.5, np.array([12.0, 9.0, 15.0])
    volume = _blob((24, 24, 24), centre_zyx, 1.5)
    for euler in ((0.0, 35.0, 0.0), (30.0, 60.0, -10.0)):
        image = project(volume, torch.tensor([euler], dtype=torch.float64), voxel)[0].numpy()
        c = np.asarray(box_center_ang(volume.shape, voxel))
        r = centre_zyx[::-1] * voxel  # (x, y, z) [Å]
        expected = rotation_matrix(euler) @ (r - c) + c
        np.testing.assert_allclose(_centroid(image) * voxel, expected[[1, 0]], atol=0.02)


def test_mass_is_the_same_at_every_tilt():
    volume = _blob((32, 32, 32), (15, 17, 14), 2.0)
    angles = torch.tensor([[0.0, t, 0.0] for t in range(-70, 71, 20)], dtype=torch.float64)
    sums = project(volume, angles, 0.5).sum(dim=(1, 2)).numpy()
    np.testing.assert_allclose(sums / sums[0], 1.0, atol=1e-3)


def test_operator_equals_the_functional_projector():
    torch.manual_seed(1)
    volume = torch.rand(12, 14, 10, dtype=torch.float64)
    euler = torch.tensor(
        [[0.0, 35.0, 0.0], [12.0, -60.0, -7.0], [0.0, 0.0, 0.0]], dtype=torch.float64
    )
    shifts = torch.tensor([[0.0, 0.0], [0.4, -0.9], [-0.3, 0.2]], dtype=torch.float64)
    operator = ProjectionOperator(volume.shape, euler, 0.5, shifts_ang=shifts)
    expected = project(volume, euler, 0.5, shifts_ang=shifts)
    torch.testing.assert_close(operator(volume), expected, rtol=1e-10, atol=1e-10)
    # Its backward pass is the adjoint: <A x, y> = <x, Aᵀ y>.
    x = volume.clone().requires_grad_(True)
    y = torch.rand_like(expected)
    (adjoint,) = torch.autograd.grad((operator(x) * y).sum(), x)
    assert float((adjoint * volume).sum()) == pytest.approx(float((expected * y).sum()), rel=1e-10)


def test_gradients_in_volume_angles_and_shifts():
    torch.manual_seed(0)
    volume = torch.rand(5, 6, 7, dtype=torch.float64, requires_grad=True)
    euler = torch.tensor([[10.0, 25.0, -5.0], [0.3, -40.0, -0.2]], dtype=torch.float64)
    shifts = torch.tensor([[0.1, -0.2], [0.3, 0.05]], dtype=torch.float64)
    euler.requires_grad_(True)
    shifts.requires_grad_(True)

    def run(v, e, s):
        return project(v, e, 0.6, shifts_ang=s)

    # Bilinear sampling is piecewise linear: finite differences must stay within a cell,
    # and angles of exactly 0 put samples on the kinks (hence ψ = -0.2, φ = 0.3).
    assert torch.autograd.gradcheck(run, (volume, euler, shifts), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"volume": torch.zeros(4, 4)}, "volume must be a real tensor"),
        ({"volume": torch.zeros(4, 4, 4, dtype=torch.complex64)}, "real floating"),
        ({"voxel_ang": 0.0}, "voxel_ang must be > 0"),
        ({"euler_deg": torch.zeros(2, 2)}, "euler_deg must have shape"),
        ({"euler_deg": torch.tensor([[0.0, float("nan"), 0.0]])}, "euler_deg must be finite"),
        ({"shifts_ang": torch.zeros(3, 2)}, "shifts_ang must have shape"),
        ({"center_ang": (1.0, 2.0)}, "center_ang must be three"),
    ],
)
def test_bad_input_names_the_parameter(kwargs, message):
    args = {"volume": torch.zeros(4, 4, 4), "euler_deg": torch.zeros(1, 3), "voxel_ang": 0.5}
    args |= kwargs
    with pytest.raises(ValueError, match=message):
        project(args.pop("volume"), args.pop("euler_deg"), args.pop("voxel_ang"), **args)
