"""From per-subject rows to the summary table (mean, sd, CI) and 2D latent projections for the dashboard."""

from __future__ import annotations

import numpy as np
import pandas as pd

from shapetune.evaluation.names import phases_of
from shapetune.evaluation.stats import classification_report, mean_ci

RECON_METRICS = ("dice", "hd", "hd95", "assd", "rvd", "abs_rvd", "nsd")


def summarize(per_subject: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Long table: model, split, metric, phase, mean, sd, lo, hi (reconstruction) and value, lo, hi (diagnosis)."""
    rows = []
    phases = phases_of(per_subject)
    for (model, split), g in per_subject.groupby(["model", "split"], sort=False):
        for metric in RECON_METRICS:
            for phase in phases:
                col = f"{metric}_{phase}"
                if col in g and g[col].notna().any():
                    v = g[col].to_numpy(float)
                    mean, sd, lo, hi = mean_ci(v, n_boot, seed)
                    rows.append({"model": model, "split": split, "metric": metric, "phase": phase.upper(),
                                 "mean": mean, "sd": sd, "lo": lo, "hi": hi, "n": int(np.isfinite(v).sum()),
                                 "n_infinite": int(np.isinf(v).sum())})
        rep = classification_report(g.label.to_numpy(), g.prob_hcm.to_numpy(), n_boot, seed)
        conf = rep.pop("confusion")
        for metric, r in rep.items():
            rows.append({"model": model, "split": split, "metric": metric, "phase": "", "mean": r["value"],
                         "sd": np.nan, "lo": r["lo"], "hi": r["hi"], "n": len(g), "n_infinite": 0})
        rows.append({"model": model, "split": split, "metric": "confusion", "phase": "",
                     "mean": np.nan, "sd": np.nan, "lo": np.nan, "hi": np.nan, "n": len(g), "n_infinite": 0,
                     **{f"cm_{k}": v for k, v in conf.items()}})
    return pd.DataFrame(rows)


def latent_projections(lat: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Add 2D views per model: the top latent (its first two axes), PCA, Laplacian eigenmaps and t-SNE."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE, SpectralEmbedding
    from sklearn.preprocessing import StandardScaler

    out = []
    for _, g in lat.groupby("model", sort=False):
        g = g.copy()
        zcols = [c for c in g.columns if c.startswith("z") and g[c].notna().all()]
        levels = sorted({int(c[1:].split("_")[0]) for c in zcols})
        top = [c for c in zcols if c.startswith(f"z{levels[-1]}_")] if levels else []
        x = StandardScaler().fit_transform(g[zcols].to_numpy(float)) if zcols else np.zeros((len(g), 2))
        t = g[top].to_numpy(float) if top else x
        g["top_x"], g["top_y"] = t[:, 0], (t[:, 1] if t.shape[1] > 1 else 0.0)
        n = len(g)
        k = min(2, x.shape[1], n)
        p = PCA(n_components=k, random_state=seed).fit_transform(x) if n > 2 else np.zeros((n, 2))
        g["pca_x"], g["pca_y"] = p[:, 0], (p[:, 1] if p.shape[1] > 1 else 0.0)
        if n > 10:
            le = SpectralEmbedding(n_components=2, n_neighbors=min(10, n - 1), random_state=seed).fit_transform(x)
            ts = TSNE(n_components=2, perplexity=min(30.0, (n - 1) / 3), random_state=seed, init="pca").fit_transform(x)
        else:
            le = ts = np.full((n, 2), np.nan)
        g["laplacian_x"], g["laplacian_y"] = le[:, 0], le[:, 1]
        g["tsne_x"], g["tsne_y"] = ts[:, 0], ts[:, 1]
        out.append(g)
    return pd.concat(out, ignore_index=True)
