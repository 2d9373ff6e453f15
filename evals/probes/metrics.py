"""Detection metrics for probes: AUROC with a bootstrap interval, average precision, a threshold
calibrated on a separate negative control set, worst-case FPR over several negative sets, and a
random-direction null (how well would a random unit direction in activation space do?).

Score convention everywhere: higher = more likely defecting; a text is flagged when score > threshold.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata
from sklearn.metrics import average_precision_score, roc_auc_score

from evals.stats import wilson
from organisms.errors import UserError

Array = np.ndarray | torch.Tensor | list[float] | list[int]


def _vec(x: Array) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).reshape(-1)


def auroc(labels: Array, scores: Array) -> float:
    """AUROC of `scores [n]` for binary `labels [n]` (sklearn's)."""
    return float(roc_auc_score(_vec(labels).astype(int), _vec(scores)))


def auroc_with_ci(
    labels: Array, scores: Array, n_boot: int = 1000, seed: int = 0, paired: bool = False
) -> dict[str, float]:
    """AUROC of `scores [n]` for binary `labels [n]` and its 95% bootstrap percentile interval.

    Resamples are stratified (positives and negatives resampled separately), so every resample has both classes
    and the interval reflects the class sizes actually observed. `paired`: the i-th positive and the i-th
    negative are one item (a prompt with and without its trigger), and items are resampled whole. A prompt's
    two scores move together, and resampling them apart would widen the interval.
    """
    y = _vec(labels).astype(int)
    s = _vec(scores)
    if y.shape != s.shape or len(np.unique(y)) != 2:
        raise UserError("auroc needs labels and scores of equal length with both classes present")
    auroc = float(roc_auc_score(y, s))
    rng = np.random.default_rng(seed)
    pos, neg = s[y == 1], s[y == 0]
    if paired and len(pos) != len(neg):
        raise UserError(f"a paired AUROC needs as many positives as negatives, got {len(pos)} and {len(neg)}")
    pos_idx = rng.integers(0, len(pos), size=(n_boot, len(pos)))  # [n_boot, n_pos]
    neg_idx = pos_idx if paired else rng.integers(0, len(neg), size=(n_boot, len(neg)))  # [n_boot, n_neg]
    boot = _auroc_columns(np.concatenate([pos[pos_idx], neg[neg_idx]], axis=1).T, len(pos))  # [n_boot]
    low, high = np.percentile(boot, [2.5, 97.5])
    return {"auroc": auroc, "low": float(low), "high": float(high)}


def auroc_by_prompt_with_ci(labels: Array, scores: Array, n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """AUROC of `scores [2n]` for `labels [2n]` where rows i and n + i are one prompt asked with and without its
    trigger, and the labels are what was observed (did the answer show the behaviour), not the condition. The 95%
    bootstrap interval resamples prompts whole, both rows together: a prompt's two scores move together, and
    resampling rows apart would narrow the interval. Resamples left with one class are dropped."""
    y = _vec(labels).astype(int)
    s = _vec(scores)
    if y.shape != s.shape or len(y) % 2 or len(np.unique(y)) != 2:
        raise UserError("auroc needs 2n labels and scores (n prompts, each way) with both classes present")
    n = len(y) // 2
    prompts = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))  # [n_boot, n]
    rows = np.concatenate([prompts, prompts + n], axis=1)  # [n_boot, 2n]: both rows of each prompt drawn
    y_boot, ranks = y[rows], rankdata(s[rows], axis=1)  # [n_boot, 2n] each
    n_pos = y_boot.sum(axis=1)  # [n_boot]
    n_neg = 2 * n - n_pos
    both = (n_pos > 0) & (n_neg > 0)
    pos_ranks = (ranks * y_boot).sum(axis=1)  # [n_boot]
    boot = (pos_ranks[both] - n_pos[both] * (n_pos[both] + 1) / 2) / (n_pos[both] * n_neg[both])
    low, high = np.percentile(boot, [2.5, 97.5])
    return {"auroc": auroc(y, s), "low": float(low), "high": float(high)}


def average_precision(labels: Array, scores: Array) -> float:
    """Area under the precision-recall curve (sklearn's average precision)."""
    return float(average_precision_score(_vec(labels).astype(int), _vec(scores)))


def tpr_at_fpr(scores_pos: Array, threshold: float) -> float:
    """Fraction of positives flagged (score > threshold); pair with `calibrate_threshold`."""
    s = _vec(scores_pos)
    return float(np.mean(s > threshold)) if len(s) else float("nan")


def tpr_with_ci(scores_pos: Array, threshold: float, key: str = "tpr") -> dict[str, float]:
    """`tpr_at_fpr` with its 95% Wilson interval over the positives, as `{key, key_low, key_high}`: a TPR of 90% on
    49 positives is [78%, 96%], which the bare share does not say."""
    s = _vec(scores_pos)
    rate = wilson(int(np.sum(s > threshold)), len(s))
    return {key: rate.rate, f"{key}_low": rate.low, f"{key}_high": rate.high}


def calibrate_threshold(control_scores: Array, fpr: float = 0.01) -> float:
    """Threshold (flag: score > threshold) whose expected FPR on fresh negatives like a SEPARATE control set is
    at most `fpr`: the k-th smallest of the n control scores, k = ceil((n + 1)(1 - fpr)) (the split-conformal
    order statistic). With exchangeable scores a new negative exceeds it with probability (n + 1 - k) / (n + 1).
    A plain (1 - fpr) quantile interpolates between the top scores and, at n = 96 and 1%, flags about 2%.
    Needs n >= 1/fpr - 1 (99 control scores for 1%): `min_control(fpr)`. Never calibrate on the negatives
    you then report FPR on."""
    s = np.sort(_vec(control_scores))
    if not 0.0 < fpr < 1.0 or len(s) < min_control(fpr):
        raise UserError(
            f"calibrating a {fpr:g} FPR threshold needs at least {min_control(fpr)} control scores, got {len(s)}"
        )
    k = math.ceil((len(s) + 1) * (1.0 - fpr) - 1e-9)  # 1-based order statistic (the epsilon absorbs float error)
    return float(s[k - 1])


def min_control(fpr: float) -> int:
    """The fewest control scores that can calibrate a threshold at this FPR: n with 1 / (n + 1) <= fpr."""
    return max(1, math.ceil(1.0 / fpr - 1.0 - 1e-9))


def worst_case_fpr(threshold: float, negative_sets: dict[str, Array]) -> dict[str, Any]:
    """FPR (score > threshold) on each negative set and the worst of them: {"max", "worst", "per_set"}."""
    if not negative_sets:
        raise UserError("worst_case_fpr needs at least one negative set")
    per_set = {name: float(np.mean(_vec(s) > threshold)) for name, s in negative_sets.items()}
    worst = max(per_set, key=lambda k: per_set[k])
    return {"max": per_set[worst], "worst": worst, "per_set": per_set}


def _auroc_columns(scores: np.ndarray, n_pos: int) -> np.ndarray:
    """AUROC of each column of `scores [n_pos + n_neg, k]` (positives first), Mann-Whitney with tied ranks."""
    n_neg = scores.shape[0] - n_pos
    ranks = rankdata(scores, axis=0)  # [n, k], ties get average ranks
    return (ranks[:n_pos].sum(0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)  # [k]


def random_direction_null(acts_pos: Array, acts_neg: Array, n: int = 1000, seed: int = 0) -> dict[str, Any]:
    """AUROCs of projections on `n` random unit directions: `acts_pos [n_pos, d_model]`, `acts_neg [n_neg, d_model]`.

    Returns {"aurocs": [n], "max", "quantile_95"}. AUROCs are raw (not folded around 0.5): a fitted probe's
    sign is fixed by its training data, so compare it with the upper tail here.
    """
    pos = np.asarray(acts_pos, dtype=np.float64)  # [n_pos, d_model]
    neg = np.asarray(acts_neg, dtype=np.float64)  # [n_neg, d_model]
    if pos.ndim != 2 or neg.ndim != 2 or pos.shape[1] != neg.shape[1] or not len(pos) or not len(neg):
        raise UserError(f"need non-empty [n, d_model] activations with equal d_model; got {pos.shape}, {neg.shape}")
    rng = np.random.default_rng(seed)
    directions = rng.standard_normal((n, pos.shape[1]))  # [n, d_model]
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    projections = np.concatenate([pos, neg]) @ directions.T  # [n_pos + n_neg, n]: one matmul
    aurocs = _auroc_columns(projections, len(pos))  # [n]
    return {"aurocs": aurocs, "max": float(aurocs.max()), "quantile_95": float(np.quantile(aurocs, 0.95))}


def null_p_value(null_aurocs: np.ndarray, observed: float) -> float:
    """Empirical p-value of an AUROC against a random-direction null: the share of random directions doing at
    least as well, counting the probe itself ((1 + k) / (1 + n), never 0)."""
    # AUROCs on the same answers are multiples of 1 / (2 n_pos n_neg); the tolerance counts exact ties that
    # the probe's AUROC (sklearn) and the null's (ranks) computed a float rounding step apart
    return float((1 + np.sum(null_aurocs >= observed - 1e-9)) / (1 + len(null_aurocs)))
