"""Render exported GLBs in Blender under real lighting, from several views, into one PNG strip each.

    python bench/render_blender.py RUN_DIR_OR_GLB [...] [--out docs/images] [--prefix blender-]
                                   [--size 256] [--views 4] [--samples 32]

For each GLB (a run folder means its export/model.glb; the image is named after the run:
<prefix><method>-<prompt-slug>.png) Blender (headless, Cycles on the CPU) imports it as a user would,
lights it with a key sun, a fill area light and a grey world, puts it on a ground plane at its
lowest point, and renders `--views` cameras around it (elevation 20 degrees, azimuths spread from
the front, +Z in our frame); the views are laid side by side. Needs `blender` on PATH (Debian's
3.4: scripts/setup.sh). The same file runs inside Blender (`blender -b --python THIS -- ...`).
"""

from __future__ import annotations

import math
import sys


def in_blender() -> None:
    import numpy as np

    np.bool = bool  # Blender 3.4's glTF importer uses np.bool, removed in NumPy 2
    import bpy
    from mathutils import Vector

    argv = sys.argv[sys.argv.index("--") + 1 :]
    glb, out_prefix, size, views, samples = argv[0], argv[1], int(argv[2]), int(argv[3]), int(argv[4])
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.import_scene.gltf(filepath=glb)
    objs = [o for o in bpy.context.scene.objects if o.type == "MESH"]
    corners = [o.matrix_world @ Vector(c) for o in objs for c in o.bound_box]
    lo = Vector([min(c[i] for c in corners) for i in range(3)])
    hi = Vector([max(c[i] for c in corners) for i in range(3)])
    centre, extent = (lo + hi) / 2, max(hi - lo)
    for o in objs:
        for p in o.data.polygons:
            p.use_smooth = True  # shade smooth, as an artist would look at it (vertex normals)
    bpy.ops.mesh.primitive_plane_add(size=extent * 20, location=(centre.x, centre.y, lo.z))
    ground = bpy.context.object
    mat = bpy.data.materials.new("ground")
    mat.use_nodes = True
    mat.node_tree.nodes["Principled BSDF"].inputs["Base Color"].default_value = (0.8, 0.8, 0.8, 1)
    ground.data.materials.append(mat)

    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_denoising = False  # Debian's build has no OpenImageDenoise
    scene.render.resolution_x = scene.render.resolution_y = size
    scene.render.film_transparent = False
    scene.view_settings.view_transform = "Standard"  # the albedo as baked, not Filmic's flattened tones
    world = bpy.data.worlds.new("world")
    world.use_nodes = True
    world.node_tree.nodes["Background"].inputs["Color"].default_value = (0.35, 0.37, 0.4, 1)
    world.node_tree.nodes["Background"].inputs["Strength"].default_value = 0.6
    scene.world = world
    sun = bpy.data.objects.new("sun", bpy.data.lights.new("sun", "SUN"))
    sun.data.energy = 3.0
    sun.data.angle = math.radians(8)
    sun.rotation_euler = (math.radians(50), 0, math.radians(35))
    scene.collection.objects.link(sun)
    fill = bpy.data.objects.new("fill", bpy.data.lights.new("fill", "AREA"))
    fill.data.energy, fill.data.size = 150.0 * extent**2, 3.0 * extent
    fill.location = centre + Vector((-2.5, -2.0, 1.5)) * extent
    fill.rotation_euler = (Vector((0, 0, 0)) - fill.location + centre).to_track_quat("-Z", "Y").to_euler()
    scene.collection.objects.link(fill)

    cam = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
    cam.data.lens = 50
    scene.collection.objects.link(cam)
    scene.camera = cam
    distance, elevation = 2.6 * extent, math.radians(20)
    for k in range(views):
        # our front (+Z, Y-up) is Blender's -Y (Z-up): azimuth 0 looks from -Y
        az = 2 * math.pi * k / views
        offset = Vector((math.sin(az), -math.cos(az), 0)) * math.cos(elevation) + Vector((0, 0, math.sin(elevation)))
        cam.location = centre + offset * distance
        cam.rotation_euler = (centre - cam.location).to_track_quat("-Z", "Y").to_euler()
        scene.render.filepath = f"{out_prefix}{k}.png"
        bpy.ops.render.render(write_still=True)


def main() -> None:
    import argparse
    import os
    import shutil
    import subprocess
    import tempfile
    from pathlib import Path

    import imageio.v3 as iio
    import numpy as np

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("inputs", nargs="+", help="run folders (with export/model.glb) or GLB files")
    p.add_argument("--out", default="docs/images")
    p.add_argument("--prefix", default="blender-")
    p.add_argument("--size", type=int, default=256, help="pixels per view (square)")
    p.add_argument("--views", type=int, default=4)
    p.add_argument("--samples", type=int, default=32, help="Cycles samples per pixel")
    a = p.parse_args()
    blender = shutil.which("blender")
    if blender is None:
        sys.exit("error: blender is not on PATH (scripts/setup.sh installs Debian's)")
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(blender).resolve().parent), os.environ["PATH"]]))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for item in map(Path, a.inputs):
        glb = item / "export" / "model.glb" if item.is_dir() else item
        if not glb.is_file():
            sys.exit(f"error: no GLB at {glb}")
        name = f"{item.parent.name}-{item.name}" if item.is_dir() else glb.stem
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [blender, "-b", "--factory-startup", "--python-exit-code", "1", "--python", __file__, "--"]
            cmd += [str(glb), f"{tmp}/view", str(a.size), str(a.views), str(a.samples)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                sys.exit(f"error: blender failed on {glb}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
            strip = np.concatenate([iio.imread(f"{tmp}/view{k}.png")[..., :3] for k in range(a.views)], axis=1)
        target = out / f"{a.prefix}{name}.png"
        iio.imwrite(target, strip)
        print(f"{target}: {a.views} views of {glb}", flush=True)


if __name__ == "__main__":
    try:
        import bpy  # noqa: F401  (only inside Blender)
    except ImportError:
        main()
    else:
        in_blender()
