"""Step schedules ({milestones, values}, threestudio's resolution_milestones) beside the linear form."""

import pytest

from gen3d.errors import UserError
from gen3d.utils.schedule import check_schedule, schedule_value


def test_step_schedule_values():
    spec = {"milestones": [100, 300], "values": [64, 256, 512]}
    check_schedule(spec, "camera.height")
    assert [schedule_value(spec, s) for s in (0, 99, 100, 299, 300, 10**6)] == [64, 64, 256, 256, 512, 512]
    assert isinstance(schedule_value(spec, 0), int)


@pytest.mark.parametrize(
    "spec, words",
    [
        ({"milestones": [300, 100], "values": [1, 2, 3]}, "strictly increasing"),
        ({"milestones": [100, 100], "values": [1, 2, 3]}, "strictly increasing"),
        ({"milestones": [100], "values": [1]}, "need 2 values"),
        ({"milestones": [-1], "values": [1, 2]}, "step numbers"),
    ],
)
def test_bad_step_schedules_are_one_line(spec, words):
    with pytest.raises(UserError) as err:
        check_schedule(spec, "camera.height")
    assert words in str(err.value) and "camera.height" in str(err.value) and "\n" not in str(err.value)


def test_a_step_schedule_replaces_a_ramp_default_and_the_other_way_round():
    """VSD's max_step_percent defaults to a ramp list; a {milestones, values} mapping replaces it (and a
    later ramp replaces a mapping) instead of failing to merge a mapping into a list."""
    from gen3d.config import build_config
    from gen3d.systems.config import Text3DConfig

    step = "guidance.max_step_percent={milestones: [10], values: [0.98, 0.5]}"
    cfg = build_config(Text3DConfig, {"guidance": {"type": "vsd"}}, [step])
    assert cfg.guidance.max_step_percent == {"milestones": [10], "values": [0.98, 0.5]}
    cfg = build_config(Text3DConfig, [step])  # SDS: the default is a number
    assert schedule_value(cfg.guidance.max_step_percent, 10) == 0.5
    cfg = build_config(
        Text3DConfig, ["camera.height={milestones: [10], values: [64, 128]}"], ["camera.height=[0,64,128,10]"]
    )
    assert cfg.camera.height == [0, 64, 128, 10]
