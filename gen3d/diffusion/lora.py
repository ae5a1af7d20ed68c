"""A camera-conditioned LoRA on the prior's own UNet (ProlificDreamer's particle score eps_phi).

The UNet is NOT copied: peft adds LoRA layers to its attention projections (to_q, to_k, to_v,
to_out.0) and the pretrained score is the same UNet with the adapters disabled. The camera enters
as an embedding of the flattened camera-to-world matrix added to the timestep embedding, through
diffusers' `class_embedding` hook, which is attached only inside `VSDLoRA.active()`. Outside that
block the UNet is exactly the original one (adapters off, no class embedding).

`VSDLoRA` is an nn.Module that owns ONLY the LoRA and camera-embedding parameters; the frozen UNet
is a plain attribute, so a system can register the wrapper as a submodule (checkpoints, optimizer,
DDP) without the frozen weights.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from gen3d.errors import UserError

LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
ADAPTER = "vsd"


class CameraEmbedding(nn.Module):
    """c2w [B,4,4] (or [B,16]) -> [B, dim]: Linear -> SiLU -> Linear, the output layer zero-initialised."""

    def __init__(self, dim: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or dim
        self.net = nn.Sequential(nn.Linear(16, hidden), nn.SiLU(), nn.Linear(hidden, dim))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, c2w: torch.Tensor) -> torch.Tensor:
        return self.net(c2w.reshape(c2w.shape[0], 16).to(self.net[0].weight.dtype))


class VSDLoRA(nn.Module):
    """LoRA (peft, adapter 'vsd') + camera embedding on a frozen UNet held outside the module tree."""

    def __init__(self, unet: nn.Module, rank: int = 4, alpha: float | None = None):
        super().__init__()
        from peft import LoraConfig

        if getattr(unet, "class_embedding", None) is not None:
            raise UserError("VSD's camera conditioning needs a UNet without its own class embedding")
        if ADAPTER in (getattr(unet, "peft_config", None) or {}):
            raise UserError(f"the UNet already carries a '{ADAPTER}' LoRA adapter")
        object.__setattr__(self, "unet", unet)  # plain attribute: not a submodule, not in state_dict()
        unet.add_adapter(
            LoraConfig(r=rank, lora_alpha=alpha or rank, init_lora_weights=True, target_modules=list(LORA_TARGETS)),
            adapter_name=ADAPTER,
        )
        # register the peft LoRA sub-layers (not their frozen base layers) as our own children
        self.lora_layers = nn.ModuleDict()
        for name, module in unet.named_modules():
            if hasattr(module, "lora_A") and ADAPTER in module.lora_A:
                self.lora_layers[name.replace(".", "_")] = nn.ModuleDict(
                    {"A": module.lora_A[ADAPTER], "B": module.lora_B[ADAPTER]}
                )
        if not self.lora_layers:
            raise UserError(f"no attention projections ({', '.join(LORA_TARGETS)}) found in the UNet for VSD's LoRA")
        self.lora_layers.float()  # trainable weights stay float32 under a half-precision prior
        dim = unet.time_embedding.linear_2.out_features
        self.camera_embedding = CameraEmbedding(dim).to(unet.device)
        self._set_enabled(False)

    def _set_enabled(self, enabled: bool) -> None:
        """Toggle the adapter; peft also flips requires_grad on disable, which we undo."""
        if enabled:
            self.unet.enable_adapters()
        else:
            self.unet.disable_adapters()
        for p in self.parameters():
            p.requires_grad_(True)

    @contextmanager
    def active(self):
        """Inside: adapters on and the camera embedding attached (pass class_labels=c2w [B,16])."""
        self._set_enabled(True)
        self.unet.class_embedding = self.camera_embedding
        try:
            yield self.unet
        finally:
            self.unet.class_embedding = None
            self._set_enabled(False)

    # ----- checkpoints (LoRA + camera embedding only) -----------------------------------------
    def lora_state_dict(self) -> dict[str, torch.Tensor]:
        """'unet.<peft LoRA key>' and 'camera_embedding.<key>' tensors (detached, contiguous)."""
        from peft import get_peft_model_state_dict

        sd = {f"unet.{k}": v for k, v in get_peft_model_state_dict(self.unet, adapter_name=ADAPTER).items()}
        sd.update({f"camera_embedding.{k}": v for k, v in self.camera_embedding.state_dict().items()})
        return {k: v.detach().contiguous() for k, v in sd.items()}

    def load_lora_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Inverse of lora_state_dict(); UserError on missing or unexpected keys."""
        from peft import set_peft_model_state_dict

        expected = set(self.lora_state_dict())
        if set(state_dict) != expected:
            missing, extra = sorted(expected - set(state_dict)), sorted(set(state_dict) - expected)
            raise UserError(f"VSD LoRA state dict mismatch: missing {missing[:3]}, unexpected {extra[:3]}")
        unet_sd = {k[len("unet.") :]: v for k, v in state_dict.items() if k.startswith("unet.")}
        cam_sd = {k[len("camera_embedding.") :]: v for k, v in state_dict.items() if k.startswith("camera_embedding.")}
        set_peft_model_state_dict(self.unet, unet_sd, adapter_name=ADAPTER)
        self.camera_embedding.load_state_dict(cam_sd)
        self._set_enabled(False)

    def save(self, path: str | Path) -> Path:
        """Write lora_state_dict() as safetensors, atomically."""
        from safetensors.torch import save_file

        from gen3d.utils.atomic import atomic_path

        with atomic_path(path) as tmp:
            save_file({k: v.cpu() for k, v in self.lora_state_dict().items()}, str(tmp))
        return Path(path)

    def load(self, path: str | Path) -> None:
        from safetensors.torch import load_file

        device = next(self.parameters()).device
        self.load_lora_state_dict(load_file(str(path), device=str(device)))
