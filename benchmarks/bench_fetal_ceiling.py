"""What Dice the fetal cohort allows: each skull against itself re-rendered with one thing not known.

    python benchmarks/bench_fetal_ceiling.py [--raw DIR --grid 64 --study STUDY]

A model that sees only the axial plane cannot know the skull's height (cranial height varies
independently of BPD and OFD), its bumps or where its sutures and fontanelles run; one that misjudges the
head's size by 1-2 % (a 10-degree tilt of the axial plane alone stretches it by 1.5 %) pays for it
everywhere on a 2-3-voxel band. Each row is the Dice of the true mask against the same skull rendered at
the same grid with that knowledge replaced by the cohort's mean (or the size scaled): an upper bound for
a predictor missing it, with the head-size errors it makes (comparable with the study's).
Writes ``benchmarks/results/bench_fetal_ceiling.{md,json}``.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
from _results import RESULTS, publish
from tqdm import tqdm

from shapetune.data.fetal.cohort import FetalConfig, synth_fetal
from shapetune.data.fetal.skull import SkullParams, render_skull
from shapetune.evaluation.fetal.scoring import size_errors
from shapetune.evaluation.fetal.study import SIZE_ERRORS

DETAILS = ("suture_mm", "coronal_pos", "lambdoid_pos", "base_cut")


def variants(p: SkullParams, mean: dict) -> dict[str, SkullParams]:
    """The skull with one kind of knowledge replaced by the cohort's mean, or its size misjudged."""
    rep = dataclasses.replace
    scaled = lambda f: rep(p, bpd_mm=p.bpd_mm * f, ofd_mm=p.ofd_mm * f, height_mm=p.height_mm * f)  # noqa: E731
    no_views = dict(height_mm=mean["height_ratio"] * p.bpd_mm, egg=mean["egg"], bump_amps=(0.0,) * len(p.bump_amps),
                    **{k: mean[k] for k in DETAILS})
    return {
        "height unknown (mean height / BPD)": rep(p, height_mm=mean["height_ratio"] * p.bpd_mm),
        "bumps unknown (none)": rep(p, bump_amps=(0.0,) * len(p.bump_amps)),
        "sutures, fontanelle sites, base unknown": rep(p, **{k: mean[k] for k in DETAILS}),
        "band 0.5 mm too thick": rep(p, thickness_mm=p.thickness_mm + 0.5),
        "size 1 % too large": scaled(1.01),
        "size 2 % too large": scaled(1.02),
        "size 3 % too large": scaled(1.03),
        "all of height, egg, bumps, details unknown (size exact)": rep(p, **no_views),
        "... and size 1 % off": rep(rep(p, **no_views), bpd_mm=p.bpd_mm * 1.01,
                                                               ofd_mm=p.ofd_mm * 1.01,
                                                               height_mm=mean["height_ratio"] * p.bpd_mm * 1.01),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--raw", default=str(RESULTS / "tmp" / "fetal" / "raw"),
                    help="a synthetic fetal cohort (made if absent)")
    ap.add_argument("--grid", type=int, default=64)
    ap.add_argument("--study", help="a fetal study with TL-Net runs (runs/tlnet/foldK) and its prepared data")
    args = ap.parse_args()
    raw = Path(args.raw)
    if not (raw / "ground_truth.parquet").exists():
        synth_fetal(raw, FetalConfig(grid=args.grid), workers=2)
    gt = pd.read_parquet(raw / "ground_truth.parquet")
    mean = {k: float(gt[k].mean()) for k in (*DETAILS, "egg")}
    mean["height_ratio"] = float((gt.height_mm / gt.bpd_mm).mean())
    rows = []
    for _, r in tqdm(gt.iterrows(), total=len(gt), desc="skulls"):
        p = SkullParams.from_record(r)
        truth = render_skull(p, args.grid).astype(bool)
        for name, q in variants(p, mean).items():
            other = render_skull(q, args.grid).astype(bool)
            rows.append({"case": name, "subject": p.subject,
                         "dice": 2 * (truth & other).sum() / (truth.sum() + other.sum()),
                         **{k: abs(v) for k, v in size_errors(other, truth).items()}})
    df = pd.DataFrame(rows)
    order = list(dict.fromkeys(df.case))
    g = df.groupby("case", sort=False)["dice"].agg(["mean", "std", "min"]).loc[order]
    g = g.join(df.groupby("case", sort=False)[list(SIZE_ERRORS)].mean())
    cells = [[c, f"{r['mean']:.3f} ± {r['std']:.3f}", f"{r['min']:.3f}", " / ".join(f"{r[k]:.3f}" for k in SIZE_ERRORS)]
             for c, r in g.iterrows()]
    publish("bench_fetal_ceiling",
            f"Dice of the true skull vs. the same skull missing one piece of knowledge ({args.grid}³)",
            f"{len(gt)} subjects of {raw}, {args.grid}^3 at {132 / args.grid:.2f} mm; upper bounds for a predictor "
            "without that knowledge",
            ["what the predictor gets wrong", "DC mean ± sd", "DC min", "|size error| OFD / BPD / height"], cells,
            [{"case": c, **{k: float(v) for k, v in r.items()}} for c, r in g.iterrows()])
    plane_size(raw, gt)
    if args.study:
        autoencoder(Path(args.study))


def _plane_features(mask: np.ndarray, spacing: float) -> list[float]:
    """Log area, log principal second moments and log extents along the principal axes (mm)."""
    idx = np.argwhere(mask).astype(float) * spacing
    c = idx - idx.mean(0)
    w, vecs = np.linalg.eigh(np.cov(c.T))
    proj = c @ vecs
    ext = proj.max(0) - proj.min(0) + spacing
    return list(np.log([len(idx), *np.sqrt(w), *ext]))


def plane_size(raw: Path, gt: pd.DataFrame) -> None:
    """How well a plain regression reads the head's length, width and height off the acquired planes."""
    import nibabel as nib
    from sklearn.linear_model import LinearRegression
    from sklearn.model_selection import cross_val_predict

    from shapetune.data.fetal.planes import VIEWS

    feats = {v: [] for v in VIEWS}
    for sid in tqdm(gt.subject, desc="planes"):
        for v in VIEWS:
            img = nib.load(raw / "subjects" / sid / f"plane_{v}.nii.gz")
            feats[v].append(_plane_features(np.asarray(img.dataobj)[:, :, 0] > 0,
                                            float(np.linalg.norm(img.affine[:3, 0]))))
    y = np.log(gt[["ofd_mm", "bpd_mm", "height_mm"]].to_numpy())
    cells, rows = [], []
    for label, views in (("1 view (axial)", VIEWS[:1]), ("2 views (axial + sagittal)", VIEWS[:2]), ("3 views", VIEWS)):
        x = np.hstack([np.array(feats[v]) for v in views])
        err = np.abs(np.exp(cross_val_predict(LinearRegression(), x, y, cv=12) - y) - 1).mean(0)
        cells.append([label, " / ".join(f"{e:.3f}" for e in err)])
        rows.append({"views": label, **dict(zip(SIZE_ERRORS, map(float, err), strict=True))})
    publish("bench_fetal_plane_size", "head size read off the acquired planes by a linear regression (12-fold CV)",
            f"{len(gt)} subjects of {raw}; features per plane: log area, log principal second moments, log principal "
            "extents", ["planes", "mean |relative error| OFD / BPD / height"], cells, rows)


def autoencoder(study: Path) -> None:
    """TL-Net's 3D autoencoder path on each fold's training and test subjects: the decoder's own precision."""
    import json

    import torch
    import torch.nn.functional as F

    from shapetune.data.dataset import PreparedDataset
    from shapetune.evaluation.service import checkpoint_dir
    from shapetune.models.size_frame import rms_log
    from shapetune.training.checkpoints import load_model
    from shapetune.data.fetal.folds import fold_rows

    ds = PreparedDataset(json.loads((study / "study.json").read_text())["data"])
    rows = []
    for run in sorted((study / "runs" / "tlnet").glob("fold*")):
        model, cfg, _ = load_model(checkpoint_dir(run))
        for split in ("train", "test"):
            idx = fold_rows(ds.manifest, cfg.data.fold, split, str(ds.path))["index"].to_numpy()[:14]
            vol = torch.from_numpy(np.asarray(ds.masks[idx]).astype(np.float32))
            with torch.no_grad():
                e = F.layer_norm(model.embed(model.encoder(vol)), (cfg.model.latent_dims[0],))
                # with the size frame the autoencoder path is scaled by the true radii, as in training
                pred = (model._place(model.decoder(model.project(e)),
                                     rms_log(vol) if model.size_head is not None else None)[:, 0]
                        > 0).numpy()
            truth = vol[:, 0].numpy().astype(bool)
            for p, t in zip(pred, truth, strict=True):
                rows.append({"split": split, "dice": 2 * (p & t).sum() / (p.sum() + t.sum()),
                             **{k: abs(v) for k, v in size_errors(p, t).items()}})
    g = pd.DataFrame(rows).groupby("split")[["dice", *SIZE_ERRORS]].mean()
    cells = [[s, f"{r.dice:.3f}", " / ".join(f"{r[k]:.3f}" for k in SIZE_ERRORS)] for s, r in g.iterrows()]
    publish("bench_fetal_autoencoder", "TL-Net's 3D autoencoder: the whole skull in, the skull out",
            f"study {study}; 14 subjects per fold and split",
            ["subjects", "DC", "mean |size error| OFD / BPD / height"],
            cells, [{"split": s, **{k: float(v) for k, v in r.items()}} for s, r in g.iterrows()])


if __name__ == "__main__":
    main()
