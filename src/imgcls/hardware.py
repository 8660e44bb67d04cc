"""What the machine is: the CPU's model and its bf16 units, read from the kernel, and where
it keeps imgcls's caches. A leaf module, so that runs (environment.json), the precision
choice and every benchmark's header describe the hardware the same way."""

from __future__ import annotations

import os
import platform
from pathlib import Path

BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo names of the bf16 units


def _cpuinfo_field(name: str) -> str | None:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None
    line = next((line for line in lines if line.startswith(name)), None)
    return None if line is None else line.partition(":")[2].strip()


def cpu_model() -> str:
    """The CPU's marketing name ("AMD EPYC", "Intel(R) Xeon(R) Platinum 8481C"...) with its
    family and model numbers where the kernel gives them (one name covers several
    generations on cloud machines)."""
    name = _cpuinfo_field("model name") or platform.processor() or platform.machine()
    family, model = _cpuinfo_field("cpu family"), _cpuinfo_field("model\t")
    return f"{name} (family {family} model {model})" if family and model else name


def cpu_flags() -> set[str]:
    """The CPU's feature flags as the kernel reports them; empty where it does not."""
    return set((_cpuinfo_field("flags") or "").split())


def cpu_bf16_units(flags: set[str] | None = None) -> list[str]:
    """Which of the CPU's bf16 units exist (empty: none, bf16 would be emulated)."""
    flags = cpu_flags() if flags is None else flags
    return [flag for flag in BF16_CPU_FLAGS if flag in flags]


def default_cache_dir() -> Path:
    """Where caches go unless a config names a folder: `$IMGCLS_CACHE` or ~/.cache/imgcls."""
    return Path(os.environ.get("IMGCLS_CACHE") or Path.home() / ".cache" / "imgcls").expanduser()


def machine_line(precision: str) -> str:
    """One line naming what a figure was measured on, for every benchmark's output: figures
    from different machines must never be compared blindly."""
    import torch

    units = cpu_bf16_units()
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (f"CPU {cpu_model()}, bf16 units: {', '.join(units) if units else 'none'}{gpu}; "
            f"torch {torch.__version__}, {torch.get_num_threads()} threads; {precision}")
