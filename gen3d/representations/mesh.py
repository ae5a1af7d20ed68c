"""`mesh`: a triangle mesh with vertex offsets and a texture field (gen3d.geometry.mesh), rasterised.

It cannot start a method: it starts from the previous stage's particle, the isosurface of any
geometry with a `density` field (a NeRF volume; an SDF's zero level set, at its `surface_density()`), the
current surface of a `dmtet` stage, or a copy of a previous mesh stage's mesh."""

from __future__ import annotations

import torch

from gen3d.geometry.mesh import MeshGeometry
from gen3d.render.mesh_renderer import MeshRenderer
from gen3d.representations import Representation, register


class MeshRepresentation(Representation):
    can_start = False
    renders_latents = False

    def build(self, cfg, background, latent_channels=None):
        # empty until from_previous or a checkpoint fills it; the texture field has the NeRF's architecture
        return MeshRenderer(cfg.mesh_renderer, MeshGeometry(cfg.mesh, texture=cfg.geometry), background)

    def from_previous(self, scene, previous, cfg):
        if hasattr(previous.geometry, "density"):  # a field: its isosurface, its weights as the texture
            level = getattr(previous.geometry, "surface_density", None)  # a surface field's (an SDF's) level
            kwargs = {} if level is None else {"threshold": level()}
            scene.geometry = MeshGeometry.from_implicit(previous.geometry, cfg.mesh, **kwargs)
        elif not isinstance(previous.geometry, MeshGeometry):  # another surface (dmtet): its current mesh
            mesh, texture = previous.geometry.to_trimesh(), previous.geometry.texture
            device = next(texture.parameters()).device
            scene.geometry = MeshGeometry(cfg.mesh, mesh.vertices, mesh.faces, texture.cfg).to(device)
            scene.geometry.texture.load_state_dict(texture.state_dict())
        else:
            super().from_previous(scene, previous, cfg)

    def regularisers(self, scene, out):
        geo = scene.geometry
        terms = {"normal_consistency": geo.normal_consistency(), "laplacian": geo.laplacian_smoothing()}
        if geo.cfg.albedo_smooth_points > 0 and torch.is_grad_enabled():
            terms["albedo_smooth"] = geo.albedo_smoothness(geo.cfg.albedo_smooth_points, geo.cfg.albedo_smooth_jitter)
        return terms

    def parameter_groups(self, scene, cfg):
        geo, groups = scene.geometry, []
        if cfg.train_geometry and geo.offsets.numel():
            groups.append({"params": [geo.offsets], "lr": cfg.optimizer.lr_offsets})
        if cfg.train_texture:
            groups.append({"params": list(geo.texture.parameters()), "lr": cfg.optimizer.lr})
        return groups

    def export(self, scene, albedo_fn, out_dir, cfg, device):
        from gen3d.export import export_trimesh  # trimesh, xatlas: on export only

        return export_trimesh(scene.geometry.to_trimesh(), albedo_fn, out_dir, cfg.export)


register("mesh", MeshRepresentation())
