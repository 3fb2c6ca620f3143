"""The shape task: binary masks of one structure per phase (cardiac: ED and ES myocardium; a manifest-table cohort:
its one or two phases), reconstruction + diagnosis from the latent."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from shapetune.data.dataset import PreparedDataset
from shapetune.data.errors import DataError
from shapetune.data.template import MYOCARDIUM
from shapetune.models.losses import shape_loss
from shapetune.training.augment import augment_batch
from shapetune.catalog import TASK_SPECS
from shapetune.config import TrainConfig


CARDIAC_PHASES = ("ed", "es")  # the phases whose validation Dice each epoch also reports (val_dice_ed, _es)


@dataclass
class TrainData:
    """Binary masks ``[N, P (phases), D, H, W]`` (uint8) and labels for train and validation."""

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    val_subjects: list[str]
    phases: tuple[str, ...] = CARDIAC_PHASES


def load_training_data(path: str, grid: int, in_channels: int = 2) -> TrainData:
    """Read the train/val splits of a prepared dataset; the model's grid and input channels must match it."""
    ds = PreparedDataset(path)
    if ds.grid.shape != (grid, grid, grid):
        raise DataError(ds.path / "dataset.json", f"dataset grid {ds.grid.shape} does not match the model grid "
                                                  f"{grid}^3; prepare the data with --grid {grid} or set model.grid")
    if len(ds.phases) != in_channels:
        raise DataError(ds.path / "dataset.json", f"the dataset holds {len(ds.phases)} phase(s) per subject "
                                                  f"({', '.join(ds.phases)}) but the model takes {in_channels}; set "
                                                  f"model.in_channels={len(ds.phases)}")
    m = ds.manifest
    out = {}
    for split in ("train", "val"):
        rows = m[m["split"] == split]
        if rows.empty:
            raise DataError(ds.path / "manifest.parquet", f"no subjects in split {split!r}")
        idx = rows["index"].to_numpy()
        out[split] = ((np.asarray(ds.masks[np.sort(idx)]) == MYOCARDIUM).astype(np.uint8),
                      rows.set_index("index").loc[np.sort(idx), "label"].to_numpy().astype(np.int64),
                      rows.set_index("index").loc[np.sort(idx), "subject"].tolist())
    return TrainData(out["train"][0], out["train"][1], out["val"][0], out["val"][1], out["val"][2], ds.phases)


class CardiacTask:
    spec = TASK_SPECS["cardiac"]  # its names and metrics, declared in shapetune.catalog
    name, val_keys, curves = spec.name, spec.val_keys, spec.curves

    def load(self, path: str, cfg: TrainConfig):
        data = load_training_data(path, cfg.model.grid, cfg.model.in_channels)
        per_phase = {f"val_dice_{p}" for p in CARDIAC_PHASES}
        if data.phases != CARDIAC_PHASES and cfg.checkpoint.metric in per_phase:  # before any epoch, not after
            raise DataError(Path(path) / "dataset.json", f"checkpoint.metric {cfg.checkpoint.metric} is an ED/ES "
                                                         f"Dice; this dataset's phases are {', '.join(data.phases)}: "
                                                         "rank on val_dice (their mean)")
        return data

    def n_train(self, data) -> int:
        return len(data.train_x)

    def batch_loss(self, engine, data, sel: np.ndarray, epoch: int, batch: int, t: float):
        x = engine.tensor(data.train_x[sel])
        y = torch.from_numpy(data.train_y[sel]).to(engine.device)
        x = augment_batch(x, engine.cfg.augment, engine.gen)
        with engine.autocast():
            out = engine.model(x)
        return shape_loss(out, x, y, engine.weights, t, engine.variational)

    def validate(self, engine, data) -> dict[str, float]:
        from sklearn.metrics import roc_auc_score

        rows = np.arange(len(data.val_x))[engine.rank::engine.world]
        dice, prob = engine.predict(data.val_x[rows])
        rows, dice, prob = engine.gather(rows, dice, prob)
        y = data.val_y[rows]
        acc = float(np.mean((prob > 0.5) == y))
        auc = float(roc_auc_score(y, prob)) if len(np.unique(y)) == 2 else float("nan")
        per_phase = ({f"val_dice_{p}": float(dice[:, c].mean()) for c, p in enumerate(CARDIAC_PHASES)}
                     if data.phases == CARDIAC_PHASES else {})  # other cohorts: their mean over phases only
        return {**per_phase, "val_dice": float(dice.mean()), "val_acc": acc, "val_auc": auc}

    def epoch_line(self, m: dict, epochs: int) -> str:
        # Under 80 columns (every term is in history.csv): training loss and KL, validation Dice ED/ES, accuracy, AUC.
        dice = f"{m['val_dice_ed']:.3f}/{m['val_dice_es']:.3f}" if "val_dice_ed" in m else f"{m.get('val_dice', 0):.3f}"
        val = f" Dice {dice} acc {m['val_acc']:.3f} auc {m['val_auc']:.3f}" if "val_dice" in m else ""
        return (f"epoch {m['epoch'] + 1}/{epochs} loss {m['train_loss']:.4f} kl {m['train_kl']:.1f}{val} "
                f"{m['samples_per_s']:.0f}/s")
