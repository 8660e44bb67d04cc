"""Training throughput: imgcls's Trainer (its default settings, and float32, bf16 or compiled
on request) against a bare float32 PyTorch loop over the same network, batch size and
optimizer, in one process, alternating rounds; then (with --keras-python) the same network
in Keras 3 on TensorFlow, in its own environment. Prints medians and the ratios to the bare
float32 loop, one figure per line, with the machine (CPU model, bf16 units, torch, threads,
the precision imgcls chose), and appends them to benchmarks/results/throughput.txt.

    bash benchmarks/setup_keras_env.sh      # once: benchmarks/.venv-keras
    python benchmarks/throughput.py --keras-python benchmarks/.venv-keras/bin/python
        [--data ../shared/datasets/cifar10-jpeg.tar.gz] [--batch-size 512] [--steps 8]

The bare loop is what a user would write by hand: pre-normalized float tensors in memory,
index a batch, forward, loss, backward, step; no augmentation. imgcls does its whole
per-batch pipeline (gather, flip + translate, normalize, metrics, callbacks).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from datetime import datetime
from pathlib import Path

import torch
import torch.nn.functional as F

from imgcls.configure import load_config
from imgcls.data import load_data
from imgcls.hardware import machine_line
from imgcls.models import create_model
from imgcls.tracking.run import Run
from imgcls.train.setup import channel_stats
from imgcls.train.trainer import Trainer


def bare_loop(images: torch.Tensor, labels: torch.Tensor, batch_size: int, steps: int,
              model: torch.nn.Module, optimizer: torch.optim.Optimizer,
              amp_dtype: torch.dtype | None = None) -> float:
    model.train()
    order = torch.randperm(len(labels), device=labels.device)
    synchronize(labels.device)
    start = time.perf_counter()
    for step in range(steps):
        idx = order[step * batch_size:(step + 1) * batch_size]
        with torch.autocast(labels.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(images[idx])
        loss = F.cross_entropy(logits.float(), labels[idx], label_smoothing=0.2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    synchronize(labels.device)
    return steps * batch_size / (time.perf_counter() - start)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a GPU runs behind the host)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="../shared/datasets/cifar10-jpeg.tar.gz")
    parser.add_argument("--config", default="configs/cifar10-fast.yaml")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--variants", nargs="+", default=["default", "float32", "bf16"],
                        help="imgcls settings to time beside the float32 bare loop: default "
                        "(train.amp and train.compile on auto), float32, bf16, compile "
                        "(float32 + torch.compile); bf16 also times a bf16 bare loop")
    parser.add_argument("--keras-python", help="python of the Keras environment "
                        "(benchmarks/setup_keras_env.sh); omitted: no Keras figure")
    parser.add_argument("--out", default="benchmarks/results/throughput.txt")
    args = parser.parse_args()

    sets = ["data.source=folder", f"data.path={args.data}", "data.val_fraction=0",
            f"data.train_subset={args.batch_size * args.steps}",
            f"train.batch_size={args.batch_size}", "train.micro_batch_size=null",
            "train.tensorboard=false",
            "optim.name=sgd", "optim.lr=0.001", "optim.norm_lr_scale=1", "train.tta=none",
            "train.loss_reduction=mean", "train.checkpoint.monitor=train_loss"]
    variant_sets = {"default": [], "float32": ["train.amp=none", "train.compile=false"],
                    "bf16": ["train.amp=bf16", "train.compile=false"],
                    "compile": ["train.amp=none", "train.compile=true"]}
    cfg = load_config(args.config, sets)
    data = load_data(cfg.data)
    trainers = {}
    for name in args.variants:
        trainer = Trainer(load_config(args.config, sets + variant_sets[name]),
                          Run(Path(f"/tmp/imgcls-throughput-run/{name}")), data)
        for cb in trainer.callbacks:  # its progress bar is part of what is measured
            cb.on_fit_start(trainer)
        trainer.prepare_batches()
        trainer.train_epoch(0)  # warm-up (and, compiled, the compilation)
        trainers[name] = trainer
    default = trainers.get("default")
    chosen = default.precision.describe() if default else "float32"

    mean, std = channel_stats(data.train)
    images = torch.from_numpy(data.train.images).permute(0, 3, 1, 2).float().div(255)
    images = ((images - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)).contiguous(
        memory_format=torch.channels_last)
    device = next(iter(trainers.values())).device
    images, labels = images.to(device), torch.from_numpy(data.train.labels).long().to(device)
    torch.manual_seed(0)
    model = create_model(cfg.model.name, 10).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.001,
                                momentum=0.85, nesterov=True, weight_decay=5e-4)
    bare_dtypes = {"float32": None, **({"bf16": torch.bfloat16} if "bf16" in trainers else {})}
    for dtype in bare_dtypes.values():  # warm-up
        bare_loop(images, labels, args.batch_size, 1, model, optimizer, dtype)

    figures: dict[str, list[float]] = {f"bare_{k}": [] for k in bare_dtypes}
    figures.update({f"imgcls_{k}": [] for k in trainers})
    for r in range(args.rounds):  # alternating, so drifts of the machine hit all alike
        for name, dtype in bare_dtypes.items():
            figures[f"bare_{name}"].append(bare_loop(images, labels, args.batch_size,
                                                     args.steps, model, optimizer, dtype))
        for name, trainer in trainers.items():
            figures[f"imgcls_{name}"].append(trainer.train_epoch(r + 1)["images_per_second"])
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in figures.items()))
    medians = {k: statistics.median(v) for k, v in figures.items()}
    reference = medians["bare_float32"]
    keras = keras_figure(args) if args.keras_python else None
    lines = [
        f"# {datetime.now():%Y-%m-%d %H:%M} {cfg.model.name} batch {args.batch_size} "
        f"{'channels_last' if cfg.train.channels_last else 'NCHW'}, median of {args.rounds} "
        f"rounds x {args.steps} steps, images/s; {machine_line('imgcls default: ' + chosen)}",
        *(f"{k}_images_per_second {v:.1f}" for k, v in medians.items()),
        *(f"{k}_over_bare_float32_ratio {v / reference:.3f}" for k, v in medians.items()
          if k != "bare_float32"),
    ]
    if keras:
        lines[0] += (f"; keras {keras['keras']} tensorflow {keras['tensorflow']} jit_compile "
                     f"{keras['jit_compile']}")
        ours = medians.get("imgcls_default", medians[next(iter(medians))])
        lines += [f"keras3_tensorflow_images_per_second {keras['images_per_second']:.1f}",
                  f"imgcls_over_keras_ratio {ours / keras['images_per_second']:.3f}"]
    print("\n".join(lines))
    with open(args.out, "a") as f:
        f.write("\n".join(lines) + "\n")


def keras_figure(args: argparse.Namespace) -> dict:
    """The Keras run, in its own interpreter, after the PyTorch rounds (never alongside)."""
    script = Path(__file__).with_name("keras_throughput.py")
    out = subprocess.run([args.keras_python, str(script), "--batch-size", str(args.batch_size),
                          "--steps", str(args.steps), "--rounds", str(args.rounds),
                          "--threads", str(torch.get_num_threads())],
                         capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"keras: {', '.join(f'{r:.1f}' for r in result['rounds'])} img/s")
    return result


if __name__ == "__main__":
    main()
