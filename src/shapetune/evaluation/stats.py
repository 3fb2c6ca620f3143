"""Diagnosis statistics with subject-level bootstrap CIs, and paired comparisons of two models.

Classification metrics live in a registry (name -> function of labels and HCM probabilities); each is
reported with a percentile bootstrap 95 % CI over subjects (resampled with replacement, stratified by
class so every resample has both classes). Paired tests: exact McNemar on the discordant pairs for
accuracy, Wilcoxon signed-rank for per-subject reconstruction metrics.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import stats as sps
from sklearn.metrics import confusion_matrix, roc_auc_score


def _pred(p: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    return (p > threshold).astype(int)


def _sens(y, p):
    pos = y == 1
    return float(np.mean(_pred(p[pos]) == 1)) if pos.any() else float("nan")


def _spec(y, p):
    neg = y == 0
    return float(np.mean(_pred(p[neg]) == 0)) if neg.any() else float("nan")


def _auc(y, p):
    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")


CLASSIFICATION_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": lambda y, p: float(np.mean(_pred(p) == y)),
    "balanced_accuracy": lambda y, p: float(np.nanmean([_sens(y, p), _spec(y, p)])),
    "sensitivity": _sens,
    "specificity": _spec,
    "auc": _auc,
}


def bootstrap_indices(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``[n, len(y)]`` resampling indices, stratified by class."""
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(y == c) for c in np.unique(y)]
    return np.concatenate([g[rng.integers(0, len(g), (n, len(g)))] for g in groups], axis=1)


def classification_report(y: np.ndarray, prob: np.ndarray, n_boot: int = 2000, seed: int = 0,
                          alpha: float = 0.05) -> dict[str, dict[str, float]]:
    """Every registered metric with its bootstrap CI: ``{name: {value, lo, hi}}``, plus the confusion matrix."""
    y, prob = np.asarray(y).astype(int), np.asarray(prob, dtype=float)
    idx = bootstrap_indices(y, n_boot, seed)
    out: dict[str, dict[str, float]] = {}
    for name, fn in CLASSIFICATION_METRICS.items():
        boots = np.array([fn(y[i], prob[i]) for i in idx])
        lo, hi = np.nanpercentile(boots, [100 * alpha / 2, 100 * (1 - alpha / 2)])
        out[name] = {"value": fn(y, prob), "lo": float(lo), "hi": float(hi)}
    tn, fp, fn_, tp = confusion_matrix(y, _pred(prob), labels=[0, 1]).ravel()
    out["confusion"] = {"tn": int(tn), "fp": int(fp), "fn": int(fn_), "tp": int(tp)}
    return out


def mean_ci(values: np.ndarray, n_boot: int = 2000, seed: int = 0,
            alpha: float = 0.05) -> tuple[float, float, float, float]:
    """Mean, sd and the bootstrap CI of the mean (finite values only)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return (float("nan"),) * 4
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), (n_boot, len(v)))].mean(axis=1)
    lo, hi = np.percentile(means, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0, float(lo), float(hi)


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, float]:
    """Exact McNemar test of two classifiers on the same subjects (two-sided binomial on discordant pairs)."""
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    n01, n10 = int(np.sum(~a & b)), int(np.sum(a & ~b))
    n = n01 + n10
    p = 1.0 if n == 0 else float(sps.binomtest(min(n01, n10), n, 0.5).pvalue)
    return {"a_only_correct": n10, "b_only_correct": n01, "p_value": p}


def wilcoxon_paired(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Wilcoxon signed-rank test of per-subject values of two models (finite pairs only)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    d = x[ok] - y[ok]
    if len(d) == 0 or np.all(d == 0):
        return {"n": int(len(d)), "median_difference": 0.0, "p_value": 1.0}
    res = sps.wilcoxon(x[ok], y[ok])
    return {"n": int(len(d)), "median_difference": float(np.median(d)), "p_value": float(res.pvalue)}
