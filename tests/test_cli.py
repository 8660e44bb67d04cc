import logging

import pytest
from typer.testing import CliRunner

from conftest import make_image_folder
from imgcls.cli import app
from imgcls.log import ROOT, configure_logging

runner = CliRunner(env={"COLUMNS": "200"})  # wide enough that tables keep whole words


def test_config_errors_exit_2_with_the_key(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("train:\n  epochz: 3\n")
    result = runner.invoke(app, ["train", str(config)])
    assert result.exit_code == 2
    assert "train.epochz" in result.output and "did you mean 'epochs'" in result.output
    assert not (tmp_path / "runs").exists()


def test_train_eval_runs_and_data_info(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = make_image_folder(tmp_path / "images", classes=3, per_class=16, size=24)
    (data / "class_0" / "bad.png").write_bytes(b"nope")
    config = tmp_path / "c.yaml"
    config.write_text(f"""
name: cli
data: {{source: folder, path: {data}, image_size: 24, val_fraction: 0.2}}
model: {{name: flowers_cnn, args: {{widths: [8, 8, 8], hidden: 16}}}}
optim: {{name: adamw, lr: 0.005}}
train: {{epochs: 2, batch_size: 16, tensorboard: false}}
""")
    info = runner.invoke(app, ["data", "info", str(config)])
    assert info.exit_code == 0, info.output
    assert "class_0" in info.output and "skipped 1 unreadable" in info.output
    assert "bad.png" in info.output

    result = runner.invoke(app, ["train", str(config), "--set", "train.epochs=1",
                                 "--run-dir", "runs/one"])
    assert result.exit_code == 0, result.output
    assert "test accuracy" in result.output

    evaluated = runner.invoke(app, ["eval", "runs/one", "--data", str(data)])
    assert evaluated.exit_code == 0, evaluated.output
    assert '"images": 48' in evaluated.output  # every readable image of the folder

    listed = runner.invoke(app, ["runs"])
    assert listed.exit_code == 0 and "one" in listed.output and "completed" in listed.output


def test_resume_rejects_config_and_set(tmp_path):
    result = runner.invoke(app, ["train", "c.yaml", "--resume", str(tmp_path)])
    assert result.exit_code == 2 and "--resume takes the run's own config" in result.output


@pytest.mark.parametrize("args,valid", [
    (["eval", "RUN", "--tta", "flip"], "'none', 'mirror', 'mirror_translate'"),
    (["eval", "RUN", "--checkpoint", "worst"], "'best', 'last'"),
    (["predict", "RUN", "x.png", "--format", "xml"], "'table', 'csv', 'json'"),
    (["export", "RUN", "--format", "tflite"], "'onnx', 'torchscript'"),
    (["export", "RUN", "--verify", "some"], "a number of images, or 'all'"),
])
def test_bad_option_values_are_refused_naming_the_valid_ones(tmp_path, args, valid):
    result = runner.invoke(app, [str(tmp_path) if a == "RUN" else a for a in args])
    assert result.exit_code == 2 and valid in result.output, result.output


@pytest.mark.parametrize("args,message", [
    (["train", "nope.yaml"], "nope.yaml: config file not found"),
    (["data", "info", "--set", "model.name=nope"], "unknown model 'nope'"),
    (["eval", "nope"], "nope: not a run folder"),
    (["compare", ".", "--metric", "speed"], "--metric 'speed': valid: test_accuracy"),
])
def test_user_errors_are_one_error_line_on_stderr(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and message in result.stderr, result.output
    assert result.stderr.startswith("error: ") and "Traceback" not in result.output
    assert not result.stdout
    if args[0] != "data":  # a config with several problems lists one per line
        assert result.stderr.count("\n") == 1


def test_sweep_messages_go_to_stderr_and_quiet_silences_them(tmp_path):
    data = make_image_folder(tmp_path / "images", classes=3, per_class=10, size=24)
    experiment = tmp_path / "e.yaml"
    experiment.write_text(f"""
name: exp
base:
  data: {{source: folder, path: {data}, image_size: 24, val_fraction: 0}}
  model: {{name: flowers_cnn, args: {{widths: [8, 8, 8], hidden: 16}}}}
  train: {{epochs: 1, batch_size: 16, tensorboard: false, threads: 1}}
""")
    out = tmp_path / "out"
    result = runner.invoke(app, ["sweep", str(experiment), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "exp: 1 variants x 1 seeds = 1 runs" in result.stderr
    assert "start exp/seed-0" in result.stderr and "finished exp/seed-0" in result.stderr
    assert "exp: test_accuracy" in result.stdout and "start " not in result.stdout
    assert "| exp | 1 |" in (out / "results.md").read_text()
    quiet = runner.invoke(app, ["--quiet", "sweep", str(experiment), "--out", str(out)])
    assert quiet.exit_code == 0 and not quiet.stderr, quiet.output
    assert "exp: test_accuracy" in quiet.stdout  # the result still shows
    both = runner.invoke(app, ["-q", "-v", "sweep", str(experiment)])
    assert both.exit_code == 2 and "not both" in both.output


def test_configure_logging_twice_keeps_one_handler():
    logger = configure_logging(logging.WARNING)
    handlers = list(logger.handlers)
    assert configure_logging() is logger and logger.handlers == handlers
    assert logging.getLogger(ROOT).level == logging.INFO


def test_augment_preview_draws_one_block_per_op_or_variant(tmp_path):
    from PIL import Image

    data = make_image_folder(tmp_path / "images", classes=3, per_class=8, size=24)
    config = tmp_path / "c.yaml"
    config.write_text(f"""
data: {{source: folder, path: {data}, image_size: 24}}
augment: {{ops: [flip, {{name: rotate, frac: 0.2}}]}}
""")
    out = tmp_path / "grid.png"
    result = runner.invoke(app, ["augment", "preview", str(config), "--out", str(out),
                                 "--images", "2", "--versions", "3"])
    assert result.exit_code == 0, result.output
    assert "3 blocks" in result.output  # flip, rotate, and both in order
    assert Image.open(out).size[0] > 200
    experiment = tmp_path / "e.yaml"
    experiment.write_text("""
name: e
base: c.yaml
variants:
  - {name: none, set: {augment.ops: []}}
  - {name: policy, set: {augment.ops: [trivialaugment]}}
""")
    result = runner.invoke(app, ["augment", "preview", str(experiment), "--out", str(out)])
    assert result.exit_code == 0 and "2 blocks" in result.output, result.output
    bad = runner.invoke(app, ["augment", "preview", str(config), "--op", "{name: rotaet}"])
    assert bad.exit_code == 2 and "did you mean 'rotate'" in bad.output


def test_augment_list_names_every_op_with_its_keys():
    result = runner.invoke(app, ["augment", "list"])
    assert result.exit_code == 0
    for word in ("randaugment", "trivialaugment", "autoaugment", "erasing", "frac=0.1",
                 "magnitude=9"):
        assert word in result.output


def test_lr_find_writes_plot_json_and_a_suggestion(tmp_path):
    data = make_image_folder(tmp_path / "images", classes=3, per_class=16, size=24)
    config = tmp_path / "c.yaml"
    config.write_text(f"""
data: {{source: folder, path: {data}, image_size: 24, val_fraction: 0}}
model: {{name: flowers_cnn, args: {{widths: [8, 8, 8], hidden: 16}}}}
optim: {{name: adamw}}
train: {{batch_size: 8, threads: 1}}
""")
    out = tmp_path / "find"
    result = runner.invoke(app, ["lr-find", str(config), "--start", "1e-5", "--end", "1",
                                 "--steps", "30", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "30 steps" in result.output or "diverged" in result.output
    assert "suggested optim.lr" in result.output or "no clear descent" in result.output
    assert (out / "lr_find.png").stat().st_size > 10_000
    assert (out / "lr_find.json").is_file() and (out / "config.yaml").is_file()
    bad = runner.invoke(app, ["lr-find", str(config), "--start", "1", "--end", "0.1",
                              "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "need 0 < start < end" in bad.output
