"""Import an OBJ or GLB into an empty Blender scene and report what Blender sees.

Run inside Blender (not by pytest):

    blender -b --factory-startup --python tests/blender_import.py -- <model.obj|glb> <out.json>

Writes JSON with:
    n_vertices        vertices of all imported mesh objects (Blender's own count),
    n_vertices_merged the same after merging vertices closer than MERGE_DISTANCE,
    n_faces           polygons,
    has_texture       a material has an Image Texture node with an image of nonzero size,
    image_size        [w, h] of that image,
    samples           up to 4000 face corners: {"position": world [x, y, z] (Blender Z-up),
                      "color": [r, g, b] of the image at the corner's UV (nearest texel)}.
"""

import json
import sys

import numpy as np

np.bool = bool  # Blender 3.4's glTF importer uses np.bool, removed in NumPy 2

import bmesh  # noqa: E402
import bpy  # noqa: E402

MERGE_DISTANCE = 1e-5  # Blender's "Merge by Distance" on a copy of the imported mesh


def import_file(path: str) -> None:
    bpy.ops.object.select_all(action="SELECT")
    bpy.ops.object.delete()
    if path.lower().endswith(".obj"):
        if hasattr(bpy.ops.wm, "obj_import"):
            bpy.ops.wm.obj_import(filepath=path)  # defaults: forward -Z, up Y
        else:
            bpy.ops.import_scene.obj(filepath=path)
    elif path.lower().endswith((".glb", ".gltf")):
        bpy.ops.import_scene.gltf(filepath=path)
    else:
        raise ValueError(f"unsupported file: {path}")


def merged_vertex_count(obj) -> int:
    bm = bmesh.new()
    bm.from_mesh(obj.data)
    bmesh.ops.remove_doubles(bm, verts=bm.verts, dist=MERGE_DISTANCE)
    count = len(bm.verts)
    bm.free()
    return count


def find_image(obj):
    for slot in obj.material_slots:
        mat = slot.material
        if mat is None or not mat.use_nodes:
            continue
        for node in mat.node_tree.nodes:
            if node.type == "TEX_IMAGE" and node.image is not None and node.image.size[0] > 0:
                return node.image
    return None


def sample_corners(obj, image, n_max: int = 4000):
    """World position and nearest-texel colour at the UV of up to ``n_max`` face corners."""
    mesh = obj.data
    uv_layer = mesh.uv_layers.active
    if uv_layer is None:
        return []
    w, h = image.size
    pixels = np.empty(w * h * 4, dtype=np.float32)
    image.pixels.foreach_get(pixels)
    pixels = pixels.reshape(h, w, 4)  # row 0 = bottom of the image (v = 0) in Blender
    n_loops = len(mesh.loops)
    uv = np.empty(n_loops * 2, dtype=np.float32)
    uv_layer.data.foreach_get("uv", uv)
    uv = uv.reshape(-1, 2)
    vidx = np.empty(n_loops, dtype=np.int64)
    mesh.loops.foreach_get("vertex_index", vidx)
    co = np.empty(len(mesh.vertices) * 3, dtype=np.float32)
    mesh.vertices.foreach_get("co", co)
    co = co.reshape(-1, 3)
    mat = np.array(obj.matrix_world)
    world = co @ mat[:3, :3].T + mat[:3, 3]
    pick = np.linspace(0, n_loops - 1, min(n_max, n_loops)).astype(np.int64)
    col = np.clip(np.round(uv[pick, 0] * w - 0.5), 0, w - 1).astype(np.int64)
    row = np.clip(np.round(uv[pick, 1] * h - 0.5), 0, h - 1).astype(np.int64)
    colors = pixels[row, col, :3]
    return [{"position": world[v].tolist(), "color": c.tolist()} for v, c in zip(vidx[pick], colors)]


def main() -> None:
    argv = sys.argv[sys.argv.index("--") + 1 :]
    path, out = argv[0], argv[1]
    import_file(path)
    meshes = [o for o in bpy.context.scene.objects if o.type == "MESH"]
    report = {
        "n_objects": len(meshes),
        "n_vertices": sum(len(o.data.vertices) for o in meshes),
        "n_vertices_merged": sum(merged_vertex_count(o) for o in meshes),
        "n_faces": sum(len(o.data.polygons) for o in meshes),
        "has_texture": False,
        "image_size": [0, 0],
        "samples": [],
    }
    for obj in meshes:
        image = find_image(obj)
        if image is not None:
            report.update(has_texture=True, image_size=list(image.size))
            report["samples"] += sample_corners(obj, image)
    with open(out, "w") as f:
        json.dump(report, f)


main()
