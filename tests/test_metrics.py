"""Classification metrics against small hand-computed examples."""

import math

import pytest
import torch

from imgcls.train.metrics import (
    balanced_accuracy,
    confusion_matrix,
    macro_f1,
    per_class_scores,
    per_class_table,
    scores,
    top_k_accuracy,
)

# 4 classes; class 2 is never predicted, class 3 neither occurs nor is predicted
LABELS = torch.tensor([0, 0, 0, 1, 1, 2])
PREDICTED = torch.tensor([0, 0, 1, 1, 1, 0])


def logits_for(predicted: torch.Tensor, classes: int) -> torch.Tensor:
    """Logits whose argmax is `predicted` (and whose other entries differ)."""
    logits = torch.randn(len(predicted), classes, generator=torch.Generator().manual_seed(0))
    logits[torch.arange(len(predicted)), predicted] = 10.0
    return logits


def test_confusion_matrix_rows_are_true_classes():
    matrix = confusion_matrix(logits_for(PREDICTED, 4), LABELS)
    assert matrix.dtype == torch.int64
    assert matrix.tolist() == [[2, 1, 0, 0],
                               [0, 2, 0, 0],
                               [1, 0, 0, 0],
                               [0, 0, 0, 0]]


def test_per_class_scores_by_hand():
    table = per_class_scores(confusion_matrix(logits_for(PREDICTED, 4), LABELS))
    assert table["support"].tolist() == [3, 2, 1, 0]
    # precision: hits / predicted (3, 3, 0, 0); recall: hits / support; F1 = 2 TP / (s + p)
    assert table["precision"].tolist() == pytest.approx([2 / 3, 2 / 3, 0, 0])
    assert table["recall"].tolist() == pytest.approx([2 / 3, 1, 0, 0])
    assert table["f1"].tolist() == pytest.approx([4 / 6, 4 / 5, 0, 0])
    for values in table.values():
        assert not torch.isnan(values.float()).any()


def test_macro_f1_and_balanced_accuracy_by_hand():
    matrix = confusion_matrix(logits_for(PREDICTED, 4), LABELS)
    # over the classes seen among labels or predictions (0, 1, 2), not the absent class 3
    assert macro_f1(matrix) == pytest.approx((2 / 3 + 4 / 5 + 0) / 3)
    # mean recall over the classes that have images
    assert balanced_accuracy(matrix) == pytest.approx((2 / 3 + 1 + 0) / 3)


def test_empty_and_perfect_cases_score_without_nan():
    empty = torch.zeros(3, 3, dtype=torch.int64)
    assert macro_f1(empty) == 0.0 and balanced_accuracy(empty) == 0.0
    table = per_class_scores(empty)
    assert all(not torch.isnan(v.float()).any() for v in table.values())
    perfect = confusion_matrix(logits_for(LABELS, 3), LABELS)
    assert macro_f1(perfect) == pytest.approx(1.0)
    assert balanced_accuracy(perfect) == pytest.approx(1.0)


def test_balanced_accuracy_differs_from_accuracy_under_imbalance():
    labels = torch.tensor([0] * 9 + [1])
    always_zero = logits_for(torch.zeros(10, dtype=torch.long), 2)
    matrix = confusion_matrix(always_zero, labels)
    assert balanced_accuracy(matrix) == pytest.approx(0.5)  # accuracy would be 0.9
    assert macro_f1(matrix) == pytest.approx((2 * 9 / (9 + 10) + 0) / 2)


def test_top5_accuracy_by_hand_and_only_above_5_classes():
    # class ranks of the true label: 1st, 5th (in the top 5), 6th, 7th (not)
    order = torch.arange(7.0)  # logit 6 is the highest
    logits = order.repeat(4, 1)
    labels = torch.tensor([6, 2, 1, 0])
    assert top_k_accuracy(logits, labels, 5) == pytest.approx(0.5)
    assert top_k_accuracy(logits, labels, 1) == pytest.approx(0.25)
    assert scores(logits, labels)["top5_accuracy"] == pytest.approx(0.5)
    assert "top5_accuracy" not in scores(logits[:, :5], torch.tensor([4, 2, 1, 0]))
    assert set(scores(logits_for(PREDICTED, 4), LABELS)) == {"macro_f1", "balanced_accuracy"}


def test_per_class_table_names_the_classes():
    rows = per_class_table(logits_for(PREDICTED, 4), LABELS, ["a", "b", "c", "d"])
    assert [r["class"] for r in rows] == ["a", "b", "c", "d"]
    assert [r["support"] for r in rows] == [3, 2, 1, 0]
    assert all(isinstance(r["support"], int) for r in rows)
    assert rows[1] == {"class": "b", "precision": pytest.approx(2 / 3), "recall": 1.0,
                       "f1": pytest.approx(0.8), "support": 2}
    assert all(not math.isnan(r[k]) for r in rows for k in ("precision", "recall", "f1"))
    assert [r["class"] for r in per_class_table(logits_for(PREDICTED, 4), LABELS)] == [
        0, 1, 2, 3]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_metrics_stay_on_the_logits_device():
    logits = logits_for(PREDICTED, 4).cuda()
    assert confusion_matrix(logits, LABELS).device.type == "cuda"
    assert scores(logits, LABELS.cuda())["balanced_accuracy"] == pytest.approx(5 / 9)
