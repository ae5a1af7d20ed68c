"""Text-to-3D: one Lightning module, assembled per stage from registered parts.

One training step (read top to bottom in `training_step`): cameras (from the dataloader) ->
render one particle (its `representation`: NeRF volume, textured mesh, ...) -> view-dependent prompt
embeddings -> the guidance (`guidance.type`: SDS, VSD, ...) -> loss + the representation's regularisers.
DreamFusion, Magic3D and ProlificDreamer are this system with different configs (configs/*.yaml);
multi-stage methods chain stages in the runner. The system knows its parts only through their
interfaces (gen3d.representations, gen3d.guidance) and the view space (gen3d.systems.latent_mode).
The frozen prior is a plain attribute, never a submodule: it stays out of checkpoints, optimizers
and DDP. The guidance's own trained modules (VSD's LoRA) are submodules under the names the
guidance gives them (trained and checkpointed); what it hands the next stage is `guidance_state()`.
"""

from __future__ import annotations

import copy
import logging
import random
from typing import Any

import lightning as L
import torch
from torch import nn

from gen3d.config import apply_step, step_schedules
from gen3d.diffusion.prior import Prior, load_prior
from gen3d.diffusion.prompts import PromptEmbeddings
from gen3d.errors import UserError
from gen3d.guidance import GuidanceContext, build_guidance, guidance_type
from gen3d.render.background import make_background
from gen3d.render.cameras import Cameras, make_cameras, turntable
from gen3d.render.shading import pick_shading
from gen3d.representations import representation
from gen3d.systems import latent_mode
from gen3d.systems.config import Text3DConfig, resolve_backends
from gen3d.systems.data import RandomCameraDataset, batch_to_cameras, cameras_at_step  # noqa: F401  (re-exported)
from gen3d.systems.particles import ParticleMixin, particles_of_rank
from gen3d.utils.device import prior_dtype
from gen3d.utils.distributed import exclude_from_ddp, log_parameter_sync
from gen3d.utils.schedule import schedule_value

log = logging.getLogger("gen3d")


def loss_weight(loss_cfg: Any, term: str, step: int) -> float:
    """The weight of a loss term at `step`: its `loss:` field, else `loss.other[term]` (0: off)."""
    spec = getattr(loss_cfg, term) if hasattr(loss_cfg, term) else loss_cfg.other.get(term, 0.0)
    return schedule_value(spec, step)


class Text3DSystem(ParticleMixin, L.LightningModule):
    def __init__(self, cfg: Text3DConfig, prior: Prior | None = None, guidance_state: dict | None = None):
        """prior: a loaded prior to use (else loaded in `setup`); guidance_state: what the previous
        stages' guidances hand on (`guidance_state()` of the previous stage)."""
        super().__init__()
        cfg = resolve_backends(cfg)
        # keys that follow a step schedule (`STEPPED` fields): the parts share one live copy of the config
        # whose values `on_train_batch_start` sets to the step's (gen3d.config.apply_step)
        self.step_schedules = step_schedules(cfg)
        if self.step_schedules:
            cfg = copy.deepcopy(cfg)
            apply_step(cfg, self.step_schedules, 0)
        self.cfg = cfg
        self.representation = representation(cfg.representation)
        self.guidance_type = guidance_type(cfg.guidance.type)
        self.space = latent_mode.view_space(cfg)
        channels = self.space.channels(cfg, prior)  # None: RGB
        self.background = make_background(cfg.background, channels)
        # particles by global index ("0", "1", ...); under DDP each rank keeps only its own (setup)
        self.scenes = nn.ModuleDict(
            {str(i): self.representation.build(cfg, self.background, channels) for i in range(cfg.particles)}
        )
        self._prior = prior  # plain attributes: not registered, not checkpointed
        self._prompts = self._guidance = None
        self._guidance_state = dict(guidance_state or {})
        self._rng = random.Random(cfg.seed)
        self.first_loss, self.last_loss = None, float("nan")
        self.nan_share = 0.0
        if self.guidance_type.holds_modules and prior is not None:
            self.setup_prior()

    # ----- frozen prior and guidance ------------------------------------------------------------
    @property
    def prior(self) -> Prior | None:
        """The frozen prior (None until loaded)."""
        return self._prior

    def setup_prior(self, device: torch.device | str | None = None) -> None:
        """Load the prior (once) and build prompt embeddings and guidance on `device`."""
        if self._guidance is not None:
            return
        if self._prior is None:
            device = torch.device(device or self.device)
            self._prior = load_prior(self.cfg.model, device=device, dtype=prior_dtype(self.cfg.model_dtype, device))
        self._prompts = PromptEmbeddings(self._prior, self.cfg.prompt, self.cfg.prompt_processor)
        context = GuidanceContext(latents=self.space.latents, state=self._guidance_state, prompts=self._prompts)
        self._guidance = build_guidance(self._prior, self.cfg.guidance, context)
        for name, module in self._guidance.modules().items():
            setattr(self, name, module)  # a submodule: trained and checkpointed under its name

    def prepare_to_load(self, device: torch.device | str | None = None) -> None:
        """Before `load_state_dict`: build the guidance when it holds modules a checkpoint restores."""
        if self.guidance_type.holds_modules:
            self.setup_prior(device or (self._prior.device if self._prior is not None else "cpu"))

    def guidance_state(self) -> dict:
        """What this stage hands the next stage's guidance (its own state over what it was handed)."""
        return {**self._guidance_state, **(self._guidance.state() if self._guidance is not None else {})}

    def setup(self, stage: str) -> None:  # Lightning hook: before checkpoint restore, optimizers and DDP
        # rank 0 fills the text-embedding cache while the others wait, then they read it
        if self.trainer.global_rank == 0:
            self.setup_prior(self.trainer.strategy.root_device)
        self.trainer.strategy.barrier("gen3d-prior")
        self.setup_prior(self.trainer.strategy.root_device)
        self.keep_particles(particles_of_rank(self.cfg.particles, self.trainer.global_rank, self.trainer.world_size))
        exclude_from_ddp(self, self.ddp_local_names())

    def on_train_end(self) -> None:
        log_parameter_sync(self, local=self.ddp_local_names(), particles=self.particle_ids())

    def init_from(self, prev: Text3DSystem) -> None:
        """Start this stage from the previous stage's trained particles (`Representation.from_previous`)."""
        if prev.cfg.particles != self.cfg.particles:
            raise UserError(f"stage has {self.cfg.particles} particles but the previous stage has {prev.cfg.particles}")
        self.background.load_state_dict(prev.background.state_dict())
        self.keep_particles(prev.particle_ids())  # the previous stage may hold only this rank's particles
        for key, scene in self.scenes.items():
            self.representation.from_previous(scene, prev.scenes[key], self.cfg)
        self._prior = self._prior or prev.prior

    # ----- training ---------------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        cfg, step = self.cfg, self.global_step
        cams = cameras_at_step(batch, cfg, step)  # size and batch size of this step (schedules)
        self._log_sizes(step, cams)
        scene = self.scene(self.particle_index(step))
        shading = self.space.shading(cfg.force_shading or pick_shading(step, scene.cfg.shading, self._rng))
        out = scene(cams, shading=shading)
        cond, uncond = self._prompts(cams.elevation, cams.azimuth)
        renders = out["comp_rgb"].permute(0, 3, 1, 2)  # [B,3,H,W]; latent space: latents [B,C,H,W]
        g = self._guidance.guide(renders, cond, uncond, cams, step)
        self.nan_share = float(g.get("nan_share", 0.0))  # read by the NaN stop (gen3d.reliability.bad_steps)
        terms = {"guidance": g["loss"], **self.representation.regularisers(scene, out)}
        total = sum(w * terms[k] for k in terms if (w := loss_weight(cfg.loss, k, step)))
        for name in [k for k in g if k.startswith("loss_")]:  # the guidance's own losses, weight 1
            total = total + g[name]
            self.log(name, g[name].detach(), batch_size=len(cams))
        self.log("loss", total.detach(), prog_bar=True, batch_size=len(cams))
        self.log("t", g["t"].float().mean(), prog_bar=True, batch_size=len(cams))
        self.log("grad_norm", g["grad_norm"], batch_size=len(cams))
        self.last_loss = float(total.detach())
        self.first_loss = self.last_loss if self.first_loss is None else self.first_loss
        return total

    def _log_sizes(self, step: int, cams: Cameras) -> None:
        """One log line whenever the render size or the batch size changes (and at a run's first step)."""
        sizes = (cams.height, cams.width, len(cams))
        if sizes != getattr(self, "_sizes", None) and self.global_rank == 0:
            log.info("renders %dx%d px, batch %d (from step %d)", *sizes, step)
        self._sizes = sizes

    def on_train_batch_start(self, batch, batch_idx) -> None:
        changed = apply_step(self.cfg, self.step_schedules, self.global_step)
        if changed and self.global_rank == 0:
            for key, value in changed.items():
                log.info("%s = %r (from step %d, its step schedule)", key, value, self.global_step)
        for scene in self.scenes.values():
            scene.update_step(self.global_step)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["gen3d_shading_rng"] = self._rng.getstate()  # a resumed run picks the same shadings

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        if "gen3d_shading_rng" in checkpoint:
            self._rng.setstate(checkpoint["gen3d_shading_rng"])

    def configure_optimizers(self):
        o, cfg = self.cfg.optimizer, self.cfg
        groups = [g for scene in self.scenes.values() for g in self.representation.parameter_groups(scene, cfg)]
        if list(self.background.parameters()):
            groups.append({"params": list(self.background.parameters()), "lr": o.lr_background})
        if self._guidance is not None:
            groups += self._guidance.parameter_groups()
        self.freeze_untrained({id(p) for g in groups for p in g["params"]})
        return torch.optim.Adam(groups, betas=tuple(o.betas), eps=o.eps)

    def freeze_untrained(self, trained: set[int]) -> None:
        for p in self.parameters():
            p.requires_grad_(id(p) in trained)

    # ----- rendering for people ---------------------------------------------------------------------
    @torch.no_grad()
    def render_views(self, cams: Cameras, particle: int = 0, shading: str = "albedo", chunk: int = 4) -> dict:
        """Render cameras in chunks; returns rgb [N,H,W,3], normal [N,H,W,3] and opacity [N,H,W,1] on the
        CPU. Latent space (rgb_as_latents): rendered at the latent size with albedo shading, rgb decoded by
        the prior's VAE, plus the rendered latents [N,h,w,C] (`latent_mode.decode_views`)."""
        if self.space.needs_prior:
            self.setup_prior()  # the VAE decodes what people see (e.g. --export-only loads no prior otherwise)
        cams, shading = self.space.view(cams, shading, self._prior)
        scene, was_training = self.scene(particle), self.training
        self.eval()  # deterministic: no sample jitter, no random background
        rgbs, normals, opacities = [], [], []
        for i in range(0, len(cams), chunk):
            out = scene(cams[i : i + chunk].to(self.device), shading=shading, with_normal=True)
            rgbs.append(out["comp_rgb"].float().cpu())
            opacities.append(out["opacity"].float().cpu())
            normals.append((out["comp_normal"].float().cpu() * 0.5 + 0.5) * opacities[-1])
        self.train(was_training)
        views = {"rgb": torch.cat(rgbs), "normal": torch.cat(normals), "opacity": torch.cat(opacities)}
        return self.space.decode(self._prior, views)

    def preview_cameras(self, size: int) -> Cameras:
        az = torch.tensor([0.0, 90.0, 180.0, -90.0])
        c = self.cfg.turntable
        return make_cameras(
            torch.full((4,), c.elevation), az, torch.full((4,), c.distance), torch.full((4,), c.fovy), size, size
        )

    def turntable_cameras(self) -> Cameras:
        c = self.cfg.turntable
        return turntable(c.n_views, c.elevation, c.distance, c.fovy, c.resolution, c.resolution)

    @torch.no_grad()
    def export_particle(self, index: int, out_dir) -> dict:
        """The textured mesh of one particle (`Representation.export`); returns its stats."""
        geo = self.scene(index).geometry
        device = next(self.parameters()).device
        # latent space: the field's albedo is latents; baked through a fitted linear latent -> RGB map
        to_rgb = self.space.albedo_to_rgb(lambda cams: self.render_views(cams, particle=index), self.cfg.turntable)

        def albedo_fn(points):
            albedo = geo.albedo(points.to(device)).float().cpu()
            return albedo if to_rgb is None else to_rgb(albedo)

        return self.representation.export(self.scene(index), albedo_fn, out_dir, self.cfg, device)
