"""`sdf`: a signed-distance field with a VolSDF density (gen3d.geometry.sdf), rendered by the volume renderer.

Same hash grid, MLP and renderer as `volume`; the field is a surface: it starts as a sphere
(`parts.sdf.sphere_radius`), its density comes from the SDF with a scheduled sharpness
(`parts.sdf.beta`), an eikonal term keeps it a distance (weight `loss.other.eikonal`), an optional
normal-smoothness term (`parts.sdf.normal_smooth_points`, weight `loss.other.normal_smooth`), and the export
and a following `mesh` stage take its zero level set."""

from __future__ import annotations

import torch

from gen3d.geometry.sdf import SDFField, SDFSettings, eikonal_points
from gen3d.render.volume import VolumeRenderer
from gen3d.representations import register
from gen3d.representations.volume import VolumeRepresentation


class SDFRenderer(VolumeRenderer):
    """The volume renderer around an SDFField; keeps the training step in a buffer (checkpointed) so the
    field's beta and active levels are the trained ones after a resume or a reload for export."""

    def __init__(self, cfg, geometry: SDFField, background, settings: SDFSettings):
        super().__init__(cfg, geometry, background)
        self.settings = settings
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update_step(self, step: int) -> None:
        self.step.fill_(step)
        self.geometry.set_step(step)
        super().update_step(step)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.geometry.set_step(int(self.step))


class SDFRepresentation(VolumeRepresentation):
    can_start = True
    renders_latents = True
    config = SDFSettings

    def build(self, cfg, background, latent_channels=None):
        settings = self.settings(cfg)
        return SDFRenderer(cfg.renderer, SDFField(cfg.geometry, settings, latent_channels), background, settings)

    def regularisers(self, scene, out):
        terms = super().regularisers(scene, out)
        s, geo = scene.settings, scene.geometry
        if not torch.is_grad_enabled():
            return terms
        if s.eikonal_points > 0:
            terms["eikonal"] = geo.eikonal(eikonal_points(geo, out.get("points"), s.eikonal_points))
        if s.normal_smooth_points > 0:
            pts = eikonal_points(geo, out.get("points"), s.normal_smooth_points)
            terms["normal_smooth"] = geo.normal_smoothness(pts, s.normal_smooth_jitter)
        return terms

    def export(self, scene, albedo_fn, out_dir, cfg, device):
        """Marching cubes of the zero level set (export.threshold does not apply), baked through the density."""
        from gen3d.export import export_trimesh, extract_mesh  # trimesh, xatlas: on export only

        geo, e = scene.geometry, cfg.export
        mesh, _ = extract_mesh(
            lambda p: -geo.sdf(p.to(device)).float().cpu(),
            geo.cfg.radius,
            e.resolution,
            0.0,
            e.chunk_size,
            e.min_component_fraction,
            None,
            e.close_radius,
            e.smooth_sigma,
            e.plug_radius,
        )
        stats = export_trimesh(
            mesh, albedo_fn, out_dir, e, density_fn=lambda p: geo.density(p.to(device)).float().cpu()
        )
        return {**stats, "threshold": 0.0}


register("sdf", SDFRepresentation())
