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
