"""Diagnosis statistics: metric values, CI coverage on simulated data, paired tests."""

from __future__ import annotations

import numpy as np
import pytest

from shapetune.evaluation.stats import classification_report, mcnemar, mean_ci, wilcoxon_paired


def test_report_values_and_confusion():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.7, 0.3, 0.9, 0.8, 0.4, 0.6])
    r = classification_report(y, p, n_boot=500)
    assert r["accuracy"]["value"] == 0.75 and r["sensitivity"]["value"] == 0.75 and r["specificity"]["value"] == 0.75
    assert r["confusion"] == {"tn": 3, "fp": 1, "fn": 1, "tp": 3}
    assert r["auc"]["value"] == pytest.approx(14 / 16)
    for k in ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "auc"):
        assert r[k]["lo"] <= r[k]["value"] <= r[k]["hi"]


def test_bootstrap_ci_covers_the_truth_at_about_the_nominal_rate():
    rng = np.random.default_rng(0)
    hits = 0
    n_sim = 300
    for s in range(n_sim):
        correct = rng.random(120) < 0.8  # true accuracy 0.8
        _, _, lo, hi = mean_ci(correct.astype(float), n_boot=1000, seed=s)
        hits += lo <= 0.8 <= hi
    assert 0.90 <= hits / n_sim <= 0.98, hits / n_sim


def test_mcnemar_and_wilcoxon():
    a = np.array([1] * 30 + [0] * 10, bool)
    b = np.array([1] * 20 + [0] * 20, bool)
    r = mcnemar(a, b)
    assert r["a_only_correct"] == 10 and r["b_only_correct"] == 0 and r["p_value"] == pytest.approx(2 / 2**10)
    assert mcnemar(a, a)["p_value"] == 1.0
    rng = np.random.default_rng(1)
    x = rng.normal(0.85, 0.02, 50)
    w = wilcoxon_paired(x + 0.01, x)
    assert w["p_value"] < 1e-6 and w["median_difference"] == pytest.approx(0.01)
    assert wilcoxon_paired(x, x)["p_value"] == 1.0


@pytest.mark.parametrize("seed", range(5))
def test_the_vectorised_metrics_equal_sklearn_on_every_resample(seed):
    from sklearn.metrics import balanced_accuracy_score, recall_score, roc_auc_score

    from shapetune.evaluation.stats import CLASSIFICATION_METRICS, bootstrap_indices

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 60)
    p = np.round(np.clip(0.4 * y + 0.6 * rng.random(60), 0, 1), 1)  # rounded: many ties for the AUC
    idx = bootstrap_indices(y, 50, seed)
    got = {name: fn(y[idx], p[idx]) for name, fn in CLASSIFICATION_METRICS.items()}
    for b, i in enumerate(idx):
        yy, pp = y[i], p[i]
        pred = (pp > 0.5).astype(int)
        assert got["auc"][b] == pytest.approx(roc_auc_score(yy, pp), abs=1e-12)
        assert got["accuracy"][b] == pytest.approx(np.mean(pred == yy), abs=1e-12)
        assert got["sensitivity"][b] == pytest.approx(recall_score(yy, pred), abs=1e-12)
        assert got["specificity"][b] == pytest.approx(recall_score(1 - yy, 1 - pred), abs=1e-12)
        assert got["balanced_accuracy"][b] == pytest.approx(balanced_accuracy_score(yy, pred), abs=1e-12)


def test_a_single_class_has_no_auc():
    out = classification_report(np.zeros(6, int), np.linspace(0, 1, 6), n_boot=20)
    assert np.isnan(out["auc"]["value"]) and np.isnan(out["sensitivity"]["value"])
    assert out["specificity"]["value"] == pytest.approx(0.5)
