"""What the views are worth, paired per test subject: the Dice each model loses when views go missing, and
whether one model loses less than another (the reference study's HCVAE-vs-CVAE finding)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from shapetune.evaluation.stats import mean_ci, wilcoxon_paired

DROPS = (("3v", "2v"), ("3v", "1v"), ("2v", "1v"))


def _wide(per_case: pd.DataFrame, metric: str) -> pd.DataFrame:
    """``(model, fold, subject) x views`` table of one metric."""
    return per_case.pivot_table(index=["model", "fold", "subject"], columns="views", values=metric)


def _row(kind: str, what: str, a: str, b: str, d: np.ndarray, x: np.ndarray, y: np.ndarray, seed: int) -> dict:
    mean, sd, lo, hi = mean_ci(d, seed=seed)
    return {"kind": kind, "what": what, "from": a, "to": b, "n": int(np.isfinite(d).sum()), "mean": mean,
            "sd": sd, "ci_lo": lo, "ci_hi": hi, "p_value": wilcoxon_paired(x, y)["p_value"]}


def view_effects(per_case: pd.DataFrame, metric: str = "dice", seed: int = 0) -> pd.DataFrame:
    """``loss`` rows: per model, ``metric`` with more views minus with fewer, per subject (mean, bootstrap 95 %
    CI, Wilcoxon p); ``contrast`` rows: per pair of models, model A's loss minus model B's on the same
    subjects (negative: A degrades less)."""
    wide = _wide(per_case, metric)
    have = [(a, b) for a, b in DROPS if a in wide and b in wide]
    rows = []
    for model, g in wide.groupby(level="model", sort=False):
        for a, b in have:
            rows.append(_row("loss", model, a, b, (g[a] - g[b]).to_numpy(), g[a].to_numpy(), g[b].to_numpy(), seed))
    models = list(dict.fromkeys(wide.index.get_level_values("model")))
    for m1, m2 in itertools.combinations(models, 2):
        x, y = wide.loc[m1], wide.loc[m2]  # indexed by (fold, subject)
        both = x.index.intersection(y.index)
        for a, b in have:
            l1 = (x.loc[both, a] - x.loc[both, b]).to_numpy()
            l2 = (y.loc[both, a] - y.loc[both, b]).to_numpy()
            rows.append(_row("contrast", f"{m1} − {m2}", a, b, l1 - l2, l1, l2, seed))
    return pd.DataFrame(rows)


def effects_markdown(effects: pd.DataFrame) -> str:
    """The two tables (loss per model, differences between models) as markdown."""
    lines = ["Dice lost when views go missing (paired per test subject; mean [95 % bootstrap CI], Wilcoxon p):", "",
             "| model | " + " | ".join(f"{a} → {b}" for a, b in DROPS) + " |", "|---" * (1 + len(DROPS)) + "|"]

    def cells(g: pd.DataFrame) -> str:
        out = []
        for a, b in DROPS:
            r = g[(g["from"] == a) & (g["to"] == b)]
            out.append("-" if r.empty else "{:+.3f} [{:+.3f}, {:+.3f}] p={:.2g}".format(
                *r.iloc[0][["mean", "ci_lo", "ci_hi", "p_value"]]))
        return " | ".join(out)

    for what, g in effects[effects.kind == "loss"].groupby("what", sort=False):
        lines.append(f"| {what} | {cells(g)} |")
    con = effects[effects.kind == "contrast"]
    if not con.empty:
        lines += ["", "Difference in Dice lost, model A − model B (negative: A degrades less):", "",
                  "| A − B | " + " | ".join(f"{a} → {b}" for a, b in DROPS) + " |", "|---" * (1 + len(DROPS)) + "|"]
        for what, g in con.groupby("what", sort=False):
            lines.append(f"| {what} | {cells(g)} |")
    return "\n".join(lines) + "\n"
