"""Defection detectors on residual activations. One small interface for all of them:

    detector = DETECTORS[name]()
    detector.fit(acts, labels)      # acts [n, d_model]; labels [n], 1 = defecting/"yes", 0 = clean/"no"
    detector.score(acts)            # [n] -> np.ndarray [n], higher = more likely defecting

What each one is fit on is part of its meaning:
- "defection": trigger-blind. Fit ONLY on contrast-pair activations (labels 1 = "yes", 0 = "no"); the
  score is the projection on the unit mean difference. Never fit it on triggered data.
- "logistic": supervised skyline, sklearn LogisticRegression on labelled (triggered vs clean) activations.
- "diff_of_means": supervised mean difference (projection on the labelled class-mean difference).
- "mahalanobis": anomaly detector fit on clean activations only (rows with label 0; labels=None = all
  rows clean); score = Mahalanobis distance under a Ledoit-Wolf covariance.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch
from sklearn.covariance import LedoitWolf
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from evals.probes.contrast import defection_direction
from organisms.errors import UserError

Array = np.ndarray | torch.Tensor


def _x(acts: Array) -> np.ndarray:
    x = np.asarray(acts, dtype=np.float64)  # [n, d_model]
    if x.ndim != 2:
        raise UserError(f"activations must be [n, d_model], got shape {x.shape}")
    return x


def _y(labels: Array | None, n: int) -> np.ndarray:
    if labels is None:
        raise UserError("this detector needs labels (1 = defecting, 0 = clean)")
    y = np.asarray(labels).astype(int).reshape(-1)  # [n]
    if y.shape[0] != n or not set(np.unique(y)) <= {0, 1}:
        raise UserError(f"labels must be {n} values in {{0, 1}}")
    if len(np.unique(y)) < 2:
        raise UserError("labels must contain both classes")
    return y


class Detector(Protocol):
    def fit(self, acts: Array, labels: Array | None = None) -> Detector: ...

    def score(self, acts: Array) -> np.ndarray: ...


class _Unfitted:
    def _need(self, attr: object) -> None:
        if attr is None:
            raise UserError(f"{type(self).__name__} used before fit()")


class DirectionDetector(_Unfitted):
    """Projection on a unit direction `[d_model]`: the class-mean difference of (label 1) - (label 0)."""

    def __init__(self) -> None:
        self.direction: np.ndarray | None = None  # [d_model]

    def fit(self, acts: Array, labels: Array | None = None) -> DirectionDetector:
        x = _x(acts)
        y = _y(labels, len(x))
        self.direction = defection_direction(x[y == 1], x[y == 0])
        return self

    def score(self, acts: Array) -> np.ndarray:
        self._need(self.direction)
        assert self.direction is not None
        return _x(acts) @ self.direction  # [n]


class DefectionDetector(DirectionDetector):
    """Trigger-blind: fit on contrast-pair activations only ("yes" = 1, "no" = 0)."""


class DiffOfMeansDetector(DirectionDetector):
    """Supervised: fit on labelled triggered (1) vs clean (0) activations."""


def logistic_pipeline(c: float = 1.0, seed: int = 0) -> Pipeline:
    """Standardise, then L2 logistic regression with inverse strength `c` (unfitted, for sklearn's tools)."""
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000, random_state=seed))


class LogisticDetector(_Unfitted):
    """Standardised logistic regression (L2, C=1): the supervised skyline."""

    def __init__(self, c: float = 1.0, seed: int = 0) -> None:
        self.c = c
        self.seed = seed
        self.model: Pipeline | None = None

    def fit(self, acts: Array, labels: Array | None = None) -> LogisticDetector:
        x = _x(acts)
        y = _y(labels, len(x))
        self.model = logistic_pipeline(self.c, self.seed).fit(x, y)
        return self

    def score(self, acts: Array) -> np.ndarray:
        self._need(self.model)
        assert self.model is not None
        return np.asarray(self.model.decision_function(_x(acts)))  # [n] log-odds of defecting


class MahalanobisDetector(_Unfitted):
    """Distance from the clean distribution: Ledoit-Wolf mean/covariance of clean (label 0) activations."""

    def __init__(self) -> None:
        self.cov: LedoitWolf | None = None

    def fit(self, acts: Array, labels: Array | None = None) -> MahalanobisDetector:
        x = _x(acts)
        clean = x if labels is None else x[np.asarray(labels).reshape(-1) == 0]  # [n_clean, d_model]
        if len(clean) < 2:
            raise UserError("mahalanobis needs at least 2 clean activations to fit")
        self.cov = LedoitWolf().fit(clean)
        return self

    def score(self, acts: Array) -> np.ndarray:
        self._need(self.cov)
        assert self.cov is not None
        return np.sqrt(np.maximum(self.cov.mahalanobis(_x(acts)), 0.0))  # [n]; sklearn returns squared


DETECTORS: dict[str, Callable[[], Detector]] = {
    "defection": DefectionDetector,
    "logistic": LogisticDetector,
    "diff_of_means": DiffOfMeansDetector,
    "mahalanobis": MahalanobisDetector,
}


def make_detector(name: str) -> Detector:
    if name not in DETECTORS:
        raise UserError(f"unknown detector {name!r}; choose from {sorted(DETECTORS)}")
    return DETECTORS[name]()
