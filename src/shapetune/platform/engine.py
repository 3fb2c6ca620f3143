"""The training/validation engine shared by the Ray Train workers and the plain in-process loop.

Distributed-agnostic: it is told its rank and world size, shards the data itself (every rank takes the
same number of batches so DDP's collectives line up), and gathers validation predictions when a process
group exists.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from shapetune.data.dataset import PreparedDataset
from shapetune.data.errors import DataError
from shapetune.data.template import MYOCARDIUM
from shapetune.models.losses import LossWeights
from shapetune.platform.config import TrainConfig
from shapetune.platform.tasks import task_of


@dataclass
class TrainData:
    """Binary myocardium masks ``[N, 2 (ED, ES), D, H, W]`` (uint8) and labels for train and validation."""

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    val_subjects: list[str]


def load_training_data(path: str, grid: int) -> TrainData:
    """Read the train/val splits of a prepared dataset; the model grid must match the dataset's."""
    ds = PreparedDataset(path)
    if ds.grid.shape != (grid, grid, grid):
        raise DataError(ds.path / "dataset.json", f"dataset grid {ds.grid.shape} does not match the model grid "
                                                  f"{grid}^3; prepare the data with --grid {grid} or set model.grid")
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
    return TrainData(out["train"][0], out["train"][1], out["val"][0], out["val"][1], out["val"][2])


def dice_per_channel(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Hard Dice ``[B, C]`` of binary tensors (1 when both are empty)."""
    dims = tuple(range(2, pred.ndim))
    inter = (pred * target).sum(dims)
    denom = pred.sum(dims) + target.sum(dims)
    return torch.where(denom > 0, 2 * inter / denom.clamp(min=1), torch.ones_like(denom))


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


class Engine:
    """One rank's view of training: batches, loss, optimisation step, validation."""

    def __init__(self, cfg: TrainConfig, model: nn.Module, device: torch.device, rank: int = 0, world: int = 1):
        self.cfg, self.model, self.device, self.rank, self.world = cfg, model, device, rank, world
        o = cfg.optim
        self.optimizer = torch.optim.Adam(model.parameters(), lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
        self.weights = LossWeights(**cfg.loss.model_dump())
        self.variational = unwrap(model).variational
        self.task = task_of(cfg)
        use_bf16 = device.type == "cuda" and cfg.amp in ("auto", "bf16")
        self.autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_bf16 else contextlib.nullcontext

    def _shard(self, n: int, epoch: int) -> np.ndarray:
        perm = np.random.default_rng([self.cfg.seed, epoch]).permutation(n)
        per_rank = n // self.world
        return perm[self.rank::self.world][:per_rank]

    def lr_at(self, epoch: int) -> float:
        """The epoch's learning rate: a function of the epoch alone, so a resumed run continues the schedule."""
        o = self.cfg.optim
        if o.schedule == "constant" or o.epochs <= 1:
            return o.lr
        floor = o.lr * o.min_lr_ratio
        return floor + (o.lr - floor) * 0.5 * (1 + math.cos(math.pi * epoch / (o.epochs - 1)))

    def train_epoch(self, data, epoch: int) -> dict[str, float]:
        self.model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(epoch)
        bs = self.cfg.optim.batch_size
        idx = self._shard(self.task.n_train(data), epoch)
        n_batches = max(1, len(idx) // bs)
        self.gen = torch.Generator().manual_seed(self.cfg.seed * 100003 + epoch * 101 + self.rank)
        sums: dict[str, float] = {}
        t0 = time.perf_counter()
        for b in range(n_batches):
            sel = np.sort(idx[b * bs:(b + 1) * bs])
            loss, terms = self.task.batch_loss(self, data, sel, epoch, b, epoch + b / n_batches)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.cfg.optim.grad_clip:
                nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
            self.optimizer.step()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v)
        dt = time.perf_counter() - t0
        metrics = {f"train_{k}": v / n_batches for k, v in sums.items()}
        metrics["samples_per_s"] = n_batches * bs * self.world / dt
        metrics["lr"] = self.lr_at(epoch)
        metrics["epoch_time_s"] = dt
        metrics["peak_mem_mb"] = peak_memory_mb(self.device)
        return metrics

    @torch.no_grad()
    def predict(self, x_np: np.ndarray, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
        """Per-subject hard Dice ``[N, 2]`` against the input and HCM probability ``[N]`` (this rank's rows)."""
        self.model.eval()
        dices, probs = [], []
        for s in range(0, len(x_np), batch_size):
            x = torch.from_numpy(x_np[s:s + batch_size]).to(self.device, torch.float32)
            with self.autocast():
                out = unwrap(self.model)(x)
            dices.append(dice_per_channel((out.logits.float() > 0).float(), x).cpu())
            probs.append(torch.sigmoid(out.cls_logit.float()).cpu())
        if not dices:
            return np.zeros((0, 2)), np.zeros(0)
        return torch.cat(dices).numpy(), torch.cat(probs).numpy()

    def validate(self, data) -> dict[str, float]:
        return self.task.validate(self, data)

    def gather(self, rows: np.ndarray, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        """Every rank's ``rows`` (indices) and per-row arrays, concatenated and sorted by row (no-op alone)."""
        if self.world > 1 and dist.is_available() and dist.is_initialized():
            gathered: list = [None] * self.world
            dist.all_gather_object(gathered, (rows, *arrays))
            rows = np.concatenate([g[0] for g in gathered])
            arrays = tuple(np.concatenate([g[i + 1] for g in gathered]) for i in range(len(arrays)))
        order = np.argsort(rows)
        return (rows[order], *(a[order] for a in arrays))

    def state(self, epoch: int, metrics: dict, history: list[dict]) -> dict:
        return {"model": unwrap(self.model).state_dict(), "optimizer": self.optimizer.state_dict(),
                "config": self.cfg.model_dump(mode="json"), "epoch": epoch, "metrics": metrics, "history": history}

    def load_state(self, state: dict) -> None:
        unwrap(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated by torch on CUDA; peak resident set size of this process on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def seed_everything(seed: int) -> None:
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
