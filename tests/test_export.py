"""Tests of the mesh exporter (gen3d/export) and the atomic file helper."""

from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from gen3d.export import ExportConfig, auto_threshold, export_mesh, export_trimesh, extract_mesh
from gen3d.export.bake import pad_texture, rasterize_uv
from gen3d.utils.atomic import atomic_path, write_text_atomic

torch.set_num_threads(1)
RES = 40
STEP = 2.0 / (RES - 1)


def sphere_sdf(center=(0.0, 0.0, 0.0), radius=0.5):
    c = torch.tensor(center)
    return lambda p: radius - (p - c).norm(dim=-1)


def octant_albedo(p: torch.Tensor) -> torch.Tensor:
    """Red where x > 0, green where y > 0, blue where z > 0: catches u/v flips and swaps."""
    return (p > 0).float()


def extract(density_fn, threshold="auto", min_fraction=0.05, res=RES):
    """The raw isosurface (no occupancy clean-up: tests/test_export_quality.py covers that)."""
    return extract_mesh(density_fn, 1.0, res, threshold, 4096, min_fraction, close_radius=0, smooth_sigma=0.0)


# ---------------------------------------------------------------- atomic writes


def test_atomic_write_and_failure_leaves_target_untouched(tmp_path: Path):
    target = tmp_path / "sub" / "a.txt"
    write_text_atomic(target, "first")
    assert target.read_text() == "first"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half written")
            assert tmp.parent == target.parent and tmp != target
            raise RuntimeError("boom")
    assert target.read_text() == "first"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.txt"]


# ---------------------------------------------------------------- extraction


def test_sphere_vertices_at_radius_and_normals_outward():
    mesh, level = extract(sphere_sdf(radius=0.5), threshold=0.0)
    assert level == 0.0 and len(mesh.faces) > 500
    radii = np.linalg.norm(mesh.vertices, axis=1)
    assert np.abs(radii - 0.5).max() < 0.5 * STEP
    assert mesh.is_watertight and mesh.volume > 0
    outward = np.einsum("ij,ij->i", mesh.face_normals, mesh.triangles_center)
    assert (outward > 0).all()


def test_offcentre_sphere_world_coordinates():
    mesh, _ = extract(sphere_sdf(center=(0.3, -0.2, 0.1), radius=0.3), threshold=0.0)
    assert np.allclose(mesh.vertices.mean(axis=0), [0.3, -0.2, 0.1], atol=0.25 * STEP)


def test_object_touching_the_box_is_closed():
    mesh, _ = extract(lambda p: 1.0 - p[:, 1], threshold=0.5)  # occupied for y < 0.5
    assert mesh.is_watertight
    assert np.isclose(mesh.vertices[:, 1].min(), -1.0) and np.isclose(mesh.vertices[:, 1].max(), 0.5, atol=1e-4)


def test_floaters_removed():
    main, tiny = sphere_sdf(radius=0.5), sphere_sdf(center=(0.75, 0.75, 0.75), radius=0.1)

    def field(p):
        return torch.maximum(main(p), tiny(p))

    kept, _ = extract(field, threshold=0.0, min_fraction=0.05)
    both, _ = extract(field, threshold=0.0, min_fraction=0.0)
    assert len(both.split(only_watertight=False)) == 2
    assert len(kept.split(only_watertight=False)) == 1
    assert np.linalg.norm(kept.vertices, axis=1).max() < 0.5 + STEP


def test_auto_threshold_sharp_surface():
    mesh, level = extract(lambda p: 100.0 * (p.norm(dim=-1) < 0.5).float())
    assert 0.0 < level < 100.0
    radii = np.linalg.norm(mesh.vertices, axis=1)
    assert np.abs(radii - 0.5).max() < 1.5 * STEP


def test_auto_threshold_soft_blob_with_background_noise():
    gen = torch.Generator().manual_seed(0)

    def field(p):
        noise = 0.05 * torch.rand(p.shape[0], generator=gen)
        return 5.0 * torch.exp(-p.square().sum(-1) / (2 * 0.25**2)) + noise

    mesh, level = extract(field)
    assert 0.05 < level < 5.0
    radii = np.linalg.norm(mesh.vertices, axis=1)
    assert 0.1 < radii.min() and radii.max() < 0.8 and radii.std() < STEP


def test_auto_threshold_tiny_occupied_region_not_empty():
    d = np.zeros((32, 32, 32))
    d[10, 11, 12] = 1e-3
    level = auto_threshold(d)
    assert 0.0 < level < 1e-3


def test_empty_field_raises():
    with pytest.raises(ValueError, match="empty"):
        extract(lambda p: torch.zeros(p.shape[0]))
    with pytest.raises(ValueError, match="threshold 50"):
        extract(sphere_sdf(), threshold=50.0)


# ---------------------------------------------------------------- bake


def test_rasterize_covers_triangle_and_padding_fills_neighbours():
    uv = np.array([[0.1, 0.1], [0.9, 0.1], [0.1, 0.9]], dtype=np.float32)
    tri_id, bary = rasterize_uv(uv, np.array([[0, 1, 2]]), 32)
    assert (tri_id == 0).mean() > 0.3 and np.allclose(bary[tri_id == 0].sum(-1), 1.0)
    # the top-right texel (row 0 = v near 1) is outside, one near the bottom-left inside
    assert tri_id[0, 31] == -1 and tri_id[31 - 4, 4] == 0
    mask = tri_id == 0
    img = np.zeros((32, 32, 3), np.float32)
    img[mask] = np.random.default_rng(0).uniform(0.1, 1.0, size=(mask.sum(), 3))
    padded = pad_texture(img, mask, padding=2)
    assert np.array_equal(padded[mask], img[mask])
    # left edge at col 0.1 * 32 - 0.5 = 2.7: col 2 is within the conservative half-diagonal,
    # col 1 is not and takes the colour of its nearest baked texel
    assert tri_id[16, 2] == 0 and tri_id[16, 1] == -1
    assert np.array_equal(padded[16, 1], img[16, 2])
    # far from the triangle: the mean baked colour, never black
    assert np.allclose(padded[0, 31], img[mask].mean(axis=0))


# ---------------------------------------------------------------- files


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    cfg = ExportConfig(resolution=RES, texture_size=128, chunk_size=8192)
    density = lambda p: 20.0 * torch.sigmoid(40.0 * (0.6 - p.norm(dim=-1)))  # noqa: E731
    return export_mesh(density, octant_albedo, out, cfg), cfg


def sample_texture_at_vertices(mesh: trimesh.Trimesh) -> np.ndarray:
    """Nearest texel at each vertex UV (OBJ convention: v up), [V, 3] in [0, 1]."""
    mat = mesh.visual.material
    image = getattr(mat, "image", None) or mat.baseColorTexture
    img = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    h, w = img.shape[:2]
    uv = mesh.visual.uv
    col = np.clip(np.round(uv[:, 0] * w - 0.5), 0, w - 1).astype(int)
    row = np.clip(np.round((1.0 - uv[:, 1]) * h - 0.5), 0, h - 1).astype(int)
    return img[row, col]


def test_export_returns_paths_and_stats(exported):
    result, _ = exported
    for key in ("obj", "mtl", "texture", "glb"):
        assert result[key].is_file() and result[key].stat().st_size > 0
    assert result["n_faces"] > 500 and result["n_vertices"] > 250
    assert 0.0 < result["threshold"] < 20.0
    assert result["n_uv_vertices"] >= result["n_vertices"]
    assert not [p for p in result["obj"].parent.iterdir() if ".tmp" in p.name]
    assert "map_Kd model.png" in result["mtl"].read_text()


def test_obj_keeps_geometry_unsplit(exported):
    result, _ = exported
    lines = result["obj"].read_text().splitlines()
    count = lambda tag: sum(1 for line in lines if line.startswith(tag + " "))  # noqa: E731
    assert count("v") == count("vn") == result["n_vertices"]
    assert count("vt") == result["n_uv_vertices"] and count("f") == result["n_faces"]


@pytest.mark.parametrize("fmt", ["obj", "glb"])
def test_reload_has_texture_in_right_orientation(exported, fmt):
    result, cfg = exported
    mesh = trimesh.load(result[fmt], force="mesh")
    assert mesh.visual.uv is not None and len(mesh.visual.uv) == len(mesh.vertices)
    mat = mesh.visual.material
    image = getattr(mat, "image", None) or mat.baseColorTexture
    assert image.size == (cfg.texture_size, cfg.texture_size)
    colors = sample_texture_at_vertices(mesh)
    away = (np.abs(mesh.vertices) > 0.04).all(axis=1)  # away from the colour boundaries
    assert away.sum() > 100
    expected = (mesh.vertices[away] > 0).astype(np.float32)
    assert np.abs(colors[away] - expected).max() < 0.02
    # same Y-up frame as the field: the top of the sphere is at +y
    assert np.isclose(mesh.vertices[:, 1].max(), 0.6, atol=STEP)


def test_export_trimesh_existing_mesh(tmp_path: Path):
    mesh = trimesh.creation.icosphere(subdivisions=3, radius=0.7)
    cfg = ExportConfig(texture_size=64, write_obj=False)
    result = export_trimesh(mesh, lambda p: torch.full_like(p, 0.25), tmp_path, cfg, name="ico")
    assert set(result) >= {"glb", "texture"} and "obj" not in result
    assert result["n_vertices"] == len(mesh.vertices) and result["n_faces"] == len(mesh.faces)
    reloaded = trimesh.load(result["glb"], force="mesh")
    assert np.abs(sample_texture_at_vertices(reloaded) - 64 / 255).max() < 1e-6
