"""fit.json, typed: what `imgcls fit` measured, raced and trained, as its resume, its report
and the benchmarks read it back. Pydantic models (the configs' library), so a fit.json that
does not match is refused by name when a fit resumes, never half-read."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from imgcls.fit.cost import Cost
from imgcls.fit.forecast import Forecast


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Settings(Record):
    """What the user asked for; a rerun into the same folder must ask the same."""

    data: str
    budget_seconds: float
    metric: str
    seed: int
    overrides: list[str]
    only: list[str] | None = None


class DataFacts(Record):
    """The data as the base recipe loads it."""

    classes: list[str]
    train_images: int
    val_images: int
    test_images: int
    per_class_train: list[int]
    imbalance: float
    stored_size: int | None
    channels: int
    load_seconds: float
    native_size: int  # the images' median short side: the candidates' sizes start here

    @property
    def min_images(self) -> int:
        """The fewest training images a run is worth: 20 per class, 256 at least, or all."""
        return min(self.train_images, max(20 * len(self.classes), 256))


class MachineFacts(Record):
    device: str
    line: str
    threads: int
    torch: str
    python: str


class CandidateRecord(Record):
    """A candidate's probe, its cost model (calibrated by its latest trial) and its forecast
    from the priors alone (made when the race was drawn up)."""

    family: str
    about: str
    input_size: int
    prior: int
    train_images_per_second: float
    eval_images_per_second: float
    probe_cost: Cost
    cost: Cost | None = None
    prior_forecast: Forecast | None = None

    @property
    def current_cost(self) -> Cost:
        return self.cost or self.probe_cost


class RaceCall(Record):
    """Whether a race pays, from the priors alone. Without one, `leader` (the best forecast
    for a final run of all the time left) wins outright; a race leaves the final run less
    time, which costs the best forecast `cost`, and is expected to gain `gain`: the most a
    rival may beat the best by, their forecasts' gap uncertain by `spread`
    (`imgcls.fit.forecast.expected_gain`)."""

    leader: str
    cost: float
    gain: float
    spread: float

    @property
    def pays(self) -> bool:
        return self.gain > self.cost

    def text(self) -> str:
        return (f"a race would cost the best forecast {100 * self.cost:.1f} points (less "
                f"time for the final run) and is expected to gain {100 * self.gain:.1f} "
                f"(forecasts uncertain by {100 * self.spread:.0f} points on this data)")


class Plan(Record):
    """A trial's or the final run's training: its resized stage's epochs begun, the images
    it trains on, its optimizer steps (None: head only) and the images trained on in all
    (planned, then what the paced run took)."""

    epochs: int
    images: int
    steps: int | None
    passes: float

    def text(self) -> str:
        if not self.steps:
            return f"head only on {self.images:,} images"
        return (f"{self.steps:,} steps ({self.passes / self.images:.2f} epochs of "
                f"{self.images:,} images)")


class TrialRecord(Plan):
    name: str
    candidate: str
    round: int
    allotted_seconds: float
    predicted_seconds: float
    starts_at: float  # on the fit's clock
    run_dir: str
    finished: bool = False
    score: float | None = None  # the best validation figure (None: the run had none)
    wall_seconds: float | None = None
    stop_reason: str | None = None
    forecast: Forecast | None = None  # its candidate's final score, from this trial


class FinalRecord(Plan):
    candidate: str
    planned_seconds: float
    predicted_seconds: float
    run_dir: str
    cost: Cost
    reused_trial: str | None = None  # a head-only trial it starts from (its head stage done)
    forecast: Forecast | None = None  # for the planned passes
    wall_seconds: float | None = None
    test_accuracy: float | None = None
    forecast_trained: Forecast | None = None  # for the passes the paced run took
    forecast_error: float | None = None  # test accuracy - forecast_trained


class FitRecord(Record):
    settings: Settings
    spent_seconds: float = 0.0
    data: DataFacts | None = None
    machine: MachineFacts | None = None
    candidates: dict[str, CandidateRecord] = {}
    raced: list[str] | None = None  # those the priors did not rule out
    race_call: RaceCall | None = None  # whether racing them paid, from the priors
    search_ends_at: float | None = None
    trials: list[TrialRecord] = []
    winner: str | None = None
    why: str | None = None
    final: FinalRecord | None = None
    log: list[str] = []
    done: bool = False

    def last_forecast(self, candidate: str) -> Forecast | None:
        """The candidate's latest forecast of its final score: from its last trial that
        made one, else from the priors (None: none made)."""
        made = [t.forecast for t in self.trials
                if t.candidate == candidate and t.forecast is not None]
        return made[-1] if made else self.candidates[candidate].prior_forecast

    def scored(self, candidate: str) -> list[TrialRecord]:
        """The candidate's finished trials with a score, in the order they ran."""
        return [t for t in self.trials
                if t.candidate == candidate and t.finished and t.score is not None]
