"""The figures of a report. Each function returns a matplotlib Figure with a title, axis
labels with units and a legend where there is more than one line: a figure must be
readable on its own, pasted into a slide or a paper."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from imgcls.tracking.io import atomic_write  # noqa: E402

plt.rcParams.update({"figure.dpi": 100, "axes.grid": True, "grid.alpha": 0.3,
                     "axes.spines.top": False, "axes.spines.right": False})


def _series(history: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(m["epoch"], m[key]) for m in history if key in m]
    return [p[0] for p in points], [p[1] for p in points]


def run_curves(history: list[dict[str, Any]], title: str) -> Figure:
    """Loss, accuracy and learning rate per epoch, train and validation."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, name in zip(axes[:2], ("loss", "accuracy"), strict=True):
        for split, style in (("train", "-"), ("val", "--")):
            epochs, values = _series(history, f"{split}_{name}")
            if name == "accuracy":
                values = [100 * v for v in values]
            if epochs:
                ax.plot(epochs, values, style, marker="o", ms=3, label=split)
        ax.set(title=name, xlabel="epoch",
               ylabel="accuracy (%)" if name == "accuracy" else "cross-entropy loss")
        ax.legend()
    epochs, lr = _series(history, "lr")
    axes[2].plot(epochs, lr, marker="o", ms=3, color="tab:green")
    axes[2].set(title="learning rate (at the start of each epoch)", xlabel="epoch",
                ylabel="learning rate")
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def confusion_matrix(matrix: np.ndarray, classes: list[str], title: str) -> Figure:
    """Rows: true class, columns: predicted; colour = share of the true class, text = count."""
    k = len(classes)
    size = min(4 + 0.45 * k, 24)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    share = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    if k <= 30:
        ax.set_xticks(range(k), classes, rotation=45, ha="right")
        ax.set_yticks(range(k), classes)
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if share[i, j] > 0.5 else "black")
    ax.grid(False)
    ax.set(title=title, xlabel="predicted class", ylabel="true class")
    fig.colorbar(image, ax=ax, label="share of the true class")
    fig.tight_layout()
    return fig


def per_class_accuracy(accuracy: np.ndarray, counts: np.ndarray, classes: list[str],
                       title: str) -> Figure:
    k = len(classes)
    fig, ax = plt.subplots(figsize=(8, min(2 + 0.3 * k, 30)))
    order = np.argsort(accuracy)
    ax.barh(range(k), 100 * accuracy[order], color="tab:blue")
    ax.set_yticks(range(k), [f"{classes[i]} (n={counts[i]})" for i in order])
    ax.axvline(100 * (accuracy * counts).sum() / counts.sum(), color="tab:red", ls="--",
               label="overall")
    ax.set(title=title, xlabel="accuracy (%)", xlim=(0, 100))
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def _show(ax: Any, image: np.ndarray, wrong: bool, caption: str = "") -> None:
    if image.shape[-1] == 1:  # grayscale
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255)
    else:
        ax.imshow(image)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(wrong)
        spine.set_color("red")
        spine.set_linewidth(3)
    if caption:
        ax.set_title(caption, fontsize=7, color="red" if wrong else "black")


def prediction_grid(images: np.ndarray, predicted: np.ndarray, labels: np.ndarray,
                    classes: list[str], per_row: int = 10, max_rows: int = 20) -> Figure:
    """Note 003's picture: each row holds test images the model put in that class; a red
    frame marks a wrong prediction, captioned with the true class. Images are drawn at
    random (fixed seed): test sets are often sorted by class, and the first images
    predicted as a class would then all share one true class."""
    rows = min(len(classes), max_rows)
    order = np.random.default_rng(0).permutation(len(predicted))
    fig, axes = plt.subplots(rows, per_row + 1, figsize=(1.2 * (per_row + 1) + 1, 1.25 * rows),
                             squeeze=False)
    for r in range(rows):
        label_ax = axes[r, 0]
        label_ax.axis("off")
        label_ax.text(1.0, 0.5, classes[r], ha="right", va="center", fontsize=9,
                      transform=label_ax.transAxes)
        picked = order[predicted[order] == r][:per_row]
        for c in range(per_row):
            ax = axes[r, c + 1]
            if c < len(picked):
                i = picked[c]
                wrong = labels[i] != r
                _show(ax, images[i], wrong, classes[labels[i]] if wrong else "")
            else:
                ax.axis("off")
    shown = f" (first {rows} of {len(classes)} classes)" if rows < len(classes) else ""
    fig.suptitle(f"test images by predicted class{shown}; red frame: wrong, captioned with "
                 "the true class")
    fig.tight_layout()
    return fig


def confident_mistakes(images: np.ndarray, probs: np.ndarray, labels: np.ndarray,
                       classes: list[str], count: int = 16) -> Figure:
    predicted = probs.argmax(1)
    wrong = np.flatnonzero(predicted != labels)
    worst = wrong[np.argsort(-probs[wrong, predicted[wrong]])][:count]
    cols = 8
    rows = max(1, -(-len(worst) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.8 * cols, 2.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, worst, strict=False):
        ax.axis("on")
        _show(ax, images[i], True, f"true {classes[labels[i]]}\npred {classes[predicted[i]]} "
              f"{100 * probs[i, predicted[i]]:.0f}%")
    fig.suptitle(f"the {len(worst)} most confident mistakes (of {len(wrong)} wrong)")
    fig.tight_layout()
    return fig


def image_groups(groups: list[tuple[list[np.ndarray], str]], title: str,
                 per_row: int = 4) -> Figure:
    """Groups of images side by side (a duplicate pair, a suspect alone), each captioned
    above its first image, `per_row` groups to a row."""
    width = max(len(images) for images, _ in groups)
    rows = max(1, -(-len(groups) // per_row))
    cols = per_row * width
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 2.3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for g, (images, caption) in enumerate(groups):
        r, c = divmod(g, per_row)
        for k, image in enumerate(images):
            ax = axes[r, c * width + k]
            ax.axis("on")
            _show(ax, image, False)
            if k == 0:
                ax.set_title(caption, fontsize=7, loc="left")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


# -- experiments ---------------------------------------------------------------------------

def _band(ax: Any, curves: list[tuple[list[int], list[float]]], label: str,
          color: Any) -> None:
    """Mean over seeds with a min-max band; epochs a shorter run lacks are left out."""
    length = min(len(c[0]) for c in curves)
    epochs = curves[0][0][:length]
    values = np.array([c[1][:length] for c in curves])
    ax.plot(epochs, values.mean(0), marker="o", ms=3, color=color,
            label=f"{label} (n={len(curves)})")
    if len(curves) > 1:
        ax.fill_between(epochs, values.min(0), values.max(0), color=color, alpha=0.2)


def overlay_curves(histories: dict[str, list[list[dict[str, Any]]]], title: str) -> Figure:
    """Train loss, val loss and val accuracy per epoch of every variant: the mean over seeds,
    and a band from the lowest to the highest seed."""
    panels = [("train_loss", "train loss", 1), ("val_loss", "val loss", 1),
              ("val_accuracy", "val accuracy (%)", 100)]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    colors = plt.cm.tab10.colors
    for ax, (key, label, scale) in zip(axes, panels, strict=True):
        for i, (name, runs) in enumerate(histories.items()):
            curves = [_series(h, key) for h in runs]
            curves = [(e, [scale * v for v in values]) for e, values in curves if e]
            if curves:
                _band(ax, curves, name, colors[i % 10])
        ax.set(title=label, xlabel="epoch", ylabel=label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4),
                   bbox_to_anchor=(0.5, -0.02 - 0.05 * (len(labels) // 4)))
    fig.suptitle(f"{title}: mean over seeds, band = lowest to highest seed")
    fig.tight_layout(rect=(0, 0.08 + 0.05 * (len(labels) // 4), 1, 1))
    return fig


def metric_vs_time(points: dict[str, list[tuple[float, float]]], metric_label: str,
                   title: str) -> Figure:
    """Each run as a dot (wall seconds, metric); each variant's mean as a cross."""
    fig, ax = plt.subplots(figsize=(8, 5))
    colors = plt.cm.tab10.colors
    for i, (name, runs) in enumerate(points.items()):
        x, y = np.array(runs).T
        color = colors[i % 10]
        ax.scatter(x, y, color=color, alpha=0.5, s=20)
        ax.scatter([x.mean()], [y.mean()], color=color, marker="X", s=120,
                   label=f"{name} (n={len(x)})", edgecolors="black")
    ax.set(title=title, xlabel="wall time per run (s)", ylabel=metric_label)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def comparison_points(values: dict[str, list[float]], errors: list[float | None],
                      metric_label: str, title: str) -> Figure:
    """Every seed as a dot and each variant's mean with its 95% CI: with a handful of seeds
    the individual runs say more than a bar."""
    names = list(values)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(names) + 2), 4.5))
    for i, name in enumerate(names):
        ys = values[name]
        jitter = np.linspace(-0.12, 0.12, len(ys)) if len(ys) > 1 else np.zeros(1)
        ax.scatter(i + jitter, ys, color="tab:blue", alpha=0.6, s=25,
                   label="one seed" if i == 0 else None)
        ax.errorbar(i + 0.3, np.mean(ys), yerr=errors[i] or 0.0, fmt="D", color="black",
                    capsize=6, label="mean, 95% CI" if i == 0 else None)
    ax.set_xticks(range(len(names)), names, rotation=20 if len(names) > 4 else 0,
                  ha="right" if len(names) > 4 else "center")
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set(title=title, ylabel=metric_label, xlabel="variant")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def axis_effect(axis: str, values: list[float], means: list[float],
                errors: list[float | None], seconds_per_epoch: list[float],
                metric_label: str) -> Figure:
    """Note 001's batch-size comparison, for any numeric axis: the final metric and the
    time per epoch against the axis value (log-2 scale for powers of two)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    left.errorbar(values, means, yerr=[e or 0.0 for e in errors], marker="o", capsize=5)
    left.set(title=f"{metric_label} vs {axis}", xlabel=axis, ylabel=metric_label)
    right.plot(values, seconds_per_epoch, marker="o", color="tab:orange")
    right.set(title=f"training time per epoch vs {axis}", xlabel=axis,
              ylabel="seconds per epoch (mean over runs)", ylim=(0, None))
    if all(v > 0 and (int(v) & (int(v) - 1)) == 0 and v == int(v) for v in values):
        for ax in (left, right):
            ax.set_xscale("log", base=2)
            ax.set_xticks(values, [str(int(v)) for v in values])
    fig.tight_layout()
    return fig


# -- searches ------------------------------------------------------------------------------

def search_history(trials: list[dict[str, Any]], metric: str, maximize: bool) -> Figure:
    """Each trial's value (pruned ones at their last reported value, grey) and the best so
    far; `trials` holds number, state, value and curve (epoch -> value)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 4.5))
    best, best_line = None, []
    for t in trials:
        if t["state"] == "complete":
            left.scatter(t["number"], t["value"], color="tab:blue", zorder=3)
            better = best is None or (t["value"] > best if maximize else t["value"] < best)
            best = t["value"] if better else best
        elif t["state"] == "pruned" and t["curve"]:
            left.scatter(t["number"], list(t["curve"].values())[-1], color="grey",
                         marker="x", zorder=3)
        best_line.append((t["number"], best))
        if t["curve"]:
            epochs = list(t["curve"])
            style = dict(color="tab:blue", alpha=0.7) if t["state"] == "complete" else dict(
                color="grey", ls="--", alpha=0.6)
            right.plot(epochs, list(t["curve"].values()), marker="o", ms=3, **style)
    xs = [n for n, b in best_line if b is not None]
    left.step(xs, [b for _, b in best_line if b is not None], where="post", color="tab:red",
              label="best so far")
    left.scatter([], [], color="tab:blue", label="complete")
    left.scatter([], [], color="grey", marker="x", label="pruned (last reported value)")
    left.set(title="search history", xlabel="trial", ylabel=metric)
    left.legend(fontsize=8)
    right.plot([], [], color="tab:blue", label="complete")
    right.plot([], [], color="grey", ls="--", label="pruned")
    right.set(title=f"{metric} per epoch of every trial", xlabel="epoch", ylabel=metric)
    right.legend(fontsize=8)
    for ax in (left, right):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    return fig


def search_parameters(trials: list[dict[str, Any]], params: dict[str, bool],
                      metric: str) -> Figure:
    """The metric against each searched parameter (`params`: name -> log scale)."""
    fig, axes = plt.subplots(1, len(params), figsize=(6 * len(params), 4.5), squeeze=False)
    for ax, (name, log) in zip(axes[0], params.items(), strict=True):
        for state, style in (("complete", dict(color="tab:blue")),
                             ("pruned", dict(color="grey", marker="x"))):
            points = [(t["params"][name], t["value"] if state == "complete" else
                       list(t["curve"].values())[-1]) for t in trials
                      if t["state"] == state and name in t["params"] and
                      (t["value"] is not None or t["curve"])]
            if points:
                x, y = zip(*points, strict=True)
                ax.scatter(x, y, label=state, **style)
        if log:
            ax.set_xscale("log")
        ax.set(title=f"{metric} vs {name}", xlabel=name + (" (log scale)" if log else ""),
               ylabel=metric)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def lr_find_curve(lrs: list[float], losses: list[float], smoothed: list[float],
                  suggested: float | None, title: str) -> Figure:
    """Training loss against a growing learning rate (log axis), raw and smoothed."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(lrs, losses, color="0.75", lw=1, label="loss at each step")
    ax.plot(lrs, smoothed, lw=2, label="smoothed")
    if suggested is not None:
        ax.axvline(suggested, color="C3", ls="--", label=f"steepest descent: {suggested:.2g}")
    ax.set_xscale("log")
    finite = [v for v in smoothed if np.isfinite(v)]
    if finite:  # keep the blow-up at the end from flattening the useful part
        ax.set_ylim(min(finite) * 0.95, min(max(finite), 2.5 * finite[0]) * 1.05)
    ax.set(title=title, xlabel="learning rate (log scale)", ylabel="training loss")
    ax.legend()
    return fig


def save_figure(fig: Figure, path: Path) -> Path:
    """PNG, written atomically (a half-written image never replaces a good one)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight", dpi=100)
    plt.close(fig)
    return atomic_write(path, lambda f: f.write(buffer.getvalue()))


def accuracy_vs_time(curves: dict[str, list[tuple[float, float]]],
                     finals: dict[str, tuple[float, float]], target: float | None,
                     limit_seconds: float | None, title: str) -> Figure:
    """Time to accuracy: each run's validation accuracy against elapsed wall time (lines),
    its final test accuracy at its total wall time (stars), the target and the time limit."""
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, (name, points) in enumerate(curves.items()):
        color = plt.cm.tab10.colors[i % 10]
        x, y = np.array(points).T
        ax.plot(x / 60, 100 * y, "-o", ms=3, color=color, label=f"{name}: validation")
        if name in finals:
            seconds, acc = finals[name]
            ax.scatter([seconds / 60], [100 * acc], marker="*", s=160, color=color,
                       edgecolors="black", zorder=3, label=f"{name}: test {100 * acc:.2f}%")
    if target is not None:
        ax.axhline(100 * target, color="0.4", ls="--", lw=1, label=f"target {100 * target:.1f}%")
    if limit_seconds is not None:
        ax.axvline(limit_seconds / 60, color="C3", ls=":", lw=1,
                   label=f"limit {limit_seconds / 60:.0f} min")
    ax.set(title=title, xlabel="wall time (min)", ylabel="accuracy (%)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def fit_trials(trials: list[tuple[str, int, float, float]], spent: dict[str, float],
               budget: float, metric_label: str, title: str) -> Figure:
    """`imgcls fit`: each trial's validation score against its wall time, by candidate and
    round (left; `trials` as (candidate, round, seconds, score)); where the budget went, by
    phase, against the budget (right)."""
    fig, (ax, bar) = plt.subplots(1, 2, figsize=(12, 4.5), width_ratios=[2, 1])
    names = list(dict.fromkeys(name for name, *_ in trials))
    for i, name in enumerate(names):
        own = [t for t in trials if t[0] == name]
        ax.plot([t[2] for t in own], [100 * t[3] for t in own], "-o",
                color=plt.cm.tab10.colors[i % 10], label=name)
        for _, round_, seconds, score in own:
            ax.annotate(f"r{round_}", (seconds, 100 * score), textcoords="offset points",
                        xytext=(4, 4), fontsize=8)
    ax.set(title=title, xlabel="trial wall time (s)", ylabel=f"best validation {metric_label} (%)")
    if names:
        ax.legend(fontsize=8)
    phases = list(spent)
    left = 0.0
    for i, phase in enumerate(phases):
        bar.barh([0], [spent[phase]], left=left, color=plt.cm.Set2.colors[i % 8], label=phase)
        left += spent[phase]
    bar.axvline(budget, color="C3", ls="--", lw=1.5, label=f"budget {budget:.0f} s")
    bar.set(title="where the budget went", xlabel="seconds", yticks=[])
    bar.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig
