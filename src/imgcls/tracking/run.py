"""The run folder: everything needed to understand and reproduce one training run. This
module alone knows its layout; everything else asks a `Run` for a file's contents or path.

    runs/<YYYYmmdd-HHMMSS>-<name>/
        config.yaml        the fully resolved config
        environment.json   library versions and hardware
        preprocess.json    classes, image size, normalization (what predict/eval need)
        pretrained.json    which tensors came from the pretrained weights (transfer runs)
        metrics.jsonl      one line per epoch
        summary.json       final figures
        failed.json        the error of a sweep run that failed
        mlflow.json        the MLflow run it logs to, if any
        checkpoints/last.pt, checkpoints/best.pt
        tensorboard/       event files
"""

from __future__ import annotations

import json
import os
import pickle
import platform
import sys
import zipfile
from dataclasses import asdict, dataclass, field
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from imgcls.config import Config, ConfigError, parse, read_yaml
from imgcls.hardware import cpu_bf16_units, cpu_model
from imgcls.log import exception_line
from imgcls.tracking.io import atomic_torch_save, atomic_write_json, atomic_write_text

LIBRARIES = ("imgcls", "torch", "timm", "numpy", "pillow", "pydantic")
SUMMARY = "summary.json"  # also the name a copy elsewhere keeps (an MLflow artifact)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, naming the file and why."""


@dataclass(frozen=True)
class Preprocessing:
    """preprocess.json: how images were turned into network inputs in training, which
    evaluation, prediction, export and transfer learning must repeat exactly."""

    classes: list[str]
    image_size: int  # what the data was decoded and stored at
    resize: str  # how images were brought to image_size (data.resize)
    input_size: int  # what the network sees (batches are resized on the fly)
    interpolation: str  # the on-the-fly resize filter
    mean: list[float]
    std: list[float]
    skipped_files: list[str] = field(default_factory=list)
    channels: int = 3  # 1: grayscale inputs; older runs were all RGB

    @classmethod
    def from_dict(cls, raw: dict[str, Any], origin: str) -> Preprocessing:
        """Read a record, filling what older runs did not write: before transfer learning
        the network saw the stored size, resized bilinearly."""
        raw = {"input_size": raw.get("image_size"), "interpolation": "bilinear",
               "resize": "center_crop", **raw}
        missing = [k for k in ("classes", "image_size", "mean", "std") if k not in raw]
        if missing:
            raise ConfigError(f"{origin}: not an imgcls preprocessing record (no "
                              f"{', '.join(missing)})")
        known = {k: raw[k] for k in cls.__dataclass_fields__ if k in raw}
        return cls(**known)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def environment(device: str) -> dict[str, Any]:
    import torch

    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    info = {"python": sys.version.split()[0], "platform": platform.platform(),
            "versions": versions, "cpu": cpu_model(), "cpu_bf16_units": cpu_bf16_units(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "device": device}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    return info


def load_checkpoint(path: Path, device: Any = "cpu") -> dict[str, Any]:
    """An imgcls checkpoint's contents, read with `weights_only=True` (tensors and plain
    data; a pickle that would run code is refused, never executed). Every way a file can
    be unusable becomes one CheckpointError naming it."""
    import torch

    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint; has the run trained for at "
                              "least one epoch?")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = str(exc).strip().splitlines()
        detail = next((line.strip() for line in reason if "Unsupported global" in line), "")
        raise CheckpointError(
            f"{path}: refused to load: it holds Python objects beyond tensors and plain data, "
            f"which could run code ({detail or 'not a weights-only file'}). Only load files "
            "you trust; imgcls never unpickles them") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as exc:
        first = exception_line(exc, with_type=False) or type(exc).__name__
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated or "
                              f"another format: {first})") from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise CheckpointError(f"{path}: not an imgcls checkpoint (it has no 'model' state "
                              "dict)")
    return state


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

    def write_config(self, cfg: Config) -> None:
        """Replace the saved config with a more resolved one (a size chosen from the data)."""
        atomic_write_text(self.config_path, cfg.to_yaml())

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @staticmethod
    def find(root: Path) -> list[Path]:
        """Every run folder under `root` (`root` itself included), in path order."""
        return [config.parent for config in sorted(Path(root).rglob("config.yaml"))]

    def is_run(self) -> bool:
        return self.config_path.is_file()

    def finished(self) -> bool:
        """Whether the run completed (it wrote its summary)."""
        return (self.path / SUMMARY).is_file()

    def created(self) -> float:
        """When the run was created (its config's modification time), for newest-first."""
        return self.config_path.stat().st_mtime

    def config(self) -> Config:
        """The saved config. It was checked and resolved when the run was created, so the
        schema alone reads it back."""
        if not self.is_run():
            raise ConfigError(f"{self.path}: not a run folder (no config.yaml)")
        return parse(read_yaml(self.config_path), str(self.config_path))

    def raw_config(self) -> dict[str, Any]:
        """config.yaml as a plain mapping, for tables of many runs."""
        return read_yaml(self.config_path)

    # checkpoints ------------------------------------------------------------------------
    def checkpoint_path(self, name: str) -> Path:
        """checkpoints/<name>.pt; `name` is best (weights of the best epoch) or last
        (everything needed to resume)."""
        if name not in ("best", "last"):
            raise ConfigError(f"checkpoint {name!r}: valid: best, last")
        return self.checkpoints / f"{name}.pt"

    def has_checkpoint(self, name: str) -> bool:
        return self.checkpoint_path(name).is_file()

    def save_checkpoint(self, name: str, state: dict[str, Any]) -> None:
        atomic_torch_save(state, self.checkpoint_path(name))

    def load_checkpoint(self, name: str, device: Any = "cpu") -> dict[str, Any]:
        return load_checkpoint(self.checkpoint_path(name), device)

    def start_from(self, other: Run) -> None:
        """Begin this new run where `other` stopped: its checkpoints and metrics, as if this
        run had trained those epochs, the seconds they took left out (this run's clock
        starts now); `train(resume=...)` then continues. For a run whose first epochs are
        `other`'s whole run with the same seed and settings (`imgcls fit`'s final run after
        its head-only trial): resuming is exact, so the result is the one it would have
        trained itself."""
        state = other.load_checkpoint("last")
        state.update(wall_seconds=0.0, train_seconds=0.0)
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        self.save_checkpoint("last", state)
        if other.has_checkpoint("best"):
            self.save_checkpoint("best", other.load_checkpoint("best"))
        atomic_write_text(self.path / "metrics.jsonl", "".join(
            json.dumps(m) + "\n" for m in other.metrics() if m["epoch"] <= state["epoch"]))

    # records ----------------------------------------------------------------------------
    def _write(self, name: str, data: dict[str, Any]) -> None:
        atomic_write_json(self.path / name, data)

    def _read(self, name: str) -> dict[str, Any] | None:
        path = self.path / name
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc})") from None

    def write_preprocessing(self, record: Preprocessing) -> None:
        self._write("preprocess.json", record.to_dict())

    def preprocessing(self) -> Preprocessing:
        raw = self._read("preprocess.json")
        if raw is None:
            raise CheckpointError(f"{self.path}: no preprocess.json; has the run trained for "
                                  "at least one epoch?")
        return Preprocessing.from_dict(raw, str(self.path / "preprocess.json"))

    def has_preprocessing(self) -> bool:
        return (self.path / "preprocess.json").is_file()

    def write_environment(self, info: dict[str, Any]) -> None:
        self._write("environment.json", info)

    def environment(self) -> dict[str, Any]:
        """environment.json (empty before the run's first epoch)."""
        return self._read("environment.json") or {}

    def write_pretrained_report(self, report: dict[str, Any]) -> None:
        self._write("pretrained.json", report)

    def write_summary(self, summary: dict[str, Any]) -> None:
        self._write(SUMMARY, summary)

    def summary(self) -> dict[str, Any] | None:
        return self._read(SUMMARY)

    def write_failure(self, error: str) -> None:
        self._write("failed.json", {"error": error})

    def failure(self) -> str | None:
        """The error a failed run recorded, None if it did not fail."""
        failed = self._read("failed.json")
        return failed["error"] if failed else None

    def write_lr_find(self, result: dict[str, Any]) -> None:
        self._write("lr_find.json", result)

    def write_mlflow(self, record: dict[str, Any]) -> None:
        """mlflow.json: the MLflow run this run logs to (a resumed run continues it) and
        whether something is still to upload (`imgcls mlflow-sync`)."""
        self._write("mlflow.json", record)

    def mlflow(self) -> dict[str, Any] | None:
        return self._read("mlflow.json")

    def mark_mlflow(self, pending: bool) -> None:
        """Whether something of the run is still to upload to its MLflow run."""
        self.write_mlflow({**(self.mlflow() or {}), "pending": pending})

    def model_files(self) -> dict[str, Path]:
        """What `imgcls.load` needs of this run (the config, the preprocessing, the best
        weights), by their names in the folder: a copy of these predicts like the run."""
        files = {"config.yaml": self.config_path,
                 "preprocess.json": self.path / "preprocess.json",
                 "checkpoints/best.pt": self.checkpoint_path("best")}
        missing = [name for name, path in files.items() if not path.is_file()]
        if missing:
            raise CheckpointError(f"{self.path}: no {', '.join(missing)}; has the run "
                                  "trained for at least one epoch?")
        return files

    def artifacts(self) -> list[Path]:
        """The run's records worth keeping beside it elsewhere (an MLflow run's artifacts):
        the config, the preprocessing, the machine, the report and the exports (ONNX,
        TorchScript), where they exist (the summary goes as the figures it holds)."""
        names = ("config.yaml", "preprocess.json", "environment.json", "report", "export")
        return [self.path / n for n in names if (self.path / n).exists()]

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

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
