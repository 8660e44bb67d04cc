"""The precision a run trains in, and why. `train.amp: auto` chooses bf16 autocast only
where it trains faster than float32. On CUDA that is every device that supports bf16. On a
CPU, bf16 units are necessary but not enough: with AMX-BF16 (a Sapphire Rapids Xeon) or
AVX512-BF16 on an AMD Zen 4, bf16 trains the fast recipe at about 2x float32's images/s with
the same accuracy, but an Intel Xeon (family 6 model 207) whose hypervisor exposes
AVX512-BF16 and hides AMX trains it at 0.72x. So where the CPU has the units, the choice is
measured once (`bf16_speedup`: a few training steps of the fast recipe's network in both
precisions, a few seconds) and cached per CPU model and torch version; from then on the
same machine always trains the same way. A CPU without the units emulates bf16 and
stays float32 without a measurement."""

from __future__ import annotations

import fcntl
import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from imgcls.hardware import cpu_bf16_units, cpu_model, default_cache_dir, machine_line
from imgcls.tracking.io import atomic_write_json

BF16_FASTER = 1.2  # bf16 is chosen from this speed-up over float32 on (far from 0.72 and 2)

Amp = Literal["none", "bf16", "fp16"]
DTYPES: dict[str, torch.dtype | None] = {"none": None, "bf16": torch.bfloat16,
                                         "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    amp: Amp
    reason: str

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype; None for plain float32."""
        return DTYPES[self.amp]

    def as_dict(self) -> dict[str, str]:
        return {"amp": self.amp, "reason": self.reason}

    @property
    def label(self) -> str:
        return {"none": "float32", "bf16": "bf16 autocast", "fp16": "fp16 autocast"}[self.amp]

    def describe(self) -> str:
        return f"{self.label} ({self.reason})"


def _cache_file() -> Path:
    return default_cache_dir() / "bf16_speedup.json"


def _measure_bf16_speedup() -> float:
    """bf16 autocast's training images/s over float32's: the fast recipe's network, batches
    of 64 at 32 px, the two precisions in alternating rounds, medians."""
    from imgcls.models import create_model
    from imgcls.models.profile import training_images_per_second

    with torch.random.fork_rng(devices=[]):  # the caller's random stream stays untouched
        torch.manual_seed(0)
        model = create_model("fastnet94", 10)
    speeds: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(2):
        for bf16 in (False, True):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                speeds[bf16].append(training_images_per_second(model, 32, 10, 64, steps=3,
                                                               warmup=1))
    return statistics.median(speeds[True]) / statistics.median(speeds[False])


def bf16_speedup(measure: Callable[[], float] = _measure_bf16_speedup) -> float:
    """This CPU's bf16 speed-up over float32, measured on first use and kept in the cache
    (`$IMGCLS_CACHE` or ~/.cache/imgcls) under the CPU model and torch version.
    Processes that start together (torchrun ranks, sweep workers) take turns at a file lock,
    so one measures and the others read its answer. Where the cache cannot be written, every
    process measures for itself."""
    path = _cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return _cached(path, f"{cpu_model()} | torch {torch.__version__}", measure)
    except OSError:
        return measure()


def _cached(path: Path, key: str, measure: Callable[[], float]) -> float:
    try:
        known = json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        known = {}  # a damaged cache is measured again
    if not isinstance(known.get(key), float):
        known[key] = measure()
        atomic_write_json(path, known)
    return known[key]


def resolve_precision(requested: str, device: torch.device, flags: set[str] | None = None,
                      speedup: float | None = None) -> Precision:
    """`train.amp` made concrete for `device`; `flags` and `speedup` stand in for the CPU's
    flags and its measured bf16 speed-up (tests)."""
    if requested != "auto":
        return Precision(requested, "set by train.amp")  # type: ignore[arg-type]
    if device.type == "cuda":
        gpu = torch.cuda.get_device_name(device)
        if torch.cuda.is_bf16_supported():
            return Precision("bf16", f"auto: {gpu} computes in bf16")
        return Precision("none", f"auto: {gpu} has no bf16 support")
    if device.type == "cpu":
        units = ", ".join(cpu_bf16_units(flags))
        if not units:
            return Precision("none", "auto: the CPU has no bf16 units (amx_bf16, "
                             "avx512_bf16), where bf16 is slower than float32")
        speedup = bf16_speedup() if speedup is None else speedup
        if speedup >= BF16_FASTER:
            return Precision("bf16", f"auto: the CPU's bf16 units ({units}) train at "
                             f"{speedup:.2f}x float32's speed")
        return Precision("none", f"auto: the CPU has bf16 units ({units}), but bf16 trains "
                         f"at {speedup:.2f}x float32's speed here")
    return Precision("none", f"auto: float32 on {device.type}")


def machine_header(amp: str = "auto") -> str:
    """`imgcls.hardware.machine_line` with the precision that `train.amp` (default auto)
    gives on this machine's default training device: the first line of every benchmark."""
    from imgcls.train.setup import resolve_device  # the rule `train.device: auto` follows

    return machine_line(resolve_precision(amp, resolve_device("auto")).describe())
