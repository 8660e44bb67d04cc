"""Run folders across versions and bad files: a folder written by imgcls 0.1.0 before the
restructuring (commit 010fe66, kept in tests/fixtures) still loads, predicts and resumes
exactly; callback state is restored by name; unusable checkpoints are one clear error."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import imgcls
from conftest import StopAt, make_image_folder, pattern_images, tiny_config
from imgcls.cli import app
from imgcls.tracking.run import CheckpointError, Preprocessing, Run
from imgcls.train import load_model, train
from imgcls.train.callbacks import Callback
from imgcls.train.setup import create_callbacks

FIXTURE = Path(__file__).parent / "fixtures" / "run-010fe66"


@pytest.fixture
def old_run(tmp_path, monkeypatch):
    """A copy of the old run folder (the fixture itself is never written), with its
    training images regenerated where its config expects them (`images`, cwd-relative)."""
    monkeypatch.chdir(tmp_path)
    make_image_folder(tmp_path / "images", classes=3, per_class=12, size=24)
    return Path(shutil.copytree(FIXTURE, tmp_path / "run"))


def predictions(run_dir: Path) -> list[list[float]]:
    expected = json.loads((FIXTURE / "expected_predictions.json").read_text())["images"]
    probe = pattern_images(np.array(expected["labels"]), expected["size"], expected["seed"])
    result = imgcls.load(run_dir).predict(list(probe), top_k=3)
    return [p.probabilities for p in result.items]


def expected_predictions() -> list[list[float]]:
    saved = json.loads((FIXTURE / "expected_predictions.json").read_text())["predictions"]
    return [p["probabilities"] for p in saved]


def test_an_old_run_folder_loads_and_predicts_as_it_did(old_run):
    pre = Run(old_run).preprocessing()
    assert pre.classes == ["class_0", "class_1", "class_2"] and pre.input_size == 24
    assert np.allclose(predictions(old_run), expected_predictions(), atol=1e-5)


def test_an_older_preprocessing_record_gets_its_defaults_once(old_run):
    path = old_run / "preprocess.json"
    raw = json.loads(path.read_text())
    for key in ("input_size", "interpolation", "resize", "skipped_files"):
        del raw[key]
    path.write_text(json.dumps(raw))
    pre = Run(old_run).preprocessing()
    assert (pre.input_size, pre.interpolation, pre.resize) == (24, "bilinear", "center_crop")
    assert np.allclose(predictions(old_run), expected_predictions(), atol=1e-5)
    path.write_text(json.dumps({"mean": [0.5] * 3}))
    with pytest.raises(ValueError, match=r"preprocess.json: not an imgcls preprocessing "
                                         r"record \(no classes, image_size, std\)"):
        Run(old_run).preprocessing()


def test_an_old_run_resumes_from_its_checkpoint(old_run):
    """Its last.pt stores callback state as a list, by position: still restored."""
    assert isinstance(torch.load(old_run / "checkpoints" / "last.pt",
                                 weights_only=True)["callbacks"], list)
    before = json.loads((old_run / "summary.json").read_text())
    _, summary = train(resume=old_run)
    assert summary["epochs"] == before["epochs"] and summary["best_epoch"] == before["best_epoch"]
    assert summary["test_loss"] == pytest.approx(before["test_loss"], rel=1e-5)


def test_preprocessing_round_trips():
    record = Preprocessing(["a", "b"], 32, "pad", 64, "bicubic", [0.1] * 3, [0.2] * 3, ["x"])
    assert Preprocessing.from_dict(record.to_dict(), "here") == record


# -- callbacks by name ---------------------------------------------------------------------
class Counter(Callback):
    key = "counter"

    def __init__(self) -> None:
        self.epochs: list[int] = []

    def on_epoch_end(self, trainer, metrics) -> None:
        self.epochs.append(metrics["epoch"])

    def state_dict(self) -> dict:
        return {"epochs": list(self.epochs)}

    def load_state_dict(self, state: dict) -> None:
        self.epochs = list(state["epochs"])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("data") / "images", classes=3,
                             per_class=12, size=24)


def test_callback_state_is_restored_by_key_when_callbacks_change(folder, tmp_path):
    cfg = tiny_config(data={"path": str(folder), "image_size": 24},
                      train={"epochs": 3, "tensorboard": False})
    with pytest.raises(KeyboardInterrupt):  # epoch 2 is interrupted: last.pt holds epoch 1
        train(cfg, tmp_path / "run", callbacks=[Counter(), StopAt(2)])
    saved = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert saved["epoch"] == 1 and saved["callbacks"]["counter"] == {"epochs": [1]}
    assert {"metrics_log", "progress", "checkpoint", "counter", "stop_at"} <= set(
        saved["callbacks"])
    counter, added = Counter(), Counter()
    added.key = "added"  # a callback the interrupted run did not have starts fresh
    _, summary = train(resume=tmp_path / "run", callbacks=[added, StopAt(99), counter])
    assert counter.epochs == [1, 2, 3] and added.epochs == [2, 3] and summary["epochs"] == 3


def test_two_callbacks_may_not_share_a_key(folder):
    cfg = tiny_config(data={"path": str(folder), "image_size": 24})
    with pytest.raises(ValueError, match="share the state key"):
        create_callbacks(cfg, True, [Counter(), Counter()])


# -- checkpoints that cannot be used -------------------------------------------------------
class RunsCode:
    """A pickle that would create a file when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def eval_error(run_dir: Path) -> str:
    result = CliRunner().invoke(app, ["eval", str(run_dir)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines and lines[0].startswith("error:"), result.output
    return " ".join(result.output.split())  # rich may wrap the one message


def test_a_checkpoint_that_would_run_code_is_refused_not_run(old_run, tmp_path):
    best = old_run / "checkpoints" / "best.pt"
    marker = tmp_path / "code-ran"
    with best.open("wb") as f:
        pickle.dump({"model": RunsCode(marker)}, f)
    message = eval_error(old_run)
    assert "best.pt: refused to load" in message and "could run code" in message
    assert not marker.exists()
    with pytest.raises(CheckpointError):
        load_model(old_run)


@pytest.mark.parametrize("damage,words", [
    ("truncate", "not a readable PyTorch checkpoint"),
    ("foreign", "not an imgcls checkpoint"),
    ("other_model", "does not fit the run's model flowers_cnn"),
    ("missing", "no such checkpoint"),
])
def test_unusable_checkpoints_are_one_line_naming_the_file(old_run, damage, words):
    best = old_run / "checkpoints" / "best.pt"
    if damage == "truncate":
        best.write_bytes(best.read_bytes()[:1000])
    elif damage == "foreign":
        torch.save({"weights": torch.ones(3)}, best)
    elif damage == "other_model":
        torch.save({"model": {"conv.weight": torch.ones(3)}}, best)
    else:
        best.unlink()
    message = eval_error(old_run)
    assert str(best) in message.replace(" ", "") or "best.pt" in message
    assert words in message
