"""imgcls installed from its wheel, outside the repository: the shipped recipes and the
learning-curve priors are package data, so `imgcls train PATH` and `imgcls fit` start
anywhere."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_image_folder

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """The wheel built from a copy of this checkout's sources (a build folder left in the
    checkout could hold stale modules), installed without its dependencies (this
    interpreter has them) into a folder of its own; the environment that imports it from
    there."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(ROOT / "src", source / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps",
                    "--no-build-isolation", "-q", "-w", str(work / "dist")], check=True,
                   cwd=work)
    wheel = next((work / "dist").glob("imgcls-*.whl"))
    site = work / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(site), str(wheel)], check=True, cwd=work)
    return site, {**os.environ, "PYTHONPATH": str(site)}


def _imgcls(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "imgcls.cli", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_the_wheel_holds_the_recipes_and_priors(installed, tmp_path):
    site, env = installed
    code = ("import imgcls; from imgcls.recipes import CONFIGS; "
            "from imgcls.fit.forecast import PRIORS, shipped_curves; "
            "print(imgcls.__file__); print(sorted(p.name for p in CONFIGS.glob('*.yaml'))); "
            "print(sorted({c.family for c in shipped_curves()}))")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path,
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0].startswith(str(site)), out  # the wheel's copy, not the checkout's
    assert "cifar10-fast.yaml" in out[1] and "finetune-folder.yaml" in out[1]
    assert out[2] == "['scratch', 'transfer']"


def test_train_and_fit_from_another_directory(installed, tmp_path):
    _, env = installed
    data = make_image_folder(tmp_path / "images", classes=3, per_class=30, size=16,
                             mixed_sizes=False, seed=5)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    train = _imgcls(["train", str(data), "--set", "train.epochs=1", "--run-dir", "run"],
                    env, elsewhere)
    assert train.returncode == 0, train.stdout + train.stderr
    assert json.loads((elsewhere / "run" / "summary.json").read_text())["test_accuracy"] >= 0
    fit = _imgcls(["fit", str(data), "--budget", "15s", "--out", "fit",
                   "--candidates", "fastnet94-16px"], env, elsewhere)
    assert fit.returncode == 0, fit.stdout + fit.stderr
    state = json.loads((elsewhere / "fit" / "fit.json").read_text())
    assert state["done"] and state["final"]["forecast"]["score"] > 0
