"""A sweep logged to MLflow and compared there: experiments/flowers-augment.yaml (2 variants
x 2 seeds on flowers5-128) run by `imgcls sweep --mlflow` against a local MLflow server
started here; the parent run's figures set beside `imgcls compare`'s (they must be equal),
and MLflow's comparison of the four runs photographed with headless Chromium (apt install
chromium) for docs/tracking.md.

    python benchmarks/mlflow_sweep.py [--shots docs/tracking]

Writes benchmarks/results/mlflow_sweep.json and, where Chromium is installed, the UI's run
comparison as a PNG in --shots.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
from pathlib import Path

from imgcls.experiment.results import experiment_groups
from imgcls.hardware import machine_line
from imgcls.tracking.io import atomic_write_json
from imgcls.tracking.mlflow_client import metric_key
from imgcls.tracking.mlflow_server import LocalServer

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = ROOT / "experiments" / "flowers-augment.yaml"
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def screenshot(url: str, target: Path, size: str = "1600,1000") -> str | None:
    """`url` rendered by headless Chromium into `target`; None, or why not."""
    browser = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if browser is None:
        return "no Chromium on PATH (apt install chromium)"
    done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                           "--hide-scrollbars", f"--window-size={size}",
                           "--virtual-time-budget=20000", f"--screenshot={target}", url],
                          capture_output=True, text=True, timeout=120)
    return None if target.is_file() else f"Chromium failed: {done.stderr[-500:]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", type=Path, default=ROOT / "docs" / "tracking")
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks" / "results" / "mlflow_sweep.json")
    parser.add_argument("--keep", type=Path, help="keep the server's folder and the runs here")
    args = parser.parse_args()
    from mlflow.tracking import MlflowClient

    work = args.keep or Path(tempfile.mkdtemp(prefix="imgcls-mlflow-sweep-"))
    exp_dir = work / "runs" / "flowers-augment"
    with LocalServer(work / "mlflow") as server:
        subprocess.run([sys.executable, "-m", "imgcls.cli", "sweep", str(EXPERIMENT),
                        "--out", str(exp_dir), "--mlflow", server.uri], check=True, cwd=ROOT)
        plan, groups = experiment_groups(exp_dir)  # what `imgcls compare` prints
        parent_id = json.loads((exp_dir / "mlflow.json").read_text())["run_id"]
        client = MlflowClient(server.uri)
        parent = client.get_run(parent_id)
        children = client.search_runs([parent.info.experiment_id],
                                      f"tags.mlflow.parentRunId = '{parent_id}'")
        metric = plan["metric"]
        rows = {}
        for g in groups:
            logged = parent.data.metrics.get(metric_key(f"{g.name}.{metric}.mean"))
            rows[g.name] = {"compare_mean": g.spread.mean, "compare_std": g.spread.std,
                            "mlflow_mean": logged,
                            "mlflow_std": parent.data.metrics.get(
                                metric_key(f"{g.name}.{metric}.std")),
                            "runs": g.spread.n}
        shots = {}
        args.shots.mkdir(parents=True, exist_ok=True)
        experiment_id = parent.info.experiment_id
        ids = json.dumps([c.info.run_id for c in children])
        pages = {"compare": (f"{server.uri}/#/compare-runs?runs={urllib.parse.quote(ids)}"
                             f"&experiments={urllib.parse.quote(json.dumps([experiment_id]))}",
                             "1600,1800")}
        for name, (url, size) in pages.items():
            target = args.shots / f"mlflow-{name}.png"
            shots[name] = screenshot(url, target, size) or str(target.relative_to(ROOT))
    equal = all(r["mlflow_mean"] is not None and abs(r["mlflow_mean"] - r["compare_mean"])
                < 1e-9 for r in rows.values())
    result = {"machine": machine_line("train.amp auto"), "experiment": str(EXPERIMENT.name),
              "metric": metric, "children": len(children), "variants": rows,
              "mlflow_equals_compare": equal, "screenshots": shots}
    atomic_write_json(args.out, result)
    print(json.dumps(result, indent=1))
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
