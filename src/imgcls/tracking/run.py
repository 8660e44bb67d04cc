"""A run folder: everything needed to understand and reproduce one training run.

    runs/<YYYYmmdd-HHMMSS>-<name>/
        config.yaml        the fully resolved config
        environment.json   library versions and hardware
        preprocess.json    classes, image size, normalization (what predict/eval need)
        metrics.jsonl      one line per epoch
        summary.json       final figures
        checkpoints/last.pt, checkpoints/best.pt
        tensorboard/       event files
"""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from imgcls.config import Config, ConfigError, read_yaml
from imgcls.configure import validate
from imgcls.tracking.io import atomic_write_json, atomic_write_text

LIBRARIES = ("imgcls", "torch", "timm", "numpy", "pillow", "pydantic")


def environment(device: str) -> dict[str, Any]:
    import torch

    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"python": sys.version.split()[0], "platform": platform.platform(),
            "versions": versions, "cpu": cpu, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "device": device}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    return info


class Run:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def create(cls, cfg: Config, run_dir: str | Path | None = None,
               root: str | Path = "runs") -> Run:
        if run_dir is None:
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            run_dir = Path(root) / f"{stamp}-{cfg.name}"
            suffix = 1
            while run_dir.exists():
                suffix += 1
                run_dir = Path(root) / f"{stamp}-{cfg.name}-{suffix}"
        run = cls(run_dir)
        if run.config_path.exists():
            raise ConfigError(f"{run.path}: already holds a run; resume it with "
                              f"`imgcls train --resume {run.path}` or pick another --run-dir")
        run.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run.config_path, cfg.to_yaml())
        return run

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def config(self) -> Config:
        if not self.config_path.is_file():
            raise ConfigError(f"{self.path}: not a run folder (no config.yaml)")
        return validate(read_yaml(self.config_path), str(self.config_path))

    def write_json(self, name: str, data: dict[str, Any]) -> None:
        atomic_write_json(self.path / name, data)

    def read_json(self, name: str) -> dict[str, Any] | None:
        path = self.path / name
        return json.loads(path.read_text()) if path.is_file() else None

    # metrics.jsonl ----------------------------------------------------------------------
    def append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def metrics(self) -> list[dict[str, Any]]:
        path = self.path / "metrics.jsonl"
        if not path.is_file():
            return []
        lines = path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def truncate_metrics(self, epochs: int) -> None:
        """Forget epochs after the checkpoint being resumed (they will be trained again)."""
        kept = [m for m in self.metrics() if m["epoch"] <= epochs]
        atomic_write_text(self.path / "metrics.jsonl", "".join(json.dumps(m) + "\n"
                                                               for m in kept))
