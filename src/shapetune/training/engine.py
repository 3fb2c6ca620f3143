"""The training/validation engine shared by the Ray Train workers and the plain in-process loop.

Distributed-agnostic: it is told its rank and world size, shards the data itself (every rank takes the
same number of batches so DDP's collectives line up), and gathers validation predictions when a process
group exists.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from shapetune.errors import ShapeTuneError
from shapetune.models.losses import LossWeights, hard_dice
from shapetune.config import TrainConfig
from shapetune.training.tasks import task_of


def dice_per_channel(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Hard Dice ``[B, C]`` of binary tensors (1 when both are empty)."""
    return hard_dice(pred, target, 2)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside torch.compile's and DDP's wrappers (its state dict's keys carry no prefix)."""
    model = getattr(model, "_orig_mod", model)  # torch.compile's OptimizedModule
    return model.module if hasattr(model, "module") else model


def param_groups(model: nn.Module, head_lr_scale: float) -> list[dict[str, Any]]:
    """The optimizer's parameter groups: one, or the bottom latent's head (``model.bottom_head``) apart at
    ``head_lr_scale`` times the schedule's lr (``optim.head_lr_scale``). One group when it is 1, so that
    checkpoints of runs without it load as before."""
    if head_lr_scale == 1.0:
        return [{"params": list(model.parameters())}]
    head = {id(p) for p in model.bottom_head.parameters()}
    return [{"params": [p for p in model.parameters() if id(p) not in head]},
            {"params": list(model.bottom_head.parameters()), "lr_scale": head_lr_scale}]


class Engine:
    """One rank's view of training: batches, loss, optimisation step, validation."""

    def __init__(self, cfg: TrainConfig, model: nn.Module, device: torch.device, rank: int = 0, world: int = 1):
        self.cfg, self.model, self.device, self.rank, self.world = cfg, model, device, rank, world
        o = cfg.optim
        self.optimizer = torch.optim.Adam(param_groups(unwrap(model), o.head_lr_scale), lr=o.lr, betas=o.betas,
                                          weight_decay=o.weight_decay)
        loss = cfg.loss.model_dump()
        self.weights = LossWeights(**{**loss, "kl_alpha": tuple(loss["kl_alpha"]) if loss["kl_alpha"] else None})
        self.variational = unwrap(model).variational
        self.task = task_of(cfg)
        self.amp = use_bf16(device, cfg.amp)
        self.autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if self.amp \
            else contextlib.nullcontext
        self.channels_last = cfg.channels_last
        if self.channels_last:
            to_channels_last(model)
        if cfg.compile != "off":  # the training step's forward; eval_model() (validation, checkpoints) stays plain
            self.model = torch.compile(model, mode=cfg.compile)
        # The average is kept beside the trained weights and is what validation, checkpoints and exports see.
        self.ema = AveragedModel(unwrap(model), multi_avg_fn=get_ema_multi_avg_fn(o.ema), use_buffers=True) \
            if o.ema else None

    def _shard(self, n: int, epoch: int) -> np.ndarray:
        perm = np.random.default_rng([self.cfg.seed, epoch]).permutation(n)
        per_rank = n // self.world
        return perm[self.rank::self.world][:per_rank]

    def lr_at(self, epoch: float) -> float:
        """The learning rate at (fractional) ``epoch``: a function of it alone, so a resumed run continues the
        schedule. Set every step: a linear warm-up, then constant or a cosine that reaches its floor at the start
        of the last epoch (onecycle: torch's OneCycleLR shape, from lr/25 up, down to lr/25e4)."""
        o = self.cfg.optim
        onecycle = o.schedule == "onecycle"
        warm = o.warmup_epochs or (0.3 * o.epochs if onecycle else 0.0)
        if epoch < warm:
            start = o.lr / 25 if onecycle else 0.0
            return start + (o.lr - start) * epoch / warm
        if o.schedule == "constant" or o.epochs <= 1:
            return o.lr
        floor = o.lr / 25e4 if onecycle else o.lr * o.min_lr_ratio
        frac = min(1.0, (epoch - warm) / max(o.epochs - 1 - warm, 1e-9))
        return floor + (o.lr - floor) * 0.5 * (1 + math.cos(math.pi * frac))

    def eval_model(self) -> nn.Module:
        """The weights validation and checkpoints use: the moving average when ``optim.ema`` is set."""
        return self.ema.module if self.ema is not None else unwrap(self.model)

    def train_epoch(self, data, epoch: int) -> dict[str, float]:
        if epoch == 0 and self.cfg.model.linear_init == "pca":
            # Every rank holds the whole training set and computes the same basis (DDP has already broadcast
            # the other weights); a resumed run starts past epoch 0 with its checkpoint's basis.
            unwrap(self.model).start_from_pca(data.train_x)
        self.model.train()
        bs = self.cfg.optim.batch_size
        idx = self._shard(self.task.n_train(data), epoch)
        n_batches = max(1, len(idx) // bs)
        self.gen = torch.Generator().manual_seed(self.cfg.seed * 100003 + epoch * 101 + self.rank)
        # Summed on the device and read once per epoch: a float() per step made the CPU wait for the GPU every step
        # (on an H200 the 64^3 loop ran at 330 samples/s with CUDA graphs against 810 for the bare step).
        sums: dict[str, Any] = {}
        t0 = time.perf_counter()
        for b in range(n_batches):
            sel = np.sort(idx[b * bs:(b + 1) * bs])
            lr = self.lr_at(epoch + b / n_batches)
            for group in self.optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)
            loss, terms = self.task.batch_loss(self, data, sel, epoch, b, epoch + b / n_batches)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.cfg.optim.grad_clip:
                nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update_parameters(unwrap(self.model))
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v.double()  # float64, as the Python floats it replaces: same sums
        # Read before the clock stops: the last sum follows the last optimizer step on the device's stream.
        metrics = {f"train_{k}": float(v) / n_batches for k, v in sums.items()}
        dt = time.perf_counter() - t0
        metrics["samples_per_s"] = n_batches * bs * self.world / dt
        metrics["lr"] = self.lr_at(epoch)
        metrics["epoch_time_s"] = dt
        metrics["peak_mem_mb"] = peak_memory_mb(self.device)
        return metrics

    def tensor(self, x_np: np.ndarray) -> torch.Tensor:
        """A batch of volumes ``[B, C, D, H, W]`` as float32 on the device, in the model's memory format."""
        # Copied in its own dtype and cast on the device: uint8 masks move a quarter of the bytes to a GPU.
        x = torch.from_numpy(np.ascontiguousarray(x_np)).to(self.device).to(torch.float32)
        return x.contiguous(memory_format=torch.channels_last_3d) if self.channels_last and x.ndim == 5 else x

    @torch.inference_mode()
    def predict(self, x_np: np.ndarray, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
        """Per-subject hard Dice ``[N, P]`` against the input and the positive-class probability ``[N]`` (this
        rank's rows)."""
        model = self.eval_model().eval()
        dices, probs = [], []
        for s in range(0, len(x_np), batch_size):
            x = self.tensor(x_np[s:s + batch_size])
            with self.autocast():
                out = model(x)
            dices.append(dice_per_channel((out.logits.float() > 0).float(), x).cpu())
            probs.append(torch.sigmoid(out.cls_logit.float()).cpu())
        if not dices:
            return np.zeros((0, x_np.shape[1] if x_np.ndim > 1 else 2)), np.zeros(0)
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
        # contiguous: channels-last weights are saved in the standard layout (safetensors needs it; any model loads it)
        def plain(m: nn.Module) -> dict:
            return {k: v.contiguous() for k, v in m.state_dict().items()}

        state = {"model": plain(self.eval_model()), "optimizer": self.optimizer.state_dict(),
                 "config": self.cfg.model_dump(mode="json"), "epoch": epoch, "metrics": metrics, "history": history}
        if self.ema is not None:  # "model" holds the average (what is evaluated and exported); resume needs both
            state["trained_model"] = plain(unwrap(self.model))
            state["ema_steps"] = int(self.ema.n_averaged)
        return state

    def load_state(self, state: dict) -> None:
        unwrap(self.model).load_state_dict(state.get("trained_model", state["model"]))
        if self.ema is not None:
            self.ema.module.load_state_dict(state["model"])
            self.ema.n_averaged.fill_(state.get("ema_steps", 1))
        # Adam's state is stored per group: another grouping would misplace it, and the saved group's lr_scale
        # would silently replace the config's.
        saved = state["optimizer"]["param_groups"][-1].get("lr_scale", 1.0)
        if saved != self.cfg.optim.head_lr_scale:
            raise ShapeTuneError(f"optim.head_lr_scale={self.cfg.optim.head_lr_scale:g}: the checkpoint this run "
                                 f"resumes from was trained with optim.head_lr_scale={saved:g}; resume with that "
                                 f"value, or start a new run")
        self.optimizer.load_state_dict(state["optimizer"])


def use_bf16(device: torch.device, amp: str) -> bool:
    """Whether training autocasts to bf16: asked for, or ``auto`` on CPUs with native bf16 (not on CUDA).

    Measured on this project's 2-core AVX512-BF16 CPU (32^3 LVAE step, batch 8): bf16 alone 1.3x the fp32
    samples/s, with channels-last 1.7x. Without native bf16 (no AVX512-BF16 / AMX) autocast only adds casts.
    On an H200 (gpu_check, 2026-12-04) the fastest lvae step was fp32 at 32^3, 64^3 and 96^3 (715 vs 631, 755 vs
    488, 246 vs 222 samples/s): cuDNN already runs fp32 convs on tensor cores (TF32), and the step is bound by
    kernel launches, to which autocast only adds casts.
    """
    if amp == "off":
        return False
    if amp == "bf16":
        return True
    return device.type == "cpu" and bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def to_channels_last(model: nn.Module) -> nn.Module:
    """3D conv weights in channels-last (NDHWC) layout, in place (other parameters keep theirs).

    Measured (2-core CPU, 32^3, 8-channel full-resolution convs): oneDNN runs these 2-3x faster channels-last;
    the whole LVAE step 1.3x in fp32.
    """
    for p in model.parameters():
        if p.dim() == 5:
            p.data = p.data.contiguous(memory_format=torch.channels_last_3d)
    return model


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated by torch on CUDA; peak resident set size of this process on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def seed_everything(seed: int, device: torch.device, deterministic: bool | None = None) -> None:
    """Seed numpy and torch; ask for deterministic kernels if ``deterministic``, by default on CUDA only.

    Not on CPU by default: there the same seed already gives bit-identical runs (measured: 5 LVAE steps, cl +
    bf16, two runs equal to the last bit with and without it), while deterministic mode picks slower oneDNN
    paths (-10 % samples/s).
    """
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(device.type == "cuda" if deterministic is None else deterministic,
                                       warn_only=True)
