"""MLflow tracking against a real MLflow server started here on 127.0.0.1 (SQLite backend
store), read back through MLflow's own client: parameters, metric histories, artifacts, the
model's predictions; a resumed run continuing its MLflow run; an unreachable server failing
before anything is made; a server gone mid-run and the upload afterwards; a sweep's parent;
and once a plain file store."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from conftest import StopAt, make_image_folder, tiny_config
from imgcls.tracking.mlflow_client import MlflowError, metric_key, sync_run
from imgcls.tracking.mlflow_server import LocalServer, free_port
from imgcls.tracking.run import Run
from imgcls.train import train
from imgcls.train.callbacks import Callback

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    running = LocalServer(tmp_path_factory.mktemp("mlflow")).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("data") / "images", classes=3,
                             per_class=12, size=24)


def config(images: Path, uri: str, **train):
    return tiny_config(name="mlflow-test", data={"path": str(images), "image_size": 24},
                       train={"epochs": 2, "tensorboard": False, **train},
                       tracking={"mlflow": uri, "experiment": "imgcls-tests"})


def test_a_run_logs_params_metrics_artifacts_and_a_model_that_predicts_like_imgcls(
        server, images, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)  # where runs:/ URIs resolve
    run, summary = train(config(images, server.uri), tmp_path / "run")
    record = run.mlflow()
    assert record["uri"] == server.uri and record["pending"] is False
    client = MlflowClient(server.uri)
    logged = client.get_run(record["run_id"])
    assert logged.info.status == "FINISHED"
    assert logged.data.params["optim.lr"] == "0.01"
    assert logged.data.params["model.name"] == "flowers_cnn"
    assert logged.data.tags["imgcls.precision"] == "none"
    assert [m.step for m in client.get_metric_history(logged.info.run_id, "val_accuracy")] \
        == [1, 2]
    assert logged.data.metrics["test_accuracy"] == pytest.approx(summary["test_accuracy"])
    names = {a.path for a in client.list_artifacts(logged.info.run_id)}
    assert {"config.yaml", "summary.json", "preprocess.json", "model"} <= names

    import imgcls

    model = mlflow.pyfunc.load_model(f"runs:/{logged.info.run_id}/model")
    files = sorted(str(p) for p in images.rglob("*.png"))[:5]
    predictor = imgcls.load(run.path)
    expected = predictor.probabilities(predictor.read([Path(f) for f in files])[0]).numpy()
    assert np.allclose(model.predict(files).to_numpy(), expected, atol=1e-6)
    arrays = predictor.read([Path(f) for f in files])[0]
    assert np.allclose(model.predict(arrays).to_numpy(), expected, atol=1e-6)

    from typer.testing import CliRunner

    from imgcls.cli import app

    done = CliRunner().invoke(app, ["export", str(run.path), "--verify", "8"])
    assert done.exit_code == 0 and "MLflow: uploaded" in done.output, done.output
    exported = {a.path for a in client.list_artifacts(logged.info.run_id, "export")}
    assert exported == {"export/model.onnx", "export/model.onnx.json"}


def test_a_resumed_run_continues_its_mlflow_run_without_doubled_epochs(server, images,
                                                                      tmp_path):
    cfg = config(images, server.uri, epochs=3)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "run", callbacks=[StopAt(2)])
    first = Run(tmp_path / "run").mlflow()["run_id"]
    assert MlflowClient(server.uri).get_run(first).info.status == "KILLED"
    run, _ = train(resume=tmp_path / "run")
    assert MlflowClient(server.uri).get_run(first).info.status == "FINISHED"
    assert run.mlflow()["run_id"] == first
    history = MlflowClient(server.uri).get_metric_history(first, "train_loss")
    assert sorted(m.step for m in history) == [1, 2, 3]


def test_an_unreachable_server_fails_before_the_run_folder_is_made(images, tmp_path):
    cfg = config(images, f"http://127.0.0.1:{free_port()}")
    with pytest.raises(MlflowError, match="cannot be reached"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_server_gone_mid_run_costs_a_warning_and_sync_uploads_the_rest(server, images,
                                                                        tmp_path, caplog):
    class Outage(Callback):
        key = "outage"

        def on_epoch_end(self, trainer, metrics) -> None:
            if metrics["epoch"] == 1:
                server.stop()

    try:
        with caplog.at_level(logging.WARNING, logger="imgcls"):
            run, summary = train(config(images, server.uri, epochs=3), tmp_path / "run",
                                 callbacks=[Outage()])
    finally:
        server.start()  # the same port and store: the other tests' server again
    assert "imgcls mlflow-sync" in caplog.text
    assert run.finished() and run.mlflow()["pending"] is True
    run_id = sync_run(run.path)
    assert run_id == run.mlflow()["run_id"] and run.mlflow()["pending"] is False
    client = MlflowClient(server.uri)
    assert sorted(m.step for m in client.get_metric_history(run_id, "train_loss")) \
        == [1, 2, 3]
    assert client.get_run(run_id).data.metrics["test_accuracy"] == pytest.approx(
        summary["test_accuracy"])
    assert client.get_run(run_id).info.status == "FINISHED"


def test_a_sweep_is_one_experiment_with_a_parent_holding_the_table(server, images, tmp_path):
    from imgcls.experiment.spec import load_experiment
    from imgcls.experiment.sweep import run_sweep

    base = tmp_path / "base.yaml"
    base.write_text(config(images, server.uri, epochs=1).to_yaml())
    spec = tmp_path / "exp.yaml"
    spec.write_text(f"name: lr-sweep\nbase: {base}\ngrid: {{optim.lr: [0.01, 0.003]}}\n"
                    "seeds: [0]\n")
    run_sweep(load_experiment(spec), tmp_path / "exp")
    parent = json.loads((tmp_path / "exp" / "mlflow.json").read_text())["run_id"]
    client = MlflowClient(server.uri)
    children = client.search_runs(
        [client.get_run(parent).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    assert len(children) == 2
    assert {c.data.params["optim.lr"] for c in children} == {"0.01", "0.003"}
    from imgcls.experiment.results import experiment_groups

    _, groups = experiment_groups(tmp_path / "exp")  # what `imgcls compare` prints
    logged = client.get_run(parent).data.metrics
    for group in groups:
        key = metric_key(f"{group.name}.test_accuracy.mean")
        assert logged[key] == pytest.approx(group.spread.mean)


def test_a_plain_file_store_works_too(images, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tmp_path / "mlruns").as_uri()
    run, _ = train(config(images, uri, epochs=1), tmp_path / "run")
    logged = MlflowClient(uri).get_run(run.mlflow()["run_id"])
    assert logged.data.params["optim.name"] == "adamw"
    assert "test_accuracy" in logged.data.metrics


def children_of(client, parent_id: str):
    experiment = client.get_run(parent_id).info.experiment_id
    return client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent_id}'")


def test_a_search_logs_each_trial_under_a_parent_with_the_best(server, images, tmp_path):
    from imgcls.experiment.spec import load_experiment
    from imgcls.experiment.tune import run_tune

    base = tmp_path / "base.yaml"
    base.write_text(config(images, server.uri, epochs=1).to_yaml())
    spec = tmp_path / "search.yaml"
    spec.write_text(f"name: lr-search\nbase: {base}\nseeds: [0]\n"
                    "search: {optim.lr: {type: float, low: 0.001, high: 0.1, log: true}}\n"
                    "tune: {trials: 2, sampler: random}\n")
    study = run_tune(load_experiment(spec), tmp_path / "search")
    parent = json.loads((tmp_path / "search" / "mlflow.json").read_text())["run_id"]
    client = MlflowClient(server.uri)
    trials = children_of(client, parent)
    assert sorted(float(t.data.params["optim.lr"]) for t in trials) == pytest.approx(
        sorted(t.params["optim.lr"] for t in study.trials))
    assert client.get_run(parent).data.metrics["best.val_accuracy"] == pytest.approx(
        study.best_value)


def test_a_fit_logs_its_final_run_under_a_parent_holding_the_winner(server, tmp_path):
    from imgcls.fit import fit

    few = make_image_folder(tmp_path / "few", classes=3, per_class=8, size=16)
    result = fit(few, 8, out=tmp_path / "fit", overrides=[f"tracking.mlflow={server.uri}"],
                 only=["fastnet94-16px"])
    parent = json.loads((tmp_path / "fit" / "mlflow.json").read_text())["run_id"]
    client = MlflowClient(server.uri)
    logged = client.get_run(parent)
    assert logged.data.params["winner"] == result.winner and logged.info.status == "FINISHED"
    final = Run(result.out / "final").mlflow()["run_id"]
    assert final in {c.info.run_id for c in children_of(client, parent)}
    assert logged.data.metrics["test_accuracy"] == pytest.approx(
        result.summary["test_accuracy"])
