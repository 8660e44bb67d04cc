"""Augmentation cost: every op and policy on one batch of real CIFAR-10 images, against one
training step of the fast CIFAR network at the same batch size, in one process.

    python benchmarks/augment_speed.py [--data ../shared/datasets/cifar10-jpeg.tar.gz]
        [--batch-size 512] [--repeats 7]

A training step is forward, loss, backward and an SGD update of fastnet94 (float32,
channels_last), as in `imgcls train`. Each op runs at its defaults with p=1 (RandAugment at
num_ops 2, magnitude 9, the issue's figure) on the uint8 batch, as the loader applies it.
Prints and appends the medians (images/s, ms per batch, share of a training step).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import datetime

import torch
import torch.nn.functional as F

from imgcls.augment import AUGMENTS, AugmentContext, build_op
from imgcls.configure import load_config
from imgcls.data import load_data
from imgcls.hardware import machine_line
from imgcls.models import create_model


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="../shared/datasets/cifar10-jpeg.tar.gz")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default="benchmarks/results/augment_speed.txt")
    args = parser.parse_args()

    cfg = load_config(None, ["data.source=folder", f"data.path={args.data}"])
    data = load_data(cfg.data).train
    n = args.batch_size
    batch = torch.from_numpy(data.images[:n]).permute(0, 3, 1, 2)  # uint8 NCHW, channels_last
    labels = torch.from_numpy(data.labels[:n])

    torch.manual_seed(0)
    model = create_model("fastnet94", 10).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True)
    x = batch.float().div(255).contiguous(memory_format=torch.channels_last)

    def train_step() -> None:
        loss = F.cross_entropy(model(x), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step = median_seconds(train_step, args.repeats)
    generator = torch.Generator().manual_seed(0)
    ctx = AugmentContext(torch.arange(n), n, 0, generator, 0)
    specs = [{"name": "randaugment", "num_ops": 2, "magnitude": 9}] + [
        {"name": name, "p": 1.0} for name in AUGMENTS if name != "randaugment"]
    lines = [f"# {datetime.now():%Y-%m-%d %H:%M} batch {n} x 3 x 32 x 32 uint8, median of "
             f"{args.repeats}; fastnet94 training step {step * 1000:.0f} ms "
             f"({n / step:.0f} img/s); {machine_line('float32 step, uint8 ops')}",
             f"{'op':<28} {'img/s':>10} {'ms/batch':>9} {'of a step':>9}"]
    for spec in specs:
        op = build_op(spec)
        seconds = median_seconds(lambda op=op: op(batch, ctx), args.repeats)
        label = spec["name"] + ("(2, 9)" if spec["name"] == "randaugment" else "")
        lines.append(f"{label:<28} {n / seconds:>10.0f} {seconds * 1000:>9.1f} "
                     f"{seconds / step:>9.1%}")
    print("\n".join(lines))
    with open(args.out, "a") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
