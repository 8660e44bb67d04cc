"""The fast path's choices: `train.amp: auto` from the bf16 units and their measured speed,
recorded in the run; bf16 autocast training that still learns; torch.compile; and the
finite-loss check that looks at the device only every `train.sync_every` steps yet names the
first bad one."""

from __future__ import annotations

import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from conftest import at_least
from conftest import learning_config as config
from imgcls.hardware import cpu_bf16_units, machine_line
from imgcls.train import load_model, train
from imgcls.train.callbacks import Callback
from imgcls.train.precision import DTYPES, _cache_file, bf16_speedup, resolve_precision
from imgcls.train.trainer import TrainingDiverged

CPU = torch.device("cpu")




@pytest.mark.parametrize("flags, speedup, amp", [
    ({"avx2", "amx_bf16", "amx_tile", "avx512_bf16"}, 2.0, "bf16"),  # Sapphire Rapids
    ({"avx2", "avx512f", "avx512_bf16"}, 2.1, "bf16"),                # Zen 4
    ({"avx2", "avx512f", "avx512_bf16"}, 0.72, "none"),               # Xeon, AMX hidden
    ({"avx2", "avx512f"}, 2.0, "none"),                               # Skylake-SP, Ice Lake
    ({"avx2", "fma"}, None, "none"),                                  # Zen 2/3
    (set(), None, "none"),                                            # flags unknown
])
def test_auto_precision_is_bf16_only_where_bf16_units_train_faster(flags, speedup, amp):
    chosen = resolve_precision("auto", CPU, flags, speedup)
    assert chosen.amp == amp and chosen.dtype is DTYPES[amp]
    assert chosen.reason.startswith("auto: the CPU")
    if not {"amx_bf16", "avx512_bf16"} & flags:
        assert "no bf16 units" in chosen.reason  # emulated bf16: no measurement needed
    else:
        assert "bf16 units (" in chosen.reason and f"at {speedup:.2f}x float32" in chosen.reason


def test_the_bf16_speedup_is_measured_once_per_machine_and_shared(tmp_path, monkeypatch):
    """Threads stand in for processes that start together: each opens the lock file itself,
    so they queue at it as processes do; the first measures, the rest read its answer."""
    monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path))
    calls = []

    def slow_measure() -> float:
        calls.append(1)
        time.sleep(0.3)
        return 0.5 + len(calls)

    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda _: bf16_speedup(slow_measure), range(3)))
    assert answers == [1.5, 1.5, 1.5] and len(calls) == 1
    cache = tmp_path / "bf16_speedup.json"
    assert list(json.loads(cache.read_text()).values()) == [1.5]
    cache.write_text("{not json")  # a damaged cache is measured again, not an error
    assert bf16_speedup(slow_measure) == 2.5 and len(calls) == 2


@pytest.mark.skipif(not cpu_bf16_units(), reason="measured only where the CPU has bf16 units; "
                    "emulated bf16 would take a minute here")
def test_the_measurement_leaves_the_callers_random_stream_alone():
    _cache_file().unlink(missing_ok=True)  # measured here; the later `auto` runs reuse it
    torch.manual_seed(7)
    speedup = bf16_speedup()
    after = torch.rand(3)
    torch.manual_seed(7)
    assert torch.equal(after, torch.rand(3))
    assert 0.05 < speedup < 20  # a ratio of two speeds of the same network, not a crash


def test_an_explicit_precision_is_kept_whatever_the_cpu():
    for amp in ("none", "bf16"):
        chosen = resolve_precision(amp, CPU, {"amx_bf16"} if amp == "none" else set())
        assert (chosen.amp, chosen.reason) == (amp, "set by train.amp")


def test_the_machine_line_names_cpu_units_torch_threads_and_precision():
    line = machine_line("float32")
    units = ", ".join(cpu_bf16_units()) or "none"
    assert line.startswith("CPU ") and f"bf16 units: {units}" in line
    assert f"torch {torch.__version__}" in line and f"{torch.get_num_threads()} threads" in line
    assert line.endswith("; float32")


def test_a_run_records_the_precision_it_chose_and_why(folder, tmp_path):
    cfg = config(folder, train={"epochs": 1, "amp": "auto"})
    run, summary = train(cfg, tmp_path / "run")
    expected = resolve_precision("auto", CPU).as_dict()
    assert summary["precision"] == expected and summary["compiled"] is False
    env = json.loads((run.path / "environment.json").read_text())
    assert env["precision"] == expected and env["compiled"] is False
    assert env["cpu_bf16_units"] == cpu_bf16_units()
    assert json.loads((run.path / "summary.json").read_text())["precision"] == expected


def test_bf16_autocast_training_learns(folder, tmp_path):
    """bf16 works on every CPU (emulated where there are no bf16 units: slower, not wrong);
    the loss stays float32, so the run learns as in float32."""
    cfg = config(folder, train={"epochs": 6, "amp": "bf16"})
    _, summary = train(cfg, tmp_path / "run")
    assert summary["precision"] == {"amp": "bf16", "reason": "set by train.amp"}
    at_least(summary["test_accuracy"], 0.75, "bf16 tiny run test accuracy", count=40)


@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                    reason="torch.compile on a CPU needs a C++ compiler")
def test_a_compiled_run_learns_and_saves_plain_weights(folder, tmp_path):
    cfg = config(folder, train={"epochs": 4, "compile": True, "amp": "none"})
    run, summary = train(cfg, tmp_path / "run")
    assert summary["compiled"] is True
    at_least(summary["test_accuracy"], 0.6, "compiled tiny run test accuracy", count=40)
    state = torch.load(run.path / "checkpoints" / "last.pt", weights_only=True)
    assert not any(k.startswith("_orig_mod.") for k in state["model"])
    model, _, _ = load_model(run.path)  # the checkpoint loads into the plain network
    assert isinstance(model, torch.nn.Module)


class PoisonAtStep(Callback):
    """Makes the loss NaN from the second step of epoch 2 on, and counts epoch 2's steps."""

    def __init__(self):
        self.steps_in_epoch_2 = 0

    def on_batch_end(self, trainer, images):
        if trainer.epoch == 1:
            self.steps_in_epoch_2 += 1
            if self.steps_in_epoch_2 == 1:
                with torch.no_grad():
                    next(trainer.model.parameters()).fill_(float("nan"))


def test_a_nan_step_is_named_even_when_the_host_looks_only_every_few_steps(folder, tmp_path):
    poison = PoisonAtStep()
    cfg = config(folder, train={"epochs": 3, "sync_every": 3})
    with pytest.raises(TrainingDiverged, match=r"epoch 2, step 2: training loss is nan"):
        train(cfg, tmp_path / "run", callbacks=[poison])
    # found at the first look after it (after step 3), not at the end of the epoch
    assert poison.steps_in_epoch_2 == 2  # the raise comes before step 3's callbacks
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert last["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
