"""`imgcls fit DATA --budget`: the best classifier this machine can train on this data in
the time given. The flow, one module each: `candidates` (the shipped recipes at the sizes
the data allows) -> `cost` (what a run of each takes here) -> `forecast` (what each would
score at the end of the final run) -> `pipeline` (measure, race, train the winner), with
`pacing` fitting every run to its seconds, `state` keeping fit.json and `report` writing
fit.md."""

from imgcls.fit.pipeline import BudgetTooSmall, FitResult, fit

__all__ = ["BudgetTooSmall", "FitResult", "fit"]
