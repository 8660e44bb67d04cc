"""Likely label errors: every image's predicted class probabilities from a classifier that
never saw it (k-fold cross-validation of a logistic regression on the images' features),
ranked by the probability of the image's own label, lowest first: cleanlab's default
`self_confidence` score. A mislabelled image is one the other images of its class do not
look like, so the classifier trained without it gives its label a low probability."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

FOLDS = 5
PENALTIES = (1e-4, 1e-3, 1e-2)  # L2 strengths tried on the first fold
STEPS = 100  # L-BFGS iterations


def stratified_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Each image's fold, every class spread evenly over the folds."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        fold[members] = np.arange(len(members)) % folds
    return fold


def fit_logistic(x: torch.Tensor, y: torch.Tensor, classes: int, penalty: float
                 ) -> torch.Tensor:
    """Weights (D + 1, C) of a multinomial logistic regression, L2-penalised, by L-BFGS on
    the whole set (features fit in memory: an exact optimum, no learning rate to pick)."""
    w = torch.zeros(x.shape[1] + 1, classes, requires_grad=True)
    ones = torch.ones(len(x), 1)
    xb = torch.cat([x, ones], 1)
    optimizer = torch.optim.LBFGS([w], max_iter=STEPS, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        value = F.cross_entropy(xb @ w, y) + penalty * w[:-1].pow(2).sum()
        value.backward()
        return value

    optimizer.step(loss)
    return w.detach()


def _predict(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.softmax(torch.cat([x, torch.ones(len(x), 1)], 1) @ w, 1)


def out_of_fold_probabilities(features: torch.Tensor, labels: np.ndarray, classes: int,
                              seed: int = 0) -> tuple[torch.Tensor, float]:
    """(N, C) probabilities, each row from the fold model that did not train on it, and
    the L2 strength the first fold chose (by its held-out log loss). Features are scaled
    to unit variance per dimension (unit-length rows of D dimensions: times sqrt(D)), so
    the penalties mean the same for any feature size."""
    x = features * features.shape[1] ** 0.5
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    fold = torch.from_numpy(stratified_folds(np.asarray(labels), FOLDS, seed))
    held = fold == 0
    losses = {p: F.nll_loss(torch.log(_predict(fit_logistic(x[~held], y[~held], classes, p),
                                                x[held]) + 1e-12), y[held]).item()
              for p in PENALTIES}
    penalty = min(losses, key=losses.get)
    probabilities = torch.empty(len(x), classes)
    for f in range(FOLDS):
        held = fold == f
        probabilities[held] = _predict(fit_logistic(x[~held], y[~held], classes, penalty),
                                       x[held])
    return probabilities, penalty


def ranked_suspects(probabilities: torch.Tensor, labels: np.ndarray, limit: int
                    ) -> list[tuple[int, float, int, float]]:
    """(index, probability of its label, suggested class, its probability) for the images
    whose label is not the predicted class, lowest own-label probability first, at most
    `limit`."""
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    own = probabilities.gather(1, y[:, None])[:, 0]
    others = probabilities.clone()
    others.scatter_(1, y[:, None], -1.0)
    best, suggested = others.max(1)
    wrong = torch.nonzero(best > own).flatten()
    order = wrong[torch.argsort(own[wrong], stable=True)][:limit]
    return [(int(i), float(own[i]), int(suggested[i]), float(best[i])) for i in order]
