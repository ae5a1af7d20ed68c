"""Mesh renderer: cameras -> clip-space vertices -> rasterize -> texture field -> shading.

Same output contract as `VolumeRenderer.forward`: comp_rgb, comp_rgb_fg, comp_rgb_bg
[B,H,W,3], opacity [B,H,W,1], depth [B,H,W,1] (distance camera -> surface along the ray,
times opacity), comp_normal [B,H,W,3] (world-space unit normals times opacity). Shading modes
albedo / lambertian / textureless (gen3d.render.shading) and `normal` (world normals shown as
colours (n + 1) / 2, for SDS on normal renders). Silhouettes are antialiased so the opacity and
colours get gradients w.r.t. the vertex positions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from gen3d.config import ranged
from gen3d.geometry.mesh import vertex_normals
from gen3d.render.cameras import Cameras, get_rays, projection_matrix
from gen3d.render.rasterize import antialias, interpolate, rasterize
from gen3d.render.shading import SHADING_MODES, ShadingConfig, ambient_level, shade

MESH_SHADING_MODES = SHADING_MODES + ("normal",)


@dataclass
class MeshRendererConfig:
    backend: str = ranged(
        "auto", choices=("auto", "torch", "nvdiffrast")
    )  # auto (nvdiffrast on CUDA when importable) | torch | nvdiffrast
    antialias: bool = True  # blend across silhouettes (gives silhouette gradients)
    near: float = ranged(0.1, gt=0)
    far: float = ranged(100.0, gt=0)
    shading: ShadingConfig = field(default_factory=ShadingConfig)


def world_to_clip(verts: torch.Tensor, cameras: Cameras, near: float, far: float) -> torch.Tensor:
    """World vertices [V,3] -> clip-space [B,V,4] (OpenGL projection of each camera)."""
    mvp = projection_matrix(cameras, near, far) @ torch.linalg.inv(cameras.c2w)  # [B,4,4]
    homo = torch.cat([verts, torch.ones_like(verts[:, :1])], dim=-1)
    return torch.einsum("bij,vj->bvi", mvp.to(verts), homo)


class MeshRenderer(nn.Module):
    """forward(cameras, shading) -> dict of images [B,H,W,C] (see the module docstring)."""

    def __init__(self, cfg: MeshRendererConfig, geometry: nn.Module, background: nn.Module):
        super().__init__()
        self.cfg = cfg
        self.geometry = geometry
        self.background = background

    def update_step(self, step: int) -> None:
        """A new training step: the geometry drops what it cached for the last one (if it caches)."""
        update = getattr(self.geometry, "update_step", None)
        if update is not None:
            update(step)

    def forward(
        self, cameras: Cameras, shading: str = "albedo", with_normal: bool | None = None
    ) -> dict[str, torch.Tensor]:
        """Render a batch of cameras (normals are always computed; with_normal is accepted for
        VolumeRenderer compatibility). Also returns face_id [B,H,W] (-1 = background)."""
        if shading not in MESH_SHADING_MODES:
            raise ValueError(f"unknown shading mode {shading!r} (use one of {MESH_SHADING_MODES})")
        c, geo = self.cfg, self.geometry
        B, H, W = len(cameras), cameras.height, cameras.width
        verts, faces = geo.surface()  # a TexturedSurface (gen3d.geometry.mesh)
        clip = world_to_clip(verts, cameras, c.near, c.far)
        rast = rasterize(clip, faces, H, W, c.backend)
        normal = F.normalize(
            interpolate(vertex_normals(verts, faces), rast.face_id, rast.bary, faces), dim=-1, eps=1e-12
        )
        points = interpolate(verts, rast.face_id, rast.bary, faces)  # [B,H,W,3] world
        mask = (rast.face_id >= 0)[..., None]

        # texture and shading on the covered pixels only
        sel = mask.reshape(-1).nonzero()[:, 0]
        pts, nrm = points.reshape(-1, 3)[sel], normal.reshape(-1, 3)[sel]
        if shading == "normal":
            rgb = 0.5 * (nrm + 1.0)
        else:
            albedo = geo.albedo(pts) if shading != "textureless" else torch.ones_like(pts)
            light = cameras.light_position.to(pts)[sel // (H * W)]
            ambient = ambient_level(c.shading) if self.training else c.shading.ambient
            rgb = shade(shading, albedo, nrm, pts, light, ambient)
        fg = points.new_zeros(B * H * W, 3).index_copy(0, sel, rgb.to(points.dtype)).view(B, H, W, 3)

        rays_o, rays_d = get_rays(cameras)
        bg = self.background(rays_d.to(points))
        dist = (points - rays_o.to(points)).norm(dim=-1, keepdim=True)
        m = mask.to(points.dtype)
        stack = torch.cat([fg * m + bg * (1.0 - m), m, dist * m, normal * m, fg * m], dim=-1)
        if c.antialias:
            stack = antialias(stack, rast, clip, faces, c.backend)
        comp_rgb, opacity, depth, comp_normal, comp_fg = stack.split([3, 1, 1, 3, 3], dim=-1)
        return {
            "comp_rgb": comp_rgb,
            "comp_rgb_fg": comp_fg,
            "comp_rgb_bg": bg,
            "opacity": opacity,
            "depth": depth,
            "comp_normal": comp_normal,
            "face_id": rast.face_id,
        }
