"""Classification metrics from logits (N, C) and integer labels (N,), computed with torch on
the logits' device: the confusion matrix, per-class precision/recall/F1/support, macro-F1,
balanced accuracy and top-5 accuracy.

Empty cases score 0, never NaN: a class nobody predicted has precision 0, a class with no
images recall 0, and F1 = 2 TP / (support + predicted) is 0 when both are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from imgcls.config import ConfigError

if TYPE_CHECKING:
    from imgcls.config import Config

SCORES = ("macro_f1", "balanced_accuracy", "top5_accuracy")
"""What `scores` returns (top5_accuracy only with more than 5 classes); the trainer logs
them as val_* and test_*."""


def confusion_matrix(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(C, C) int64 counts on the logits' device: row = true class, column = predicted."""
    classes = logits.shape[1]
    labels = labels.to(logits.device).long()
    cells = labels * classes + logits.argmax(1)
    return torch.bincount(cells, minlength=classes * classes).view(classes, classes)


def per_class_scores(matrix: torch.Tensor) -> dict[str, torch.Tensor]:
    """precision, recall, f1 (float) and support (int) per class, from a confusion matrix."""
    hits = matrix.diagonal()
    support, predicted = matrix.sum(1), matrix.sum(0)
    return {"precision": hits / predicted.clamp(min=1),
            "recall": hits / support.clamp(min=1),
            "f1": 2 * hits / (support + predicted).clamp(min=1),
            "support": support}


def macro_f1(matrix: torch.Tensor) -> float:
    """The mean F1 over the classes that occur among the labels or the predictions (as
    scikit-learn's f1_score(average='macro')); 0 without any."""
    f1 = per_class_scores(matrix)["f1"]
    seen = (matrix.sum(1) + matrix.sum(0)) > 0
    return f1[seen].mean().item() if seen.any() else 0.0


def balanced_accuracy(matrix: torch.Tensor) -> float:
    """The mean recall over the classes that have images; 0 without any."""
    recall = per_class_scores(matrix)["recall"]
    present = matrix.sum(1) > 0
    return recall[present].mean().item() if present.any() else 0.0


def top_k_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int = 5) -> float:
    """The share of images whose class is among the k highest logits."""
    top = logits.topk(min(k, logits.shape[1]), dim=1).indices
    return (top == labels.to(logits.device).long()[:, None]).any(1).float().mean().item()


def scores(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """macro_f1, balanced_accuracy and, with more than 5 classes, top5_accuracy."""
    matrix = confusion_matrix(logits, labels)
    result = {"macro_f1": macro_f1(matrix), "balanced_accuracy": balanced_accuracy(matrix)}
    if logits.shape[1] > 5:
        result["top5_accuracy"] = top_k_accuracy(logits, labels, 5)
    return result


def per_class_table(logits: torch.Tensor, labels: torch.Tensor,
                    classes: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One row per class: {class, precision, recall, f1, support}; `class` is the name from
    `classes`, else the class index."""
    table = per_class_scores(confusion_matrix(logits, labels))
    columns = {key: values.tolist() for key, values in table.items()}
    names = list(classes) if classes is not None else list(range(logits.shape[1]))
    return [{"class": name, "precision": columns["precision"][i],
             "recall": columns["recall"][i], "f1": columns["f1"][i],
             "support": int(columns["support"][i])} for i, name in enumerate(names)]


def check_monitors(cfg: Config, num_classes: int) -> None:
    """Top-5 accuracy exists with more than 5 classes only: refuse to monitor it otherwise,
    before training rather than after the first epoch."""
    if num_classes > 5:
        return
    for key, metric in cfg.monitors():
        if metric.endswith("top5_accuracy"):
            raise ConfigError(f"{key} = {metric!r}: top-5 accuracy needs more than 5 classes "
                              f"(the data has {num_classes}); monitor val_accuracy, "
                              "val_macro_f1 or val_balanced_accuracy")
