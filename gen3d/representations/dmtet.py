"""`dmtet`: a tetrahedral SDF grid (gen3d.geometry.dmtet), its level set rasterised like a mesh.

A mesh stage whose surface may change topology: the real Magic3D refine stage's representation
(threestudio's `tetrahedra-sdf-grid`). Like `mesh` it cannot start a method: it starts from a previous
stage's field (a NeRF volume's density at the mesh stage's level, an SDF's zero level set) through a cleaned
occupancy and its distance transform, and takes that field's weights as its texture field. It has the mesh
stage's terms (`loss.normal_consistency`, `loss.laplacian`, `loss.albedo_smooth` at
`mesh.albedo_smooth_points`) on the extracted surface, and `parts.dmtet` settings (DMTetSettings). A `mesh`
stage after it starts from its surface.
"""

from __future__ import annotations

from gen3d.errors import UserError
from gen3d.geometry.dmtet import DMTetGeometry, DMTetSettings
from gen3d.render.mesh_renderer import MeshRenderer
from gen3d.representations import register
from gen3d.representations.mesh import MeshRepresentation


class DMTetRepresentation(MeshRepresentation):
    config = DMTetSettings

    def resolution(self, cfg) -> int:
        return self.settings(cfg).resolution or cfg.mesh.resolution

    def build(self, cfg, background, latent_channels=None):
        geo = DMTetGeometry(self.settings(cfg), self.resolution(cfg), cfg.geometry.radius, cfg.mesh, cfg.geometry)
        return MeshRenderer(cfg.mesh_renderer, geo, background)

    def from_previous(self, scene, previous, cfg):
        field = previous.geometry
        if isinstance(field, DMTetGeometry):
            scene.geometry.load_state_dict(field.state_dict())
            return
        if not hasattr(field, "density"):
            raise UserError("a dmtet stage starts from a field (a volume or sdf stage), not from a mesh stage")
        level = getattr(field, "surface_density", None)  # an SDF's zero level set; else the mesh stage's level
        device = next(field.parameters()).device
        geo = DMTetGeometry.from_field(
            field.density,
            cfg.mesh.threshold if level is None else level(),
            self.settings(cfg),
            self.resolution(cfg),
            field.cfg.radius,
            cfg.mesh,
            field.cfg,
            device,
        )
        geo.texture.load_state_dict(field.state_dict())
        scene.geometry = geo

    def parameter_groups(self, scene, cfg):
        geo, s, groups = scene.geometry, self.settings(cfg), []
        if cfg.train_geometry:
            groups.append({"params": [geo.sdf], "lr": s.lr_sdf})
            groups.append({"params": [geo.deformation], "lr": s.lr_deform})
        if cfg.train_texture:
            groups.append({"params": list(geo.texture.parameters()), "lr": cfg.optimizer.lr})
        return groups


register("dmtet", DMTetRepresentation())
