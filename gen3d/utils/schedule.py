"""One schedule type for every value that changes with the training step.

A schedule is either a constant (a number) or ``[start_step, start_value, end_value, end_step]``:
the value is ``start_value`` up to ``start_step``, moves linearly to ``end_value`` at
``end_step`` and stays there. A step change at step k is ``[k, a, b, k + 1]``.

A step schedule (threestudio's ``resolution_milestones``) is ``{milestones: [m1, m2, ...], values: [v0, v1, ...]}``:
``v0`` before step ``m1``, ``v1`` from ``m1`` on, and so on; milestones strictly increasing, one value more
than milestones. Values may be of any type (ints for resolutions and batch sizes stay ints).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from typing import Any

from gen3d.errors import UserError


def is_step_schedule(spec: Any) -> bool:
    return isinstance(spec, Mapping) and set(spec) == {"milestones", "values"}


def check_step_schedule(spec: Any, key: str) -> None:
    """Raise UserError unless spec is {milestones: [increasing ints], values: [one more value]}."""
    ms, vals = spec.get("milestones"), spec.get("values")
    if not isinstance(ms, Sequence) or isinstance(ms, str) or not isinstance(vals, Sequence) or isinstance(vals, str):
        raise UserError(f"config key '{key}': a step schedule is {{milestones: [steps], values: [values]}}")
    if not all(isinstance(m, int) and not isinstance(m, bool) and m >= 0 for m in ms):
        raise UserError(f"config key '{key}': milestones must be step numbers >= 0, got {list(ms)}")
    if any(b <= a for a, b in zip(ms[:-1], ms[1:])):
        raise UserError(f"config key '{key}': milestones must be strictly increasing, got {list(ms)}")
    if len(vals) != len(ms) + 1:
        raise UserError(
            f"config key '{key}': {len(ms)} milestones need {len(ms) + 1} values "
            f"(one before the first milestone), got {len(vals)}"
        )


def check_schedule(spec: Any, key: str = "schedule") -> None:
    """Raise UserError unless spec is a number, a valid 4-element schedule or a step schedule."""
    if spec is None or isinstance(spec, (int, float)):
        return
    if is_step_schedule(spec):
        return check_step_schedule(spec, key)
    if isinstance(spec, Sequence) and not isinstance(spec, str) and len(spec) == 4:
        if all(isinstance(v, (int, float)) for v in spec) and spec[3] >= spec[0]:
            return
    raise UserError(
        f"config key '{key}' must be a number, [start_step, start_value, end_value, end_step] "
        f"or {{milestones: [...], values: [...]}} "
        f"with end_step >= start_step, got {list(spec) if isinstance(spec, Sequence) and not isinstance(spec, str) else spec!r}"
    )


def schedule_values(spec: Any) -> list:
    """The values a (checked) schedule takes: a constant, a ramp's two ends, a step schedule's values."""
    if is_step_schedule(spec):
        return list(spec["values"])
    if isinstance(spec, Sequence) and not isinstance(spec, str) and len(spec) == 4:
        return [spec[1], spec[2]]
    return [spec]


def schedule_value(spec: Any, step: int) -> Any:
    """Value of a schedule at a training step (constants and None pass through)."""
    if spec is None or isinstance(spec, (int, float)):
        return spec
    if is_step_schedule(spec):
        return spec["values"][bisect.bisect_right(list(spec["milestones"]), step)]
    start_step, start_value, end_value, end_step = (float(v) for v in spec)
    if step <= start_step:
        return start_value
    if step >= end_step:
        return end_value
    frac = (step - start_step) / max(end_step - start_step, 1e-12)
    return start_value + frac * (end_value - start_value)


def schedule_int(spec: Any, step: int) -> int:
    """An integer setting (a resolution, a batch size) at a step: the schedule's value, rounded."""
    return int(round(float(schedule_value(spec, step))))


def schedule_max(spec: Any) -> Any:
    """The largest value a schedule takes (e.g. the batch the data loader must provide)."""
    if spec is None or isinstance(spec, (int, float)):
        return spec
    if is_step_schedule(spec):
        return max(spec["values"])
    return max(spec[1], spec[2])


def check_positive_ints(spec: Any, key: str) -> None:
    """Raise UserError unless every value the schedule takes is an integer >= 1 (sizes, batch sizes)."""
    values = spec["values"] if is_step_schedule(spec) else [spec] if not isinstance(spec, Sequence) else spec[1:3]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 1 and v == int(v) for v in values):
        raise UserError(f"config key '{key}' must be an integer >= 1 (or a schedule of them), got {spec!r}")
