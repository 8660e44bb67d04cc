"""`imgcls fit`'s report: what was tried, what each candidate cost and scored, why the
winner won, and where the budget went; fit.md with a table, and fit.png."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from imgcls.experiment.results import markdown_table
from imgcls.report.plots import fit_trials, save_figure
from imgcls.tracking.io import atomic_write_text


def plan_text(plan: dict[str, Any]) -> str:
    """A trial's or the final run's training: its resized stage's steps and epochs."""
    if not plan.get("steps"):
        return f"head only on {plan['images']:,} images"
    return (f"{plan['steps']:,} steps ({plan['passes'] / plan['images']:.2f} epochs of "
            f"{plan['images']:,} images)")


def candidate_rows(state: dict[str, Any]) -> list[dict[str, str]]:
    """One row per candidate: its measured speed and each of its trials."""
    final = state.get("final") or {}
    rows = []
    for name, c in state["candidates"].items():
        trials = [t for t in state["trials"] if t["candidate"] == name]
        done = [t for t in trials if t.get("score") is not None]
        if name == state.get("winner"):
            verdict = "winner"
        elif done:
            verdict = f"out after round {max(t['round'] for t in done)}"
        else:
            verdict = "not tried"
        rows.append({
            "candidate": name, "family": c["family"], "input px": str(c["input_size"]),
            "train img/s": f"{c['train_images_per_second']:.0f}",
            "forecast": _forecast_text(done[-1].get("forecast") if done
                                       else c.get("prior_forecast")),
            "trials (training: s, score)": "; ".join(
                f"r{t['round']} {plan_text(t)}: {t['wall_seconds']:.0f} s, {t['score']:.4f}"
                for t in done) or "-",
            "result": verdict + (f" (final: test {final['test_accuracy']:.4f})"
                                 if name == state.get("winner") and "test_accuracy" in final
                                 else "")})
    return rows


def _forecast_text(forecast: dict[str, Any] | None) -> str:
    """A forecast's score and the final run's passes it is for ('-': none made)."""
    if not forecast:
        return "-"
    basis = "" if forecast.get("trial_score") is not None else ", priors only"
    return f"{forecast['score']:.4f} at {forecast['passes']:.2f} passes{basis}"


def forecast_line(final: dict[str, Any]) -> str:
    """The final run's forecast beside its result: the forecast's error, measured."""
    if not final.get("forecast_trained"):
        return "No forecast for the final run (no learning curve of its family)."
    return (f"Forecast for the final run: {_forecast_text(final['forecast'])} as planned, "
            f"{_forecast_text(final['forecast_trained'])} as trained; test "
            f"{final['test_accuracy']:.4f}: forecast error "
            f"{100 * final['forecast_error']:+.1f} points.")


def phase_seconds(state: dict[str, Any]) -> dict[str, float]:
    """Seconds spent measuring, on trials, on the final run (and in between)."""
    trials = sum(t.get("wall_seconds", 0.0) for t in state["trials"])
    final = (state.get("final") or {}).get("wall_seconds", 0.0)
    other = max(0.0, state["spent_seconds"] - trials - final)
    return {"measuring and planning": other, "trials": trials, "final run": final}


def write_fit_report(out: Path, state: dict[str, Any]) -> Path:
    budget = state["settings"]["budget_seconds"]
    final = state.get("final") or {}
    spent = phase_seconds(state)
    metric = state["settings"]["metric"]
    save_figure(fit_trials(state["trials"], spent, budget, metric.replace("_", "-"),
                           f"imgcls fit {state['settings']['data']}"), out / "fit.png")
    total = sum(spent.values())
    lines = [
        f"# imgcls fit: {state['settings']['data']}, budget {budget:.0f} s",
        "",
        f"{state['machine']['line']}",
        "",
        f"**Winner: {state.get('winner')}**, {state.get('why', '')}. Final run `final/` "
        f"({plan_text(final) if final else 'not run'}): test accuracy "
        f"{final.get('test_accuracy', float('nan')):.4f}, "
        f"{final.get('wall_seconds', 0):.0f} s (predicted {final.get('predicted_seconds', 0):.0f}"
        " s). Rerun it: `imgcls train winner.yaml`.",
        "",
        forecast_line(final),
        "",
        f"Time: {total:.0f} s of the {budget:.0f} s budget ({100 * total / budget:.1f}%): "
        + ", ".join(f"{k} {v:.0f} s" for k, v in spent.items()) + ".",
        "",
        markdown_table(candidate_rows(state)),
        "![trials](fit.png)",
        "",
        "## What happened",
        "",
        *[f"- {line}" for line in state["log"]],
        "",
    ]
    return atomic_write_text(out / "fit.md", "\n".join(lines))
