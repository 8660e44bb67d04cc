"""The checks of imgcls's CUDA path in one command, for the day a GPU is there (minutes of
it, not hours): one JSON with the machine, training images/s of imgcls's defaults against a
bare loop, the fast recipe on CIFAR-10 beside airbench94 as published, a one-process DDP run
over NCCL and a 2-minute `imgcls fit`.

    python benchmarks/gpu_check.py --out benchmarks/results/gpu_check-h100.json \
        [--cifar ../shared/datasets/cifar10-jpeg.tar.gz] \
        [--photos ../shared/datasets/flower_photos-256.tar.gz]
    python benchmarks/gpu_check.py --dry-run --out /tmp/gpu_check.json   # any CPU, toy sizes

Each part runs in its own process under its own time cap (all of them within 8 minutes),
and a failing part (a CUDA error, a missing package, a timeout) is recorded with its error
while the next part runs. `--dry-run` runs every part at toy size on generated images on
whatever device there is, so that the script itself is tested in the suite. The peer
(airbench94) needs `benchmarks/.airbench` (benchmarks/peer_airbench.py installs it there;
a machine without network needs it copied in); without it that part says so.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FULL_CAPS = {"machine": 30, "throughput": 90, "fast_recipe": 240, "ddp": 60, "fit": 170}
DRY_CAPS = {"machine": 30, "throughput": 60, "fast_recipe": 90, "ddp": 60, "fit": 90}


def _python(*args: str, cap: float, cwd: Path = ROOT) -> str:
    """Run a Python command of this interpreter; its output (a CalledProcessError or
    TimeoutExpired carries what it printed)."""
    done = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=cap, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if done.returncode:
        raise RuntimeError(f"exit {done.returncode}: {(done.stderr or done.stdout)[-1500:]}")
    return done.stdout


def machine(_: argparse.Namespace, work: Path, cap: float) -> dict[str, Any]:
    code = ("import json, torch; from imgcls.hardware import machine_line; "
            "cuda = torch.cuda.is_available(); p = torch.cuda.get_device_properties(0) "
            "if cuda else None; print(json.dumps({'line': machine_line(''), 'torch': "
            "torch.__version__, 'cuda': torch.version.cuda, 'gpu': p.name if p else None, "
            "'gpu_memory_gib': round(p.total_memory / 2**30, 1) if p else None, "
            "'bf16': cuda and torch.cuda.is_bf16_supported()}))")
    return json.loads(_python("-c", code, cap=cap).strip().splitlines()[-1])


def throughput(args: argparse.Namespace, work: Path, cap: float) -> dict[str, Any]:
    """benchmarks/throughput.py: imgcls's default settings (AMP and compile as auto picks)
    against the bare float32 loop, medians of its rounds."""
    steps, rounds, batch = ("2", "2", "32") if args.dry_run else ("20", "5", "512")
    out = _python(str(HERE / "throughput.py"), "--data", args.cifar, "--variants", "default",
                  "--steps", steps, "--rounds", rounds, "--batch-size", batch,
                  "--out", str(work / "throughput.txt"), cap=cap)
    figures = {}
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        if key.endswith(("_images_per_second", "_ratio")):
            figures[key] = float(value)
    return figures


def fast_recipe(args: argparse.Namespace, work: Path, cap: float) -> dict[str, Any]:
    """The fast recipe (1 seed) and, where the peer is installed, airbench94 as published,
    on the same images: benchmarks/peer_airbench.py."""
    if not (HERE / ".airbench" / "airbench").is_dir():
        return {"skipped": "airbench is not in benchmarks/.airbench (peer_airbench.py "
                           "installs it; copy it in where there is no network)"}
    extra = (["--peer-epochs", "0.2", "--set", "data.train_subset=400", "--set",
              "train.epochs=1"] if args.dry_run else [])
    _python(str(HERE / "peer_airbench.py"), "--seeds", "0", "--data", args.cifar, "--out",
            str(work / "peer"), "--work", str(work / "peer-work"), *extra, cap=cap)
    peer = json.loads((work / "peer.json").read_text())
    return {**peer["summary"], "near_chance": [f"{f['side']} seed {f['seed']}: "
                                               f"{f['test_accuracy']:.4f}"
                                               for f in peer.get("failed", [])]}


def ddp(args: argparse.Namespace, work: Path, cap: float) -> dict[str, Any]:
    """One process under torchrun: the process group (NCCL on CUDA, gloo on a CPU), the
    replica and its all-reduce, and a test accuracy at the end."""
    sets = ["data.source=folder", f"data.path={args.cifar}", "train.epochs=1",
            "train.tensorboard=false"] + (["data.train_subset=400"] if args.dry_run else [])
    run_dir = work / "ddp-run"
    _python("-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1", "-m",
            "imgcls.cli", "train", "configs/cifar10-fast.yaml", "--run-dir", str(run_dir),
            *[a for s in sets for a in ("--set", s)], cap=cap)
    summary = json.loads((run_dir / "summary.json").read_text())
    return {key: summary.get(key) for key in ("processes", "test_accuracy", "wall_seconds",
                                              "train_images_per_second", "precision")}


def fit(args: argparse.Namespace, work: Path, cap: float) -> dict[str, Any]:
    """`imgcls fit` with a 2-minute budget (12 s in a dry run)."""
    budget = "12s" if args.dry_run else "2m"
    out = work / "fit"
    _python("-m", "imgcls.cli", "fit", args.photos, "--budget", budget, "--out", str(out),
            cap=cap)
    record = json.loads((out / "fit.json").read_text())
    final = record["final"]
    return {"budget": budget, "spent_seconds": record["spent_seconds"],
            "winner": record["winner"], "test_accuracy": final.get("test_accuracy"),
            "forecast_error": final.get("forecast_error")}


PARTS = {"machine": machine, "throughput": throughput, "fast_recipe": fast_recipe,
         "ddp": ddp, "fit": fit}


def toy_data(work: Path) -> Path:
    """10 classes x 110 generated 32 px training images (the peer's one batch of 1,024 needs
    them) and x 10 test images: what the dry run trains on in place of CIFAR-10 and the
    photos."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    root = work / "toy"
    for split, count in (("train", 110), ("test", 10)):
        for c in range(10):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            colour = rng.integers(0, 256, 3)
            for i in range(count):
                noise = rng.integers(0, 80, (32, 32, 3))
                image = np.clip(noise + colour * 0.7, 0, 255).astype(np.uint8)
                Image.fromarray(image).save(folder / f"{i}.png")
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cifar",
                        default=str(ROOT.parent / "shared/datasets/cifar10-jpeg.tar.gz"))
    parser.add_argument("--photos",
                        default=str(ROOT.parent / "shared/datasets/flower_photos-256.tar.gz"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/imgcls-gpu-check"))
    parser.add_argument("--dry-run", action="store_true",
                        help="every part at toy size on generated images (any device)")
    parser.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS))
    args = parser.parse_args()
    from imgcls.tracking.io import atomic_write_json

    args.work.mkdir(parents=True, exist_ok=True)
    if args.dry_run:
        args.cifar = args.photos = str(toy_data(args.work))
    caps = DRY_CAPS if args.dry_run else FULL_CAPS
    result: dict[str, Any] = {"dry_run": args.dry_run, "parts": {}}
    start = time.perf_counter()
    for name in args.parts:
        began = time.perf_counter()
        try:
            part = {"ok": True, "result": PARTS[name](args, args.work, caps[name])}
        except subprocess.TimeoutExpired:
            part = {"ok": False, "error": f"over its {caps[name]} s cap"}
        except Exception as exc:  # noqa: BLE001 - recorded; the next part runs
            part = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[-2000:]}
        part["seconds"] = round(time.perf_counter() - began, 1)
        result["parts"][name] = part
        result["seconds"] = round(time.perf_counter() - start, 1)
        atomic_write_json(args.out, result)  # what finished is kept if a later part hangs
        print(f"{name}: {'ok' if part['ok'] else 'FAILED'} in {part['seconds']} s", flush=True)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
