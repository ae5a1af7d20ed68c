"""Topology clean-up of the occupancy before marching cubes (gen3d/export/grid_clean.py) and its use by the
mesh stages' starting surface (MeshGeometry.from_field)."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from gen3d.errors import UserError
from gen3d.export import extract as ex
from gen3d.export.grid_clean import clean_occupancy, signed_field, surface_euler
from gen3d.geometry.mesh import MeshGeometry, MeshGeometryConfig
from gen3d.quality import topology

torch.set_num_threads(1)
RES = 48
AXIS = np.linspace(-1, 1, RES)
X, Y, Z = np.meshgrid(AXIS, AXIS, AXIS, indexing="ij")
VOXEL = 2 / (RES - 1)


def torus(hole_radius=0.45, tube=0.25):
    """Solid torus in the XZ plane: hole of diameter 2 * (hole_radius - tube), tens of voxels wide."""
    return np.hypot(np.hypot(X, Z) - hole_radius, Y) < tube


def with_tunnel(solid, width_voxels=2.0):
    """A narrow straight tunnel along y through the torus' tube (at x = 0.45): one more handle."""
    return solid & ~(np.hypot(X - 0.45, Z) < 0.5 * width_voxels * VOXEL)


def genus(solid) -> int:
    return 1 - surface_euler(solid) // 2  # one closed surface


def test_surface_euler_counts_handles():
    assert surface_euler(np.hypot(np.hypot(X, Y), Z) < 0.5) == 2
    assert surface_euler(torus()) == 0
    assert surface_euler(with_tunnel(torus())) == -2


def test_narrow_tunnel_is_plugged_and_the_torus_hole_kept():
    solid = with_tunnel(torus())
    assert genus(clean_occupancy(solid, 0)) == 2
    assert genus(clean_occupancy(solid, 0, 3)) == 1
    cleaned = clean_occupancy(solid, 2, 3)
    assert genus(cleaned) == 1
    # the shape changes at the tunnel only: the hole (0.4 wide, 19 voxels) is still empty
    assert (cleaned ^ torus()).sum() <= (solid ^ torus()).sum() and not cleaned[RES // 2, RES // 2, RES // 2]


def test_dents_are_filled_up_to_close_radius_only():
    """A closing fills a narrow slot in the surface; the clean-up does so up to ``close_radius``, and
    beyond it (``plug_radius``) adds only pieces that lower the genus."""
    box = (np.abs(X) < 0.5) & (np.abs(Y) < 0.5) & (np.abs(Z) < 0.5)
    slot = (np.abs(X) < 1.1 * VOXEL) & (Y > 0.2)  # two voxels wide, from the top face down to y = 0.2
    solid = box & ~slot
    assert ndimage.binary_closing(np.pad(solid, 4), np.ones((5, 5, 5)))[4:-4, 4:-4, 4:-4].sum() > solid.sum()
    assert np.array_equal(clean_occupancy(solid, 0, 3), solid)
    filled = clean_occupancy(solid, 2, 0)
    assert filled.sum() > solid.sum() and genus(filled) == 0


def test_a_gap_is_not_bridged_into_a_new_handle():
    """A torus cut across its tube by a two-voxel gap is genus 0; a plain closing bridges the gap (genus 1),
    the clean-up leaves it open."""
    split = torus() & ~((np.abs(Z) < 1.1 * VOXEL) & (X > 0))
    assert genus(split) == 0
    closed = ndimage.binary_closing(np.pad(split, 4), structure=np.ones((5, 5, 5)))[4:-4, 4:-4, 4:-4]
    assert genus(closed) == 1
    assert genus(clean_occupancy(split, 2, 3)) == 0


def test_signed_field_has_the_cleaned_occupancys_sign_and_topology():
    density = with_tunnel(torus()).astype(np.float64) * 10.0
    field = signed_field(density, 1.0, 2, 1.0, 3)
    log = np.clip(np.log1p(density) - np.log1p(1.0), -2.0, 2.0)
    assert np.array_equal(field > 0, clean_occupancy(ndimage.gaussian_filter(log, 1.0, mode="nearest") > 0, 2, 3))
    t = topology(ex.marching_cubes(field, 0.0, 1.0))
    assert (t["components"], t["watertight"], t["genus"]) == (1, True, 1)


def tunnelled_torus_density(p: torch.Tensor) -> torch.Tensor:
    rxz = p[:, [0, 2]].norm(dim=-1)
    solid = ((rxz - 0.45).square() + p[:, 1].square()).sqrt() < 0.25
    tunnel = ((p[:, 0] - 0.45).square() + p[:, 2].square()).sqrt() < VOXEL
    return (solid & ~tunnel).float() * 10.0


@pytest.mark.parametrize("clean, expected", [({}, 1), ({"close_radius": 0, "plug_radius": 0, "smooth_sigma": 0.0}, 2)])
def test_mesh_stage_starts_from_the_cleaned_surface(clean, expected):
    cfg = MeshGeometryConfig(resolution=RES, threshold=1.0, min_component_fraction=0.0, smooth_iterations=0, **clean)
    geo = MeshGeometry.from_field(tunnelled_torus_density, cfg)
    assert topology(geo.to_trimesh())["genus"] == expected


def test_mesh_plug_radius_is_range_checked():
    from gen3d.config import build_config
    from gen3d.systems.config import Text3DConfig

    with pytest.raises(UserError, match="mesh.plug_radius"):
        build_config(Text3DConfig, {"mesh": {"plug_radius": -1}})
    with pytest.raises(UserError, match="export.plug_radius"):
        build_config(Text3DConfig, {"export": {"plug_radius": -1}})
