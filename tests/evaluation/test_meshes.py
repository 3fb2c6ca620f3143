"""Surface meshes with per-vertex values, checked on shapes whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from shapetune.data.indices import wall_thickness_points
from shapetune.evaluation.meshes import (MeshError, mesh_bytes, read_mesh, surface_mesh, with_distance_to,
                                         with_wall_thickness, write_mesh)
from shapetune.evaluation.navigation import labels_from_myocardium

G, SP = 32, 2.0


def _grid():
    z, y, x = np.mgrid[:G, :G, :G] * SP - (G / 2 - 0.5) * SP
    return z, y, x


def _ball(r: float, centre=(0.0, 0.0, 0.0)) -> np.ndarray:
    z, y, x = _grid()
    return (((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2) < r**2).astype(np.uint8)


def _tube(inner: float, outer_low: float, outer_high: float) -> np.ndarray:
    """A short-axis ring stack (axis 0 apex -> base): outer radius ``outer_low`` below the middle, ``outer_high``
    above, so the wall is thicker in the upper half."""
    z, y, x = _grid()
    rho = np.sqrt(x**2 + y**2)
    outer = np.where(z > 0, outer_high, outer_low)
    return ((rho >= inner) & (rho < outer) & (np.abs(z) < 20)).astype(np.uint8)


def _euler(mesh) -> int:
    edges = np.sort(np.concatenate([mesh.faces[:, [0, 1]], mesh.faces[:, [1, 2]], mesh.faces[:, [2, 0]]]), axis=1)
    return len(mesh.verts) - len(np.unique(edges, axis=0)) + len(mesh.faces)


@pytest.mark.parametrize("radius", [6.0, 10.0, 14.0])
def test_a_ball_becomes_a_closed_sphere_of_its_radius(radius):
    m = surface_mesh(_ball(radius), SP)
    r = np.linalg.norm(m.verts - (G / 2 - 0.5) * SP, axis=1)
    assert abs(np.median(r) - radius) < 0.25 * SP and r.std() < 0.25 * SP
    assert _euler(m) == 2  # one closed surface, no holes


def test_a_shape_cut_by_the_grid_border_is_still_closed():
    m = surface_mesh(_ball(12.0, centre=(-26.0, 0.0, 0.0)), SP)  # reaches past the first slice
    assert _euler(m) == 2 and m.verts[:, 0].min() < 0.5 * SP


@pytest.mark.parametrize("volume,message", [(np.zeros((G, G, G)), "empty"), (np.ones((G, G, G)), "full")])
def test_no_surface_is_an_error(volume, message):
    with pytest.raises(MeshError, match=message):
        surface_mesh(volume, SP)


def test_wall_thickness_per_vertex_follows_the_wall_and_the_clinical_index():
    tube = _tube(10.0, 16.0, 22.0)  # walls of 6 and 12 mm
    m = with_wall_thickness(surface_mesh(tube, SP), tube, SP)
    wt, z = m.values["wall_thickness_mm"], m.verts[:, 0] - (G / 2 - 0.5) * SP
    low, high = np.median(wt[(z < -4) & (z > -16)]), np.median(wt[(z > 4) & (z < 16)])
    assert abs(low - 6.0) <= SP / 2 and abs(high - 12.0) <= SP / 2
    # On the epicardium it is the distance the clinical indices measure (dashboard and tables agree).
    t, _, _ = wall_thickness_points(labels_from_myocardium(_tube(10.0, 16.0, 16.0)), SP)
    m6 = with_wall_thickness(surface_mesh(_tube(10.0, 16.0, 16.0), SP), _tube(10.0, 16.0, 16.0), SP)
    assert abs(np.median(m6.values["wall_thickness_mm"]) - np.median(t)) <= SP / 2


@pytest.mark.parametrize("mesh_r,ref_r,expected", [(17.0, 15.0, 2.0), (13.0, 15.0, -2.0), (15.0, 15.0, 0.0)])
def test_signed_distance_to_a_reference_surface(mesh_r, ref_r, expected):
    m = with_distance_to(surface_mesh(_ball(mesh_r), SP), _ball(ref_r), SP)
    assert abs(np.median(m.values["distance_mm"]) - expected) < 0.3 * SP


@pytest.mark.parametrize("suffix", [".ply", ".vtk"])
def test_written_mesh_reads_back_with_its_values(tmp_path, suffix):
    tube = _tube(10.0, 16.0, 22.0)
    m = with_distance_to(with_wall_thickness(surface_mesh(tube, SP), tube, SP), _ball(16.0), SP)
    back = read_mesh(write_mesh(m, tmp_path / f"lv{suffix}"))
    assert np.allclose(back.verts, m.verts, atol=1e-4) and np.array_equal(back.faces, m.faces)
    for k in ("wall_thickness_mm", "distance_mm"):
        assert np.allclose(back.values[k], m.values[k], atol=1e-4), k
    (tmp_path / f"download{suffix}").write_bytes(mesh_bytes(m, suffix))  # what the dashboard's button serves
    assert np.array_equal(read_mesh(tmp_path / f"download{suffix}").faces, m.faces)


def test_another_format_is_refused(tmp_path):
    with pytest.raises(MeshError, match=r"lv\.stl: a mesh is written as \.ply or \.vtk"):
        write_mesh(surface_mesh(_ball(8.0), SP), tmp_path / "lv.stl")
