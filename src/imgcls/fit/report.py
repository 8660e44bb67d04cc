"""`imgcls fit`'s report, built from its typed record: what was raced, what each candidate
cost, scored and was forecast to reach, why the winner won, the final run's forecast beside
its result, and where the budget went; fit.md with a table, and fit.png."""

from __future__ import annotations

from pathlib import Path

from imgcls.experiment.results import markdown_table
from imgcls.fit.forecast import Forecast
from imgcls.fit.records import FinalRecord, FitRecord
from imgcls.report.plots import fit_trials, save_figure
from imgcls.tracking.io import atomic_write_text


def forecast_text(found: Forecast | None) -> str:
    """A forecast's score and the final run's passes it is for ('-': none made)."""
    if found is None:
        return "-"
    basis = "" if found.trial_score is not None else ", priors only"
    return f"{found.score:.4f} at {found.passes:.2f} passes{basis}"


def candidate_rows(record: FitRecord) -> list[dict[str, str]]:
    """One row per candidate: its measured speed, each of its trials and its forecast."""
    final = record.final
    rows = []
    for name, c in record.candidates.items():
        done = record.scored(name)
        if name == record.winner:
            verdict = "winner"
            if final is not None and final.test_accuracy is not None:
                verdict += f" (final: test {final.test_accuracy:.4f})"
        elif done:
            verdict = f"out after round {max(t.round for t in done)}"
        elif record.raced is not None and name not in record.raced:
            verdict = "not raced (forecast)"
        else:
            verdict = "not tried"
        rows.append({
            "candidate": name, "family": c.family, "input px": str(c.input_size),
            "train img/s": f"{c.train_images_per_second:.0f}",
            "trials (training: s, score)": "; ".join(
                f"r{t.round} {t.text()}: {t.wall_seconds:.0f} s, {t.score:.4f}"
                for t in done) or "-",
            "forecast": forecast_text(record.last_forecast(name)),
            "result": verdict})
    return rows


def forecast_line(final: FinalRecord | None) -> str:
    """The final run's forecast beside its result: the forecast's error, measured."""
    if final is None or final.forecast_trained is None or final.test_accuracy is None:
        return "No forecast for the final run (no learning curve of its family)."
    return (f"Forecast for the final run: {forecast_text(final.forecast)} as planned, "
            f"{forecast_text(final.forecast_trained)} as trained; test "
            f"{final.test_accuracy:.4f}: forecast error {100 * final.forecast_error:+.1f} "
            "points.")


def phase_seconds(record: FitRecord) -> dict[str, float]:
    """Seconds spent measuring, on trials, on the final run (and in between)."""
    trials = sum(t.wall_seconds or 0.0 for t in record.trials)
    final = (record.final.wall_seconds if record.final else None) or 0.0
    other = max(0.0, record.spent_seconds - trials - final)
    return {"measuring and planning": other, "trials": trials, "final run": final}


def write_fit_report(out: Path, record: FitRecord) -> Path:
    settings, final = record.settings, record.final
    budget = settings.budget_seconds
    spent = phase_seconds(record)
    points = [(t.candidate, t.round, t.wall_seconds, t.score) for t in record.trials
              if t.finished and t.score is not None]
    save_figure(fit_trials(points, spent, budget, settings.metric.replace("_", "-"),
                           f"imgcls fit {settings.data}"), out / "fit.png")
    total = sum(spent.values())
    result = "not run"
    if final is not None and final.test_accuracy is not None:
        result = (f"{final.text()}): test accuracy {final.test_accuracy:.4f}, "
                  f"{final.wall_seconds:.0f} s (predicted {final.predicted_seconds:.0f} s")
    lines = [
        f"# imgcls fit: {settings.data}, budget {budget:.0f} s",
        "",
        record.machine.line if record.machine else "",
        "",
        f"**Winner: {record.winner}**, {record.why or ''}. Final run `final/` ({result}). "
        "Rerun it: `imgcls train winner.yaml`.",
        "",
        forecast_line(final),
        "",
        f"Time: {total:.0f} s of the {budget:.0f} s budget ({100 * total / budget:.1f}%): "
        + ", ".join(f"{k} {v:.0f} s" for k, v in spent.items()) + ".",
        "",
        markdown_table(candidate_rows(record)),
        "![trials](fit.png)",
        "",
        "## What happened",
        "",
        *[f"- {line}" for line in record.log],
        "",
    ]
    return atomic_write_text(out / "fit.md", "\n".join(lines))
