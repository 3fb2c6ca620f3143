"""Surface meshes of decoded shapes, with a value at every vertex: wall thickness, distance to another shape,
uncertainty; written as ``.ply`` or ``.vtk`` for ParaView.

A mesh is in mm, in the template's voxel axes (axis 0 runs apex -> base for cardiac shapes). Values at vertices
are read from voxel fields by trilinear interpolation at the vertex positions.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.ndimage import distance_transform_edt, gaussian_filter, map_coordinates

from shapetune.data.template import CAVITY, MYOCARDIUM
from shapetune.evaluation.navigation import labels_from_myocardium

# Gaussian smoothing of a binary mask before marching cubes, in voxels: 0.8 turns the voxel staircase into a
# smooth wall while moving the 0.5 level by well under a voxel (a 16 mm sphere at 2 mm: radius -0.1 mm).
SMOOTH_SIGMA = 0.8
MESH_FORMATS = {".ply": "ply", ".vtk": "vtk"}  # file suffix -> meshio's format name


class MeshError(ValueError):
    """A volume with no surface to mesh, or a mesh file format not supported."""


@dataclass
class Mesh:
    """Triangles over ``verts`` (mm) with named per-vertex ``values``."""

    verts: np.ndarray  # [N, 3] float, mm
    faces: np.ndarray  # [M, 3] int
    values: dict[str, np.ndarray] = field(default_factory=dict)  # name -> [N]


def surface_mesh(volume: np.ndarray, spacing: float, level: float = 0.5, sigma: float = SMOOTH_SIGMA) -> Mesh:
    """The ``level`` iso-surface of ``volume`` (a binary mask or a probability map), smoothed by ``sigma`` voxels.

    Raises:
        MeshError: the volume has no surface at ``level`` (empty or full).
    """
    from skimage.measure import marching_cubes

    v = np.asarray(volume, dtype=np.float32)
    if sigma > 0:
        v = gaussian_filter(v, sigma)
    if not (v.min() < level < v.max()):
        raise MeshError(f"no surface at level {level}: the volume is {'empty' if v.max() <= level else 'full'}")
    # Pad by one voxel so that a shape touching the grid's border still gets a closed surface.
    verts, faces, _, _ = marching_cubes(np.pad(v, 1), level=level, spacing=(spacing,) * 3, allow_degenerate=False)
    return Mesh((verts - spacing).astype(np.float32), faces.astype(np.int32))


def sample(mesh: Mesh, volume: np.ndarray, spacing: float) -> np.ndarray:
    """A voxel field's values at the mesh's vertices (trilinear; nearest edge value outside the grid)."""
    coords = (mesh.verts / spacing).T
    return map_coordinates(np.asarray(volume, dtype=np.float32), coords, order=1, mode="nearest")


def wall_thickness_field(myocardium: np.ndarray, spacing: float) -> np.ndarray:
    """Wall thickness in mm through every voxel: distance to the cavity plus distance to the outside, less the
    voxel the two distances share (a wall one voxel thick is one voxel thick).

    At an epicardial voxel this is its distance to the cavity, as
    :func:`shapetune.data.indices.wall_thickness_points` measures it; at an endocardial voxel, its distance to the
    outside: one definition for both surfaces of the wall.
    """
    labels = labels_from_myocardium(np.asarray(myocardium) > 0)
    cav, myo = labels == CAVITY, labels == MYOCARDIUM
    if not cav.any():
        return np.zeros(labels.shape, dtype=np.float32)
    to_cavity = distance_transform_edt(~cav, sampling=spacing)
    to_outside = distance_transform_edt(myo | cav, sampling=spacing)
    return np.maximum(to_cavity + to_outside - spacing, 0).astype(np.float32)


def with_wall_thickness(mesh: Mesh, myocardium: np.ndarray, spacing: float) -> Mesh:
    """``mesh`` with ``wall_thickness_mm`` at every vertex (of the myocardium it was meshed from)."""
    mesh.values["wall_thickness_mm"] = sample(mesh, wall_thickness_field(myocardium, spacing), spacing)
    return mesh


def surface_distance_field(mask: np.ndarray, spacing: float) -> np.ndarray:
    """Signed distance in mm to the boundary of ``mask``: negative inside, positive outside (0.5 voxel at the
    outermost voxel centres: the boundary lies between voxels)."""
    m = np.asarray(mask) > 0
    if not m.any():
        raise MeshError("no surface to measure distances to: the reference mask is empty")
    outside = distance_transform_edt(~m, sampling=spacing)
    inside = distance_transform_edt(m, sampling=spacing)
    return (np.where(m, -inside, outside) + np.where(m, 0.5, -0.5) * spacing).astype(np.float32)


def with_distance_to(mesh: Mesh, reference: np.ndarray, spacing: float) -> Mesh:
    """``mesh`` with ``distance_mm`` at every vertex: signed distance to the reference shape's surface (positive:
    the mesh lies outside the reference, e.g. a reconstruction wider than its input)."""
    mesh.values["distance_mm"] = sample(mesh, surface_distance_field(reference, spacing), spacing)
    return mesh


def write_mesh(mesh: Mesh, path: str | Path) -> Path:
    """Write ``mesh`` with its per-vertex values as ``.ply`` or ``.vtk`` (by the suffix) for ParaView.

    Raises:
        MeshError: another suffix.
    """
    import meshio

    path = Path(path)
    fmt = MESH_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise MeshError(f"{path}: a mesh is written as {' or '.join(MESH_FORMATS)}")
    data = {k: np.asarray(v, dtype=np.float32) for k, v in mesh.values.items()}
    meshio.Mesh(mesh.verts, [("triangle", mesh.faces)], point_data=data).write(path, file_format=fmt)
    return path


def mesh_bytes(mesh: Mesh, suffix: str) -> bytes:
    """The file :func:`write_mesh` writes, as bytes (a download)."""
    with tempfile.TemporaryDirectory() as tmp:
        return write_mesh(mesh, Path(tmp) / f"mesh{suffix}").read_bytes()


def read_mesh(path: str | Path) -> Mesh:
    """A mesh written by :func:`write_mesh`, read back with meshio."""
    import meshio

    m = meshio.read(path)
    faces = next(c.data for c in m.cells if c.type == "triangle")
    return Mesh(np.asarray(m.points, dtype=np.float32), np.asarray(faces, dtype=np.int32),
                {k: np.asarray(v) for k, v in m.point_data.items()})

