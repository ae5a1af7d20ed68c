"""Parts from the registries: a toy guidance and a toy representation registered from outside the
package run a method end to end (docs/adding-a-method.md walks through this file); registry errors."""

from dataclasses import dataclass

import pytest
import torch
from torch import nn

import launch
from gen3d.cli import run_from_args
from gen3d.config import build_config
from gen3d.guidance import GUIDANCES, GuidanceType
from gen3d.representations import REPRESENTATIONS, register
from gen3d.representations.volume import VolumeRepresentation
from gen3d.systems.config import Text3DConfig

TINY = [
    "camera.height=16",
    "camera.width=16",
    "renderer.num_samples_per_ray=16",
    "export.resolution=32",
    "export.texture_size=32",
    "turntable.n_views=2",
    "turntable.resolution=16",
    "trainer.preview_every=0",
    "prompt_processor.cache_dir=null",
    "geometry.hash_grid.n_levels=4",
    "geometry.hash_grid.log2_hashmap_size=12",
]


# ----- a toy guidance: pulls the renders towards a grey level that it learns itself ----------------------
@dataclass
class ToyGuidanceConfig:
    type: str = "toy"
    target: float = 0.5  # the grey level the renders are pulled to (plus the learned offset)
    lr: float = 0.01  # of the learned offset


class ToyGuidance:
    built_with: list = []  # the state each build was handed (the test reads it)

    def __init__(self, prior, cfg: ToyGuidanceConfig, state: dict):
        ToyGuidance.built_with.append(dict(state))
        self.cfg = cfg
        self.offset = state.get("toy_offset") or nn.Linear(1, 1, bias=False)  # continued across stages

    def guide(self, renders, cond, uncond, cameras, step):
        goal = self.cfg.target + self.offset.weight.sum()
        loss = (renders - goal.detach()).square().mean()
        loss_offset = (goal - renders.detach().mean()).square()  # the guidance's own term: trains the offset
        return {"loss": loss, "loss_offset": loss_offset, "t": torch.zeros(1), "grad_norm": loss.detach()}

    def parameter_groups(self):
        return [{"params": list(self.offset.parameters()), "lr": self.cfg.lr}]

    def modules(self):
        return {"toy_offset": self.offset}

    def state(self):
        return {"toy_offset": self.offset}


# ----- a toy representation: the NeRF with a regulariser of its own and settings under parts.blob --------
@dataclass
class BlobSettings:
    radius: float = 0.5  # opacity outside this radius of the image centre is penalised


class BlobRepresentation(VolumeRepresentation):
    config = BlobSettings

    def regularisers(self, scene, out):
        opacity = out["opacity"][..., 0]  # [B,H,W]
        h, w = opacity.shape[1:]
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        outside = ((xs**2 + ys**2).sqrt() > self.radius).float()
        return {**super().regularisers(scene, out), "outside": (opacity * outside).mean()}

    def check(self, cfg):
        self.radius = self.settings(cfg).radius


@pytest.fixture
def toy_parts():
    GUIDANCES.register(
        "toy",
        GuidanceType(ToyGuidanceConfig, lambda prior, cfg, ctx: ToyGuidance(prior, cfg, ctx.state), holds_modules=True),
    )
    register("blob", BlobRepresentation())
    ToyGuidance.built_with.clear()
    yield
    GUIDANCES.unregister("toy")
    REPRESENTATIONS.unregister("blob")


def test_toy_guidance_and_representation_run_a_yaml_only_method(toy_parts, tiny_pipeline, tmp_path):
    method = tmp_path / "toy.yaml"
    method.write_text(
        "system: text3d\nname: toymethod\nrepresentation: blob\nparts: {blob: {radius: 0.4}}\n"
        "guidance: {type: toy, target: 0.3}\nloss: {other: {outside: 2.0}}\nbackground: {type: solid}\n"
        "stages:\n  - {name: one, overrides: {trainer: {max_steps: 3}}}\n"
        "  - {name: two, overrides: {guidance: {lr: 0.02}, trainer: {max_steps: 2}}}\n"
    )
    result = run_from_args(
        launch.parse_args(
            [
                "--config",
                str(method),
                "--prompt",
                "a red cube",
                "--model",
                str(tiny_pipeline),
                "--output",
                str(tmp_path / "out"),
                *TINY,
            ]
        )
    )
    run_dir = tmp_path / "out" / "toymethod" / "a-red-cube"
    assert result["run_dir"] == str(run_dir)
    one = torch.load(run_dir / "ckpts" / "one" / "last.ckpt", weights_only=True)["state_dict"]
    two = torch.load(run_dir / "ckpts" / "two" / "last.ckpt", weights_only=True)["state_dict"]
    # the guidance's module is checkpointed under its name and trained through its parameter group ...
    assert one["toy_offset.weight"].abs().sum() > 0 and not torch.equal(
        one["toy_offset.weight"], two["toy_offset.weight"]
    )
    # ... and the second stage continued the first stage's module (handed on as guidance state)
    assert ToyGuidance.built_with[0] == {} and "toy_offset" in ToyGuidance.built_with[1]
    assert (run_dir / "export" / "model.glb").is_file() and (run_dir / "video" / "turntable.mp4").is_file()


def test_toy_parts_config_is_checked_before_anything_is_written(toy_parts, tiny_pipeline, tmp_path, capsys):
    base = [
        "--config",
        "dreamfusion.yaml",
        "--prompt",
        "a red cube",
        "--model",
        str(tiny_pipeline),
        "--output",
        str(tmp_path),
        "representation=blob",
        "guidance.type=toy",
    ]
    assert launch.main([*base, "guidance.guidance_scale=3"]) == 2  # an SDS key: not a toy guidance key
    assert "unknown config key 'guidance.guidance_scale'" in capsys.readouterr().err
    assert launch.main([*base, "parts.blob.radiu=3"]) == 2
    assert "unknown config key 'parts.blob.radiu' (did you mean 'parts.blob.radius'?)" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "override, message",
    [
        ("representation=voxels", "representation: unknown representation 'voxels' (known: dmtet, mesh, sdf, volume"),
        ("representation=mseh", "did you mean 'mesh'?"),
        ("representation=mesh", "cannot use representation 'mesh': it starts from a previous stage's particles"),
        (
            "guidance.type=sdss",
            "guidance.type: unknown guidance type 'sdss' (known: sds, sds-perpneg, vsd, vsd-perpneg; did you mean 'sds'?)",
        ),
        ("guidance.lora_rank=8", "unknown config key 'guidance.lora_rank'"),  # a VSD key: SDS's config lacks it
        ("mesh.texture.mlp_hidden=8", "unknown config key 'mesh.texture'"),  # was silently overwritten
        ("mesh.radius=2", "unknown config key 'mesh.radius'"),
        ("trainer.accelerator=cpu", "config key 'trainer.accelerator' is now 'device'"),
    ],
)
def test_bad_parts_are_one_line_errors(override, message, tmp_path, capsys):
    code = launch.main(["--config", "dreamfusion.yaml", "--prompt", "a red cube", "--output", str(tmp_path), override])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.startswith("error: ") and err.count("\n") == 1
    assert not any(tmp_path.iterdir())


def test_guidance_section_is_typed_by_its_type():
    from gen3d.guidance.sds import GuidanceConfig
    from gen3d.guidance.vsd import VSDConfig

    assert type(build_config(Text3DConfig, {}).guidance) is GuidanceConfig
    vsd = build_config(Text3DConfig, {"guidance": {"type": "vsd", "lora_rank": 8, "guidance_scale": 5.0}})
    assert type(vsd.guidance) is VSDConfig and vsd.guidance.lora_rank == 8
    # a later layer switching the type keeps the shared keys set before and drops the others
    sds = build_config(
        Text3DConfig, {"guidance": {"type": "vsd", "lora_rank": 8, "guidance_scale": 5.0}}, ["guidance.type=sds"]
    )
    assert type(sds.guidance) is GuidanceConfig and sds.guidance.guidance_scale == 5.0


def test_old_method_names_still_name_the_3d_system(tmp_path, capsys):
    old = tmp_path / "old.yaml"
    old.write_text("system: dreamfusion\nname: dreamfusion\nprompt: ''\n")
    assert launch.main(["--config", str(old), "--output", str(tmp_path / "o")]) == 2
    assert "the prompt is empty" in capsys.readouterr().err  # it got as far as the 3D system's checks
    bad = tmp_path / "bad.yaml"
    bad.write_text("system: text3dd\n")
    assert launch.main(["--config", str(bad)]) == 2
    assert "with one of builtin-controlnet, builtin-prior, text3d, video" in capsys.readouterr().err
