"""The precision a run trains in, and why. `train.amp: auto` chooses bf16 autocast only
where the hardware computes in bf16 natively: CPUs with AMX-BF16 or AVX512-BF16 units
(measured on a Sapphire Rapids Xeon: 2x the float32 images/s for the fast recipe, the same
accuracy) and CUDA devices that support bf16. Everywhere else it stays float32: a CPU
without those units emulates bf16 and runs slower than float32. The choice is fixed by the
hardware, never by a timing, so the same machine always trains the same way."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from imgcls.hardware import cpu_bf16_units, machine_line

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

    def describe(self) -> str:
        name = {"none": "float32", "bf16": "bf16 autocast", "fp16": "fp16 autocast"}[self.amp]
        return f"{name} ({self.reason})"


def resolve_precision(requested: str, device: torch.device,
                      flags: set[str] | None = None) -> Precision:
    """`train.amp` made concrete for `device`; `flags` stands in for the CPU's (tests)."""
    if requested != "auto":
        return Precision(requested, "set by train.amp")  # type: ignore[arg-type]
    if device.type == "cuda":
        gpu = torch.cuda.get_device_name(device)
        if torch.cuda.is_bf16_supported():
            return Precision("bf16", f"auto: {gpu} computes in bf16")
        return Precision("none", f"auto: {gpu} has no bf16 support")
    if device.type == "cpu":
        units = cpu_bf16_units(flags)
        if units:
            return Precision("bf16", f"auto: the CPU has bf16 units ({', '.join(units)})")
        return Precision("none", "auto: the CPU has no bf16 units (amx_bf16, avx512_bf16), "
                         "where bf16 is slower than float32")
    return Precision("none", f"auto: float32 on {device.type}")


def machine_header(amp: str = "auto") -> str:
    """`imgcls.hardware.machine_line` with the precision that `train.amp` (default auto)
    gives on this machine's default training device: the first line of every benchmark."""
    from imgcls.train.setup import resolve_device  # the rule `train.device: auto` follows

    return machine_line(resolve_precision(amp, resolve_device("auto")).describe())
