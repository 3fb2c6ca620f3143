"""The static evaluation report: the seed-style table, paired tests and PNG figures, as Markdown."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from shapetune.evaluation.names import phases_of, split_labels
from shapetune.evaluation.stats import mcnemar, wilcoxon_paired
from shapetune.io import atomic_write_text

REPORT = "report.md"
SPLIT_MARKERS = "o^sDvP<>"  # scatter markers, one per evaluated split (the service has three)


def _cell(summary: pd.DataFrame, model: str, split: str, metric: str, phase: str = "", ci: bool = False) -> str:
    r = summary[(summary.model == model) & (summary.split == split) & (summary.metric == metric)
                & (summary.phase == phase)]
    if r.empty or not np.isfinite(r["mean"].iloc[0]):
        return "–"
    r = r.iloc[0]
    if ci:
        return f"{r['mean']:.3f} [{r.lo:.3f}, {r.hi:.3f}]"
    inf = f" ({int(r.n_infinite)} inf)" if r.get("n_infinite", 0) else ""
    return f"{r['mean']:.3f} ± {r.sd:.3f}{inf}"


def summary_phases(summary: pd.DataFrame) -> list[str]:
    """The phases (as the summary names them: ``ED``, ``ES``, or a table cohort's, upper case) it reports."""
    return [p for p in dict.fromkeys(summary.phase) if isinstance(p, str) and p]


def seed_table(summary: pd.DataFrame, models: list[str]) -> str:
    """Rows = models; DC/HD/RVD per phase on the internal test split; accuracy on every split."""
    splits = set(summary.split)
    phases = summary_phases(summary)
    internal = split_labels(phases)["imperial_test"]
    head = (["model"] + [f"{met} {ph}{unit}" for met, unit in (("DC", ""), ("HD", " (mm)"), ("RVD", ""))
                         for ph in phases]
            + [f"acc {internal} [95 % CI]"] + (["acc ACDC [95 % CI]"] if "acdc_test" in splits or phases == ["ED", "ES"]
                                                else [])
            + (["acc ACDC hard [95 % CI]"] if "acdc_hard" in splits else []))
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in models:
        s = "imperial_test"
        cells = [m] + [_cell(summary, m, s, met, ph) for met in ("dice", "hd", "rvd") for ph in phases]
        cells.append(_cell(summary, m, s, "accuracy", ci=True) if s in splits else "–")
        if "acdc_test" in splits or phases == ["ED", "ES"]:
            cells.append(_cell(summary, m, "acdc_test", "accuracy", ci=True) if "acdc_test" in splits else "–")
        if "acdc_hard" in splits:
            cells.append(_cell(summary, m, "acdc_hard", "accuracy", ci=True))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def split_table(summary: pd.DataFrame, models: list[str], split: str) -> str:
    phases = summary_phases(summary)
    head = (["model"] + [f"{met} {ph}{unit}" for met, unit in (("DC", ""), ("NSD", ""), ("HD95", " (mm)"),
                                                                ("ASSD", " (mm)"), ("abs RVD", "")) for ph in phases]
            + ["accuracy", "balanced acc.", "sensitivity", "specificity", "AUC"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in models:
        cells = [m] + [_cell(summary, m, split, met, ph) for met in ("dice", "nsd", "hd95", "assd", "abs_rvd")
                       for ph in phases]
        cells += [_cell(summary, m, split, met, ci=True) for met in
                  ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "auc")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_table(per_subject: pd.DataFrame, reference: str, models: list[str]) -> str:
    """The reference model against each other: McNemar on correctness, Wilcoxon on per-subject Dice."""
    phases = phases_of(per_subject)
    head = ["split", "other model", "McNemar p (accuracy)"]
    head += [x for ph in phases for x in (f"Wilcoxon p (DC {ph.upper()})", f"median ΔDC {ph.upper()}")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for split, g in per_subject.groupby("split", sort=False):
        ref = g[g.model == reference].set_index("subject")
        for m in models:
            if m == reference:
                continue
            other = g[g.model == m].set_index("subject").reindex(ref.index)
            if other.label.isna().all():
                continue
            mc = mcnemar(ref.correct.to_numpy(bool), other.correct.to_numpy(bool))
            cells = [split, m, f"{mc['p_value']:.3g}"]
            for ph in phases:
                col = f"dice_{ph}"
                if col in ref and col in other and other[col].notna().any():
                    w = wilcoxon_paired(ref[col].to_numpy(), other[col].to_numpy())
                    cells += [f"{w['p_value']:.3g}", f"{w['median_difference']:+.4f}"]
                else:
                    cells += ["–", "–"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figures(per_subject: pd.DataFrame, latents: pd.DataFrame, models: list[str], fig_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    fig_dir.mkdir(parents=True, exist_ok=True)
    names = []
    splits = list(dict.fromkeys(per_subject.split))
    phases = phases_of(per_subject)
    first = f"dice_{phases[0]}" if phases else None
    recon_models = [m for m in models
                    if first in per_subject and per_subject.loc[per_subject.model == m, first].notna().any()]
    if recon_models:
        fig, axes = plt.subplots(1, len(splits), figsize=(5.5 * len(splits), 3.6), squeeze=False)
        for ax, split in zip(axes[0], splits, strict=True):
            data, labels = [], []
            for m in recon_models:
                g = per_subject[(per_subject.model == m) & (per_subject.split == split)]
                data += [g[f"dice_{ph}"].dropna() for ph in phases]
                labels += [f"{m[:18]}\n{phases[0].upper()}", *(ph.upper() for ph in phases[1:])]
            ax.boxplot(data, tick_labels=labels, showfliers=False)
            ax.set_title(f"Dice, {split}"), ax.tick_params(axis="x", labelsize=6), ax.set_ylim(0, 1)
        fig.tight_layout(), fig.savefig(fig_dir / "dice.png", dpi=110), plt.close(fig)
        names.append("dice.png")
    fig, axes = plt.subplots(1, len(splits), figsize=(4.5 * len(splits), 4), squeeze=False)
    for ax, split in zip(axes[0], splits, strict=True):
        for m in models:
            g = per_subject[(per_subject.model == m) & (per_subject.split == split)]
            if len(np.unique(g.label)) == 2:
                fpr, tpr, _ = roc_curve(g.label, g.prob_hcm)
                ax.plot(fpr, tpr, label=m[:28])
        ax.plot([0, 1], [0, 1], ":", color="grey"), ax.set_title(f"ROC, {split}")
        ax.set_xlabel("1 - specificity"), ax.set_ylabel("sensitivity"), ax.legend(fontsize=6)
    fig.tight_layout(), fig.savefig(fig_dir / "roc.png", dpi=110), plt.close(fig)
    names.append("roc.png")
    first = latents[latents.model == models[0]]
    if len(first):
        fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
        for ax, (view, title) in zip(axes, (("top", "top latent z_L"), ("laplacian", "Laplacian eigenmaps"),
                                            ("pca", "PCA of all levels"), ("tsne", "t-SNE of all levels")),
                                     strict=True):
            # one marker per split (a third split, acdc_hard, was once left out of this figure by a zip)
            for split, marker in zip(splits, SPLIT_MARKERS[:len(splits)], strict=True):
                for lab, color in ((0, "tab:blue"), (1, "tab:red")):
                    g = first[(first.split == split) & (first.label == lab)]
                    ax.scatter(g[f"{view}_x"], g[f"{view}_y"], s=8, c=color, marker=marker, alpha=0.6,
                               label=f"{'HCM' if lab else 'healthy'} ({split})")
            ax.set_title(title, fontsize=9)
        axes[0].legend(fontsize=6)
        fig.suptitle(models[0], fontsize=9)
        fig.tight_layout(), fig.savefig(fig_dir / "latents.png", dpi=110), plt.close(fig)
        names.append("latents.png")
    return names


def write_report(result, models: list[str], extra_figures: list[str] = ()) -> Path:
    """``EXP/evaluation/report.md`` with figures in ``figures/``; written atomically."""
    out = result.out_dir
    models = [m for m in models if m in set(result.per_subject.model)]
    figs = figures(result.per_subject, result.latents, models, out / "figures") + list(extra_figures)
    parts = ["# ShapeTune evaluation report", "",
             f"Experiment `{out.parent.name}`; splits: {', '.join(dict.fromkeys(result.per_subject.split))}. "
             "Reconstruction metrics on the template grid in mm; DC = Dice, HD = Hausdorff distance, RVD = relative "
             "volume difference (V_pred − V_ref)/V_ref, NSD = normalized surface Dice at "
             f"{getattr(result, 'nsd_tolerance_mm', 2.0):g} mm (the share of both surfaces within that distance of "
             "the other), mean ± sd over subjects; accuracies with subject-level bootstrap 95 % CIs.", "",
             "## Summary (seed-style)", "", seed_table(result.summary, models), ""]
    for split in dict.fromkeys(result.per_subject.split):
        parts += [f"## {split}", "", split_table(result.summary, models, split), ""]
    parts += [f"## Paired comparisons against `{models[0]}`", "",
              paired_table(result.per_subject, models[0], models), ""]
    if result.errors:
        parts += ["## Not evaluated", ""] + [f"- {e['candidate']}: {e['problem']}" for e in result.errors] + [""]
    parts += ["## Figures", ""] + [f"![{f}](figures/{f})" for f in figs] + [""]
    atomic_write_text(out / REPORT, "\n".join(parts))
    return out / REPORT
