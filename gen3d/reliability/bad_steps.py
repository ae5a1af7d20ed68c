"""The runtime NaN stop: steps whose guidance gradient the NaN guard mostly zeroed, or whose loss is not
finite, are bad; a warning when a run of bad steps starts, an error after `trainer.max_bad_steps` of them
in a row. While bad steps continue no checkpoint is written, so the last checkpoint is a good state."""

from __future__ import annotations

import logging
import math

from gen3d.errors import UserError

log = logging.getLogger("gen3d")

BAD_SHARE = 0.5  # a step is bad when the NaN guard zeroed at least this share of the guidance gradient


def is_bad(nan_share: float, loss: float) -> bool:
    return nan_share >= BAD_SHARE or not math.isfinite(loss)


class BadSteps:
    """Counts consecutive bad steps; max_bad: stop after that many in a row (0: never stop)."""

    def __init__(self, max_bad: int):
        self.max_bad, self.streak = max(0, max_bad), 0

    def update(self, bad: bool, step: int, nan_share: float, last_good: str | None) -> None:
        """Record one step (bad decided over all ranks); UserError once max_bad bad steps came in a row."""
        if not bad:
            if self.streak:
                log.info("step %d: finite again after %d bad step(s)", step, self.streak)
            self.streak = 0
            return
        self.streak += 1
        if self.streak == 1:
            log.warning(
                "step %d: the NaN guard zeroed %.0f%% of the guidance gradient (or the loss is not finite); "
                "no checkpoint is written until the steps are finite again%s",
                step,
                100 * nan_share,
                f", stopping after {self.max_bad} such steps in a row (trainer.max_bad_steps)" if self.max_bad else "",
            )
        if self.max_bad and self.streak >= self.max_bad:
            kept = f"the last good checkpoint is {last_good}" if last_good else "no good checkpoint was written"
            raise UserError(
                f"training stopped at step {step}: {self.streak} steps in a row had non-finite guidance gradients "
                f"or loss (trainer.max_bad_steps={self.max_bad}; check guidance settings and the learning rate); {kept}"
            )
