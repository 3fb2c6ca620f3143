"""How an epoch ranks on a metric: the one rule the best checkpoint, the trial table and the training loop share."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any


def score(metrics: Mapping[str, Any], metric: str, mode: str) -> float | None:
    """``metrics[metric]`` oriented so that larger is better (negated when ``mode`` is ``min``).

    Returns:
        None when the metric is missing, not a number or not finite: an epoch whose objective is NaN (a diverged
        run) never becomes the best, and a later finite epoch can still replace it.
    """
    value = metrics.get(metric)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value) if mode == "max" else -float(value)


def best_value(history: Iterable[Mapping[str, Any]], metric: str, mode: str) -> float | None:
    """The best finite value of ``metric`` over ``history`` (the largest for ``max``), or None without one."""
    scores = [s for h in history if (s := score(h, metric, mode)) is not None]
    if not scores:
        return None
    return max(scores) if mode == "max" else -max(scores)
