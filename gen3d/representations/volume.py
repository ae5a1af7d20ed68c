"""`volume`: a NeRF (hash-grid field, gen3d.geometry.implicit) rendered by the volume renderer."""

from __future__ import annotations

from gen3d.geometry.implicit import ImplicitVolume
from gen3d.render.volume import VolumeRenderer, depth_variance
from gen3d.representations import Representation, register


class VolumeRepresentation(Representation):
    can_start = True
    renders_latents = True

    def build(self, cfg, background, latent_channels=None):
        return VolumeRenderer(cfg.renderer, ImplicitVolume(cfg.geometry, latent_channels), background)

    def samples_per_pixel(self, cfg):
        return cfg.renderer.num_samples_per_ray

    def regularisers(self, scene, out):
        opacity = out["opacity"].clamp(1e-5, 1 - 1e-5)
        terms = {
            "sparsity": opacity.mean(),
            "opaque": -(opacity * opacity.log() + (1 - opacity) * (1 - opacity).log()).mean(),
        }
        if "orient_loss" in out:
            terms["orient"] = out["orient_loss"]
        if "weights" in out:
            terms["z_variance"] = depth_variance(out)
        return terms

    def export(self, scene, albedo_fn, out_dir, cfg, device):
        from gen3d.export import export_mesh  # trimesh, xatlas: on export only

        geo = scene.geometry
        return export_mesh(
            lambda p: geo.density(p.to(device)).float().cpu(), albedo_fn, out_dir, cfg.export, radius=geo.cfg.radius
        )


register("volume", VolumeRepresentation())
