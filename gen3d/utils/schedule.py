"""One schedule type for every value that changes with the training step.

A schedule is either a constant (a number) or ``[start_step, start_value, end_value, end_step]``:
the value is ``start_value`` up to ``start_step``, moves linearly to ``end_value`` at
``end_step`` and stays there. A step change at step k is ``[k, a, b, k + 1]``.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gen3d.errors import UserError


def check_schedule(spec: Any, key: str = "schedule") -> None:
    """Raise UserError unless spec is a number or a valid 4-element schedule."""
    if spec is None or isinstance(spec, (int, float)):
        return
    if isinstance(spec, Sequence) and not isinstance(spec, str) and len(spec) == 4:
        if all(isinstance(v, (int, float)) for v in spec) and spec[3] >= spec[0]:
            return
    raise UserError(
        f"config key '{key}' must be a number or [start_step, start_value, end_value, end_step] "
        f"with end_step >= start_step, got {list(spec) if isinstance(spec, Sequence) and not isinstance(spec, str) else spec!r}"
    )


def schedule_value(spec: Any, step: int) -> Any:
    """Value of a schedule at a training step (constants and None pass through)."""
    if spec is None or isinstance(spec, (int, float)):
        return spec
    start_step, start_value, end_value, end_step = (float(v) for v in spec)
    if step <= start_step:
        return start_value
    if step >= end_step:
        return end_value
    frac = (step - start_step) / max(end_step - start_step, 1e-12)
    return start_value + frac * (end_value - start_value)
