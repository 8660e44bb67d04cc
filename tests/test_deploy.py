"""Using trained runs: predict (files, folders, globs, corrupt files, CSV/JSON output, the
Python API) and export (ONNX and TorchScript round trips, verification)."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import imgcls
from conftest import LEARN_SEED, SMALL_CNN, at_least, make_image_folder, tiny_config
from imgcls.cli import app
from imgcls.deploy import export as export_module
from imgcls.deploy.export import ExportError, export_run, run_exported
from imgcls.train import train

runner = CliRunner(env={"COLUMNS": "200"})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small CNN with BatchNorm that learned 3 pattern classes, and its image folder
    (40 per class: 30 test images, one is 0.033 of the accuracy)."""
    folder = make_image_folder(tmp_path_factory.mktemp("data") / "images", classes=3,
                               per_class=40, size=24, seed=LEARN_SEED)
    cfg = tiny_config(seed=LEARN_SEED, data={"path": str(folder), "image_size": 24},
                      model=SMALL_CNN, train={"epochs": 4})
    run, summary = train(cfg, tmp_path_factory.mktemp("runs") / "run")
    at_least(summary["test_accuracy"], 0.8, "test accuracy", summary["images"]["test"])
    return run.path, folder


@pytest.fixture()
def with_corrupt(trained, tmp_path):
    """Some of the run's images (any size: files are fitted like training data), one corrupt
    file and one non-image."""
    _, folder = trained
    target = tmp_path / "mixed"
    target.mkdir()
    originals = sorted(p for p in folder.rglob("*") if p.is_file())[::3]  # 40 of 120
    for p in originals:
        (target / f"{p.parent.name}__{p.name}").write_bytes(p.read_bytes())
    (target / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    (target / "notes.txt").write_text("not an image")
    return target, len(originals)


def test_predict_skips_corrupt_files_and_finds_the_classes(trained, with_corrupt):
    run, _ = trained
    folder, good = with_corrupt
    result = imgcls.load(run).predict([folder], top_k=2)
    assert len(result.items) == good
    assert len(result.skipped) == 1 and "broken.jpg" in result.skipped[0]
    right = sum(p.classes[0] == p.source.rsplit("/", 1)[1].split("__")[0] for p in result.items)
    at_least(right / good, 0.8, "predicted classes right", good)
    for p in result.items:
        assert len(p.classes) == 2 and p.probabilities[0] >= p.probabilities[1]
        assert 0 < sum(p.probabilities) <= 1 + 1e-6


def test_predict_takes_globs_pil_images_and_arrays(trained, with_corrupt):
    run, _ = trained
    folder, good = with_corrupt
    predictor = imgcls.load(run)
    by_glob = predictor.predict([str(folder / "*.png"), str(folder / "*.jpg")], top_k=1)
    assert len(by_glob.items) == good and len(by_glob.skipped) == 1
    files = sorted(p for p in folder.iterdir() if p.suffix in (".png", ".jpg")
                   and p.name != "broken.jpg")
    pil = [Image.open(f).convert("RGB") for f in files[:3]]
    arrays = [np.asarray(im) for im in pil]
    in_memory = predictor.predict(pil + arrays, top_k=1)
    assert [p.source for p in in_memory.items] == [f"#{i}" for i in range(6)]
    from_files = {p.source: p for p in predictor.predict(files[:3], top_k=1).items}
    for i, f in enumerate(files[:3]):
        assert in_memory.items[i].classes == from_files[str(f)].classes
        assert in_memory.items[i].probabilities == pytest.approx(
            from_files[str(f)].probabilities, abs=1e-6)
    missing = predictor.predict(["no/such/*.jpg"])
    assert not missing.items and "no/such/*.jpg" in missing.skipped[0]


def test_predict_cli_csv_and_json(trained, with_corrupt):
    run, _ = trained
    folder, good = with_corrupt
    result = runner.invoke(app, ["predict", str(run), str(folder), "--format", "csv",
                                 "--top-k", "2", "--tta", "mirror"])
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == ["image", "rank", "class", "probability"]
    assert len(rows) == 1 + 2 * good
    assert {r[1] for r in rows[1:]} == {"1", "2"}
    assert "skipped" in result.stderr and "broken.jpg" in result.stderr
    api = imgcls.load(run).predict([folder], top_k=2, tta="mirror")
    assert list(csv.reader(io.StringIO(api.to_csv()))) == rows  # the command prints the API's
    result = runner.invoke(app, ["predict", str(run), str(folder), "--format", "json"])
    assert result.stdout == imgcls.load(run).predict([folder], top_k=3).to_json() + "\n"
    records = json.loads(result.stdout)
    assert len(records) == good
    assert set(records[0]) == {"image", "top"}
    assert set(records[0]["top"][0]) == {"class", "probability"}
    assert len(records[0]["top"]) == 3  # --top-k 3 by default, 3 classes
    bad = runner.invoke(app, ["predict", str(run), str(folder), "--format", "xml"])
    assert bad.exit_code == 2 and "'table', 'csv', 'json'" in bad.output


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_round_trip(trained, tmp_path, fmt):
    run, folder = trained
    out = tmp_path / f"model.{fmt}"
    path, info = export_run(run, fmt, out)
    assert path == out and out.is_file()
    sidecar = json.loads((tmp_path / f"model.{fmt}.json").read_text())
    assert sidecar["classes"] == ["class_0", "class_1", "class_2"]
    assert sidecar["input"]["dtype"] == "uint8" and sidecar["input"]["layout"] == "NHWC"
    assert sidecar["verification"]["passed"] and sidecar["verification"]["images"] > 10
    assert sidecar["verification"]["top1_agreement"] == 1.0
    # the exported file alone classifies like imgcls, for any batch size
    predictor = imgcls.load(run)
    files = sorted(p for p in folder.rglob("*.png"))[:7]
    pixels, _, _ = predictor.read(files)
    reference = predictor.probabilities(pixels).numpy()
    exported = run_exported(out, fmt)
    for batch in (pixels[:1], pixels):
        logits = exported(batch)
        assert logits.shape == (len(batch), 3)
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        np.testing.assert_allclose(probs, reference[:len(batch)], atol=1e-4)


def test_export_that_does_not_match_keeps_no_file(trained, tmp_path, monkeypatch):
    run, _ = trained

    def drifting(path, fmt):
        real = run_exported(path, fmt)
        return lambda batch: real(batch) + 0.01

    monkeypatch.setattr(export_module, "run_exported", drifting)
    out = tmp_path / "model.onnx"
    with pytest.raises(ExportError, match="does not match PyTorch"):
        export_run(run, "onnx", out, verify_images=16)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_export_cli_and_bench(trained, tmp_path):
    run, _ = trained
    result = runner.invoke(app, ["export", str(run), "--format", "torchscript", "--out",
                                 str(tmp_path / "m.pt"), "--verify", "all"])
    assert result.exit_code == 0, result.output
    assert "top-1 agreement 100.00%" in result.output
    bad = runner.invoke(app, ["export", str(run), "--format", "tflite"])
    assert bad.exit_code == 2 and "'onnx', 'torchscript'" in bad.output
    bench = runner.invoke(app, ["predict", str(run), "--bench", "--batch-size", "16"])
    assert bench.exit_code == 0, bench.output
    for engine in ("pytorch", "onnx", "torchscript"):
        assert f"{engine}: " in bench.output
