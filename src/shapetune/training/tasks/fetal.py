"""The fetal-skull task: up to three 2D planes -> the 3D skull, validated per view subset."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from shapetune.catalog import TASK_SPECS
from shapetune.config import TrainConfig
from shapetune.data.dataset import PreparedDataset
from shapetune.data.errors import DataError
from shapetune.data.fetal.folds import VIEW_SUBSETS, fold_rows
from shapetune.data.fetal.planes import VIEWS
from shapetune.models.losses import conditional_loss, hard_dice
from shapetune.training.plane_augment import augment_fetal


@dataclass
class FetalData:
    """Skull masks ``[N, 1, G, G, G]``, planes ``[N, 3, G, G]`` and the planes' reference poses ``[N, 3, 9]``."""

    train_vol: np.ndarray
    train_planes: np.ndarray
    train_poses: np.ndarray
    val_vol: np.ndarray
    val_planes: np.ndarray
    val_subjects: list[str]
    spacing: float
    fold: int


def reference_poses(rows: pd.DataFrame) -> np.ndarray:
    """Per subject and view, the standard plane when the generator recorded it, else the acquired one."""
    cols = [f"standard_{v}" if f"standard_{v}" in rows else f"pose_{v}" for v in VIEWS]
    return np.array([[np.asarray(r[c], dtype=np.float64) for c in cols] for _, r in rows.iterrows()])


def load_fetal(path: str, grid: int, fold: int) -> FetalData:
    ds = PreparedDataset(path)
    if ds.grid.shape != (grid,) * 3:
        raise DataError(ds.path / "dataset.json", f"dataset grid {ds.grid.shape} does not match the model grid "
                                                  f"{grid}^3; prepare the data with --grid {grid} or set model.grid")
    src = str(ds.path / "manifest.parquet")
    tr, va = fold_rows(ds.manifest, fold, "train", src), fold_rows(ds.manifest, fold, "val", src)
    take = lambda arr, rows: np.ascontiguousarray(arr[rows["index"].to_numpy()])  # noqa: E731
    return FetalData(take(ds.masks, tr), take(ds.planes, tr), reference_poses(tr), take(ds.masks, va),
                     take(ds.planes, va), va.subject.tolist(), ds.grid.spacing, fold)


def dice(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Hard Dice per skull, ``[B]``."""
    return hard_dice(pred, target, 1)


class FetalTask:
    spec = TASK_SPECS["fetal"]  # its names and metrics, declared in shapetune.catalog
    name, val_keys, curves = spec.name, spec.val_keys, spec.curves

    def load(self, path: str, cfg: TrainConfig) -> FetalData:
        return load_fetal(path, cfg.model.grid, cfg.data.fold)

    def n_train(self, data: FetalData) -> int:
        return len(data.train_vol)

    def batch_loss(self, engine, data: FetalData, sel: np.ndarray, epoch: int, batch: int, t: float):
        cfg = engine.cfg
        rng = np.random.default_rng([cfg.seed, epoch, batch, engine.rank])
        vol = torch.from_numpy(data.train_vol[sel]).to(engine.device, torch.float32)
        if cfg.plane_augment.enabled:
            vol, planes = augment_fetal(vol, data.train_poses[sel], data.spacing, cfg.plane_augment, rng)
        else:
            planes = torch.from_numpy(data.train_planes[sel]).to(engine.device, torch.float32)
        present = np.ones((len(sel), 3), dtype=np.float32)
        present[:, 1] = rng.random(len(sel)) < cfg.views.p_sagittal
        present[:, 2] = rng.random(len(sel)) < cfg.views.p_coronal
        with engine.autocast():
            out = engine.model(vol, planes, torch.from_numpy(present).to(engine.device))
        return conditional_loss(out, vol, engine.weights, t, engine.variational)

    @torch.no_grad()
    def predict(self, engine, planes: np.ndarray, present: tuple[int, int, int], target: np.ndarray,
                batch_size: int = 8) -> np.ndarray:
        """Hard Dice ``[N]`` of the prior-mean prediction from the given view subset."""
        model = engine.eval_model().eval()
        out = []
        for s in range(0, len(planes), batch_size):
            p = torch.from_numpy(np.asarray(planes[s:s + batch_size], dtype=np.float32)).to(engine.device)
            pres = torch.tensor([present] * len(p), dtype=torch.float32, device=engine.device)
            with engine.autocast():
                logits = model.predict(p, pres)
            y = torch.from_numpy(np.asarray(target[s:s + batch_size], dtype=np.float32)).to(engine.device)
            out.append(dice((logits.float() > 0).float(), y).cpu())
        return torch.cat(out).numpy() if out else np.zeros(0)

    def validate(self, engine, data: FetalData) -> dict[str, float]:
        rows = np.arange(len(data.val_vol))[engine.rank::engine.world]
        scores = [self.predict(engine, data.val_planes[rows], p, data.val_vol[rows]) for p in VIEW_SUBSETS.values()]
        rows, *scores = engine.gather(rows, *scores)
        m = {f"val_dice_{k}": float(s.mean()) for k, s in zip(VIEW_SUBSETS, scores, strict=True)}
        m["val_dice"] = float(np.mean(list(m.values())))  # robustness to missing views is the point
        return m

    def epoch_line(self, m: dict, epochs: int) -> str:
        # Under 80 columns (every term is in history.csv): loss, KL, validation Dice from 3, 2 and 1 views.
        val = (f" Dice 3v/2v/1v {m['val_dice_3v']:.3f}/{m['val_dice_2v']:.3f}/{m['val_dice_1v']:.3f}"
               if "val_dice" in m else "")
        return (f"epoch {m['epoch'] + 1}/{epochs} loss {m['train_loss']:.4f} kl {m['train_kl']:.1f}{val} "
                f"{m['samples_per_s']:.0f}/s")
