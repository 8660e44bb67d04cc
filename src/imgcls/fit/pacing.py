"""Time-paced runs: a trial or the final run fitted to the seconds it has while it trains,
its last stage's horizon moved after every step to where the time runs out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from imgcls.fit.state import FitState
from imgcls.train.callbacks import Callback

# the test's seconds per image over its run's last validation's, with the summary's own
# work: 1.00, 1.05 and 1.10 in three CIFAR-10 fastnet94 runs (10,000 test images, 1 or 6
# views, against 1,000 validation images)
TEST_OVER_VAL = 1.05


@dataclass
class Pace:
    """When a run must end, on the fit's clock: a time-paced run's last stage trains until
    `until` less `after` (the test) less `per_epoch` for each validation still ahead, its
    last one included (measured once an epoch has ended). `test_per_val`: the test's
    images (times its TTA views) per validation image, so that each validation of the
    stage re-measures `after`. `views`, with `choose_tta`: the TTA is still to be chosen on
    validation (`views` views of it), at the stage's last validation before its end; the
    test then costs `test_per_val / views` if it drops the TTA. `worth(a, b)`: the share of
    the error that training for `b` epochs of the stage instead of `a` removes (the
    forecast's curves), against which the TTA is weighed; None: kept wherever it helps."""

    until: float
    after: float
    per_epoch: float
    test_per_val: float = 0.0
    views: int = 1
    choose_tta: bool = False
    worth: Callable[[float, float], float] | None = None

    def measured(self, val_seconds: float) -> None:
        """`after` re-measured from a validation's seconds: the test, and the TTA's check on
        validation while it is still to come."""
        check = self.views if self.choose_tta else 0
        self.after = (self.test_per_val * TEST_OVER_VAL + check) * val_seconds

    def chosen(self, tta: str) -> None:
        """The TTA is chosen: a dropped one leaves the plain test."""
        self.choose_tta = False
        if tta == "none":
            self.test_per_val /= self.views
            self.views = 1


class BudgetHeartbeat(Callback):
    """Saves the fit's spent seconds after every epoch, so a kill loses at most one epoch's
    worth of accounting. With a `pace`, fits the run's last stage (`train.steps`) to the
    time: after each step it re-estimates the seconds per step from the steps so far and
    moves the stage's horizon (where its lr schedule ends and training stops) to the step
    the time runs out at; a throughput that differs from the plan changes the steps, not
    the wall time. With a `deadline` (seconds of the budget), stops an unpaced stage when
    its next epoch would end past it (the run then tests its best checkpoint as usual)."""

    key = "fit_budget"
    WARM_STEPS = 2  # a stage's first steps (allocation, caches) are not its pace

    def __init__(self, state: FitState, deadline: float | None = None,
                 pace: Pace | None = None):
        self.state, self.deadline, self.pace = state, deadline, pace
        self.now = state.clock.now  # the fit's clock: real, or a test's fake one
        self.last_epoch = self.last_step = self.now()
        self.stage_seen, self.warm = -1, self.WARM_STEPS
        self.step_seconds, self.steps_timed = 0.0, 0
        self.epoch_gap: float | None = None  # measured: validation after an epoch

    def on_fit_start(self, trainer) -> None:
        self.last_epoch = self.last_step = self.now()
        if self.pace is not None and self.pace.choose_tta and trainer.tta_choice is not None:
            self.pace.chosen(trainer.tta_choice["chosen"])  # made before the run was resumed

    def on_batch_end(self, trainer, images: int) -> None:
        now = self.now()
        took, self.last_step = now - self.last_step, now
        stage = trainer.stage
        if self.pace is None or not stage.stops_at_horizon:
            return
        if stage.index != self.stage_seen:  # a new stage (or a resumed one): time it afresh
            self.stage_seen, self.warm = stage.index, self.WARM_STEPS
            self.step_seconds, self.steps_timed = 0.0, 0
        if self.warm:
            self.warm -= 1
            return
        self.step_seconds += took
        self.steps_timed += 1
        self._replan(stage, len(trainer.loaders.train))

    def _replan(self, stage, steps_per_epoch: int) -> None:
        per_step = self.step_seconds / self.steps_timed
        done, horizon = stage.scheduler.last_epoch, stage.horizon.steps
        epoch_ends = 1 + max(0, (horizon - 1) // steps_per_epoch - done // steps_per_epoch)
        per_epoch = self.pace.per_epoch if self.epoch_gap is None else self.epoch_gap
        left = (self.pace.until - self.pace.after - self.state.clock.spent()
                - epoch_ends * per_epoch)
        room = stage.epochs * steps_per_epoch  # the stage's epochs bound its steps
        stage.horizon.steps = min(room, done + max(0, int(left / per_step)))  # done: stop

    def on_epoch_end(self, trainer, metrics: dict[str, Any]) -> None:
        now = self.now()
        epoch, self.last_epoch = now - self.last_epoch, now
        self.epoch_gap = now - self.last_step
        paced = self.pace is not None and trainer.stage.stops_at_horizon
        if paced and self.pace.choose_tta and self._last_validation(trainer):
            self.pace.chosen(trainer.choose_tta(self._forgone(trainer, metrics)))
        self.state.save()
        self.last_step = self.now()  # the next step's own time
        spent = self.state.clock.spent()
        if paced and self.pace.test_per_val and metrics.get("val_seconds"):
            self.pace.measured(metrics["val_seconds"])
        if (self.deadline is not None and not paced
                and trainer.epoch < trainer.cfg.train.epochs and spent + epoch > self.deadline):
            trainer.stop_reason = (f"stopped at the time budget after epoch {metrics['epoch']}"
                                   f" ({spent:.0f} s spent; an epoch takes {epoch:.0f} s)")

    def _forgone(self, trainer, metrics: dict[str, Any]) -> float:
        """The share of the error the steps that the TTA's extra views' test time would
        train are forecast to remove (0 without a forecast or a timed step)."""
        pace, val_seconds = self.pace, metrics.get("val_seconds")
        if pace.worth is None or not self.steps_timed or not val_seconds:
            return 0.0
        views_seconds = pace.test_per_val * (1 - 1 / pace.views) * TEST_OVER_VAL * val_seconds
        steps = views_seconds / (self.step_seconds / self.steps_timed)
        per_epoch, horizon = len(trainer.loaders.train), trainer.stage.horizon.steps
        return max(0.0, pace.worth(horizon / per_epoch, (horizon + steps) / per_epoch))

    @staticmethod
    def _last_validation(trainer) -> bool:
        """Whether the stage ends within the coming epoch: this validation is its last one
        before the end (the one at the end comes too late to change the steps)."""
        done, horizon = trainer.stage.scheduler.last_epoch, trainer.stage.horizon.steps
        return 0 < horizon - done <= len(trainer.loaders.train)
