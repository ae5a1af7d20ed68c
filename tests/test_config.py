from dataclasses import dataclass, field
from typing import Any

import pytest

from gen3d.config import build_config, resolve_config_path
from gen3d.errors import UserError
from gen3d.utils.schedule import schedule_value


@dataclass
class Inner:
    guidance_scale: float = 100.0
    max_step_percent: Any = 0.98
    SCHEDULES = ("max_step_percent",)


@dataclass
class Outer:
    name: str = "x"
    steps: int = 10
    guidance: Inner = field(default_factory=Inner)


def test_merge_and_overrides():
    cfg = build_config(
        Outer, {"steps": 5}, ["guidance.guidance_scale=7.5", "guidance.max_step_percent=[0,0.98,0.5,100]"]
    )
    assert cfg.steps == 5 and cfg.guidance.guidance_scale == 7.5
    assert cfg.guidance.max_step_percent == [0, 0.98, 0.5, 100]
    assert isinstance(cfg.guidance.max_step_percent, list)


def test_unknown_key_suggests_nearest():
    with pytest.raises(
        UserError, match=r"unknown config key 'guidance.guidance_scal' \(did you mean 'guidance.guidance_scale'\?\)"
    ):
        build_config(Outer, ["guidance.guidance_scal=3"])
    with pytest.raises(UserError, match=r"unknown config key 'stepz'.*'steps'"):
        build_config(Outer, {"stepz": 3})


def test_wrong_type_names_key():
    with pytest.raises(UserError, match=r"config key 'guidance.guidance_scale'.*abc"):
        build_config(Outer, {"guidance": {"guidance_scale": "abc"}})
    with pytest.raises(UserError, match="config key 'steps'"):
        build_config(Outer, ["steps=1.5"])


def test_bad_schedule_and_override_syntax():
    with pytest.raises(UserError, match="guidance.max_step_percent"):
        build_config(Outer, ["guidance.max_step_percent=[1,2,3]"])
    with pytest.raises(UserError, match="key=value"):
        build_config(Outer, ["steps"])


def test_schedule_values():
    spec = [100, 0.98, 0.5, 200]
    assert schedule_value(spec, 0) == 0.98
    assert schedule_value(spec, 150) == pytest.approx(0.74)
    assert schedule_value(spec, 1000) == 0.5
    assert schedule_value(3.0, 7) == 3.0
    step = [10, 1.0, 0.0, 11]
    assert schedule_value(step, 10) == 1.0 and schedule_value(step, 11) == 0.0


def test_config_path_resolution():
    assert resolve_config_path("dreamfusion.yaml").name == "dreamfusion.yaml"
    assert resolve_config_path("dreamfusion").name == "dreamfusion.yaml"
    with pytest.raises(UserError, match="not found"):
        resolve_config_path("nope.yaml")


def test_override_into_a_list_field_is_a_one_line_error(capsys, tmp_path):
    import launch

    code = launch.main(
        [
            "--config",
            "magic3d.yaml",
            "--prompt",
            "a red cube",
            "--output",
            str(tmp_path),
            "stages[1].overrides.optimizer.lr_offsets=0.00002",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: cannot apply stages[1]") and err.count("\n") == 1
    assert not any(tmp_path.iterdir())


def test_one_key_of_a_named_stage_keeps_the_rest_of_the_list():
    """`stages.refine.representation=dmtet` changes that key of the builtin profile's refine stage; its other
    overrides, and the coarse stage, stay as the method and profile made them."""
    from gen3d.config import read_yaml
    from gen3d.profiles import build_with_profile
    from gen3d.systems.config import Text3DConfig
    from gen3d.systems.stages import stage_configs

    method = read_yaml(resolve_config_path("magic3d.yaml"))
    plain = build_with_profile(Text3DConfig, method, {"model": "builtin"})
    cfg = build_with_profile(
        Text3DConfig,
        method,
        {"model": "builtin"},
        ["stages.refine.representation=dmtet", "stages.refine.camera.width=96"],
    )
    before, after = dict(stage_configs(plain)), dict(stage_configs(cfg))
    assert after["refine"].representation == "dmtet" and before["refine"].representation == "mesh"
    assert (after["refine"].camera.height, after["refine"].camera.width) == (128, 96)
    assert after["refine"].trainer.max_steps == before["refine"].trainer.max_steps == 300
    assert after["coarse"] == before["coarse"]
    with pytest.raises(UserError, match="unknown stage 'fine' .*coarse, refine"):
        build_with_profile(Text3DConfig, method, {"model": "builtin"}, ["stages.fine.seed=1"])


def test_an_int_for_a_float_or_text_field_is_a_float():
    """`export.threshold=10` (a Union[float, str] field) is 10.0, not a type error; "auto" stays text."""
    from gen3d.export.config import ExportConfig

    @dataclass
    class WithExport:
        export: ExportConfig = field(default_factory=ExportConfig)

    cfg = build_config(WithExport, ["export.threshold=10"])
    assert cfg.export.threshold == 10.0 and isinstance(cfg.export.threshold, float)
    assert build_config(WithExport, ["export.threshold=auto"]).export.threshold == "auto"
    assert build_config(WithExport, {"export": {"threshold": 2.5}}).export.threshold == 2.5
