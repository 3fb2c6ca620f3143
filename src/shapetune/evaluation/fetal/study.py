"""The fetal-skull study: train each model on each cross-validation fold, evaluate by view subset.

``STUDY/study.json``           the request (data, folds, samples, each model's configuration)
``STUDY/runs/MODEL/foldK/``     one ``shapetune train`` run per model and fold (a finished run is reused)
``STUDY/scores/MODEL_foldK.parquet`` / ``.npz``  per subject x view subset metrics; predictions, variance maps
``STUDY/per_case.parquet``      every model x fold x subject x view subset
``STUDY/table.csv`` / ``table.md``  DC, HD (mm), RVD by view subset: mean +- sd over the folds
``STUDY/view_effects.csv``      Dice lost per model when views go missing, and between models (paired per subject)
``STUDY/figures/``              Dice by view subset, uncertainty maps

A re-run trains and scores only what is missing; ``force`` re-scores (training is never repeated).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from rich.console import Console

from shapetune.config import TrainConfig
from shapetune.data.dataset import dataset_task
from shapetune.data.fetal.folds import SUBSET_LABELS, VIEW_SUBSETS, fold_data
from shapetune.data.nifti import sha256_file
from shapetune.errors import ShapeTuneError
from shapetune.evaluation.fetal.files import STUDY_FILE, slug
from shapetune.evaluation.candidates import candidates, checkpoint_dir
from shapetune.evaluation.fetal.figures import dice_by_views, uncertainty_figure
from shapetune.experiment.checkpoints import CHECKPOINT_FILE, load_state
from shapetune.io import atomic_write_json, atomic_write_parquet, claim_folder
from shapetune.models.config import CONDITIONAL_MODELS
from shapetune.training.ray_driver import RAY_LOG, route_ray_output, settle

console = Console()
SIZE_ERRORS = ("ofd_err", "bpd_err", "height_err")  # relative errors of the head's length, width, height
# The reference study's table (Cerrolaza et al.): DC, HD mm, RVD for 3 / 2 / 1 views.
REFERENCE = {
    "CVAE": {"3v": (0.91, 4.33, 0.03), "2v": (0.86, 5.43, 0.03), "1v": (0.83, 6.23, 0.09)},
    "HCVAE": {"3v": (0.91, 4.12, 0.03), "2v": (0.89, 4.81, 0.03), "1v": (0.86, 5.04, 0.04)},
    "TL-Net": {"3v": (0.89, 4.79, 0.09), "2v": (0.89, 5.32, 0.09), "1v": (0.85, 7.04, 0.17)},
    "GAN": {"3v": (0.89, 5.16, 0.03), "2v": (0.86, 5.93, 0.05), "1v": (0.83, 8.04, 0.17)},
}


class StudyError(ShapeTuneError):
    """A bad study request (unknown model config, a fold the data does not have, a non-fetal dataset)."""


@dataclass
class StudyResult:
    out: Path
    per_case: pd.DataFrame
    table: pd.DataFrame
    trained: list[str] = field(default_factory=list)
    scored: list[str] = field(default_factory=list)
    effects: pd.DataFrame | None = None  # :func:`~shapetune.evaluation.fetal.view_effects.view_effects`


def fold_count(data: str | Path) -> int:
    if dataset_task(data) != "fetal":
        raise StudyError(f"{data}: not a fetal-skull dataset (prepare one with --format fetal)")
    return int(json.loads((Path(data) / "dataset.json").read_text()).get("folds", 0))


def same_config(saved: dict, cfg: TrainConfig) -> bool:
    """Whether a run's saved configuration is ``cfg``, read through today's schema: a field added since (at
    its default) does not make a finished run another configuration."""
    try:
        return TrainConfig.model_validate(saved).model_dump(mode="json") == cfg.model_dump(mode="json")
    except ValueError:  # a field since removed or renamed: not comparable, so not the same
        return False


def train_folds(configs: dict[str, TrainConfig], data: str | Path, out: Path, folds: list[int],
                runs: dict[tuple[str, int], Path] | None = None, workers: int = 1,
                cpus_per_worker: float | None = None, verbose: bool = False) -> tuple[dict, list[str]]:
    """Train every (model, fold) without a finished run under ``out/runs`` (or in ``runs``); returns the runs.
    ``workers`` Ray Train workers per run (0: in this process, without Ray). Ray's lines go to ``out/ray.log``
    unless ``verbose``."""
    from shapetune.training.local import train_in_process
    from shapetune.training.ray_train import run_training

    have = dict(runs or {})
    routed = False
    trained = []
    for name, cfg in configs.items():
        for k in folds:
            if (name, k) in have:
                continue
            run = out / "runs" / slug(name) / f"fold{k}"
            fold_cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"fold": k})})
            summary = run / "summary.json"
            if summary.exists():  # a finished run is never trained again, but it must be this configuration's
                if not same_config(json.loads(summary.read_text())["config"], fold_cfg):
                    raise StudyError(f"{run} was trained with another configuration than model {name!r} has now; "
                                     "give the model another name (NAME=CONFIG) or use another --out")
            else:
                console.print(f"[bold]training {name} on fold {k}[/] -> {run}")
                if workers == 0:
                    train_in_process(fold_cfg, data, run, cpus=cpus_per_worker)
                else:
                    if not routed:
                        route_ray_output(None if verbose else out / RAY_LOG)
                        routed = True
                    run_training(fold_cfg, str(data), run, workers=workers, cpus_per_worker=cpus_per_worker)
                    settle()
                trained.append(f"{name}/fold{k}")
            have[(name, k)] = run
    return have, trained


def write_runs(out: Path, runs: dict[tuple[str, int], Path]) -> None:
    """``runs.json``: where each model x fold's checkpoint lives (for the dashboard and re-evaluation)."""
    rows = [{"model": n, "fold": k, "run": str(Path(r).resolve())} for (n, k), r in sorted(runs.items())]
    (out / "runs.json").write_text(json.dumps(rows, indent=2))


def _checkpoint(run: Path) -> Path:
    return checkpoint_dir(run)


def score_runs(runs: dict[tuple[str, int], Path], data: str | Path, out: Path, samples: int = 8,
               force: bool = False, device: str = "cpu") -> tuple[pd.DataFrame, list[str]]:
    """Score every run on its fold's test subjects (cached in ``out/scores`` by checkpoint hash)."""
    from shapetune.evaluation.fetal.scoring import save_maps, score_fold
    scores = out / "scores"
    scores.mkdir(parents=True, exist_ok=True)
    frames, scored = [], []
    for (name, k), run in sorted(runs.items()):
        ck = _checkpoint(Path(run))
        key = sha256_file(ck / CHECKPOINT_FILE)[:16]
        stem = scores / f"{slug(name)}_fold{k}"
        meta = stem.with_suffix(".json")
        fresh = (meta.exists() and json.loads(meta.read_text()).get("key") == key
                 and stem.with_suffix(".parquet").exists())
        if force or not fresh:
            planes, truth, subjects, spacing = fold_data(data, k)
            console.print(f"scoring {name} fold {k} ({len(subjects)} test subjects x {len(VIEW_SUBSETS)} view subsets)")
            df, maps = score_fold(ck, planes, truth, subjects, spacing, samples=samples, seed=k, device=device)
            df.insert(0, "fold", k)
            df.insert(0, "model", name)
            atomic_write_parquet(df, stem.with_suffix(".parquet"))
            save_maps(stem.with_suffix(".npz"), maps, subjects)
            meta.write_text(json.dumps({"key": key, "checkpoint": str(ck), "samples": samples}))
            scored.append(f"{name}/fold{k}")
        frames.append(pd.read_parquet(stem.with_suffix(".parquet")))
    return pd.concat(frames, ignore_index=True), scored


def study_table(per_case: pd.DataFrame) -> pd.DataFrame:
    """Model x view subset: DC, HD, RVD (and |RVD|, uncertainty, |size errors|) as mean and sd over the folds' means."""
    sizes = [c for c in SIZE_ERRORS if c in per_case]  # scores cached before these existed lack them
    per_case = per_case.assign(**{f"abs_{c}": per_case[c].abs() for c in sizes})
    metrics = ["dice", "hd", "rvd", "abs_rvd", "uncertainty", "uncertainty_auc", *(f"abs_{c}" for c in sizes)]
    per_fold = per_case.groupby(["model", "views", "fold"])[metrics].mean()
    g = per_fold.groupby(["model", "views"])
    table = g.mean().add_suffix("_mean").join(g.std(ddof=1).add_suffix("_sd")).join(g.size().rename("folds"))
    table = table.reset_index()
    order = {k: i for i, k in enumerate(VIEW_SUBSETS)}
    return table.sort_values(["model", "views"],
                             key=lambda s: s.map(order) if s.name == "views" else s).reset_index(drop=True)


def mean_sd(r: pd.Series, m: str, fmt: str) -> str:
    """``mean ± sd`` of metric ``m`` from a study-table row (the mean alone with one fold, ``-`` without)."""
    mean, sd = r[f"{m}_mean"], r[f"{m}_sd"]
    if mean != mean:
        return "-"
    return f"{mean:{fmt}} ± {sd:{fmt}}" if sd == sd else f"{mean:{fmt}}"


def table_markdown(table: pd.DataFrame) -> str:
    """The reference study's layout: one row per model, DC / HD / RVD for 3, 2, 1 views; reference below."""
    head = "| model | " + " | ".join(f"{SUBSET_LABELS[s]}: DC / HD mm / RVD" for s in VIEW_SUBSETS) + " |"
    lines = [head, "|---" * (1 + len(VIEW_SUBSETS)) + "|"]
    for model, g in table.groupby("model", sort=False):
        cells = []
        for s in VIEW_SUBSETS:
            r = g[g.views == s]
            cells.append("-" if r.empty else " / ".join([mean_sd(r.iloc[0], "dice", ".3f"),
                                                          mean_sd(r.iloc[0], "hd", ".2f"),
                                                          mean_sd(r.iloc[0], "rvd", ".3f")]))
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    lines += ["", "Reference study (real fetal 3D ultrasound, 96³, 0.5 mm):", "", head, lines[1]]
    for model, vals in REFERENCE.items():
        lines.append(f"| {model} | " + " | ".join(" / ".join(f"{v:g}" for v in vals[s]) for s in VIEW_SUBSETS) + " |")
    return "\n".join(lines) + "\n"


def run_study(configs: dict[str, TrainConfig], data: str | Path, out: str | Path, folds: list[int] | None = None,
              samples: int = 8, force: bool = False, workers: int = 1,
              runs: dict[tuple[str, int], Path] | None = None, cpus_per_worker: float | None = None,
              verbose: bool = False) -> StudyResult:
    """Train what is missing, score what is new, write the table, per-case results and figures.

    Args:
        configs: the compared models by name (fetal-skull configs: cvae, hcvae, tlnet, cgan).
        data: a prepared fetal-skull dataset with cross-validation folds.
        out: the study folder; runs already trained there with the same config are reused.
        folds: the folds to run (default: all of the dataset's).
        samples: posterior samples per case for the uncertainty maps.
        force: retrain and rescore everything.
        workers, cpus_per_worker: Ray Train workers per run and their CPUs (0 workers: each run in this process,
            without Ray; the CPUs are then its torch threads).
        runs: finished runs to score instead of training, by (model name, fold).
        verbose: show Ray's lines on the console (by default they go to ``out/ray.log``).

    Returns:
        The study folder, per-case results, the per-model table (Dice by view subset, size errors), what was
        trained and scored by this call, and the paired view effects.

    Raises:
        StudyError: not a fetal dataset, an unknown fold, a non-fetal model, or a run trained with another config.
    """
    from shapetune.evaluation.fetal.view_effects import effects_markdown, view_effects

    out = Path(out).resolve()
    n_folds = fold_count(data)
    folds = list(range(n_folds)) if folds is None else folds
    bad = [k for k in folds if not 0 <= k < n_folds]
    if bad:
        raise StudyError(f"{data}: no fold(s) {bad}; it has folds 0..{n_folds - 1}")
    for name, cfg in configs.items():
        if cfg.model.name not in CONDITIONAL_MODELS:
            raise StudyError(f"model {name!r} ({cfg.model.name}) is not a fetal-skull model "
                             f"({', '.join(CONDITIONAL_MODELS)})")
    claim_folder(out, "study", legacy=lambda p: (p / STUDY_FILE).is_file())  # never someone else's folder
    request = {"data": str(Path(data).resolve()), "folds": folds, "samples": samples,
               "models": {n: c.model_dump(mode="json") for n, c in configs.items()}}
    atomic_write_json(out / STUDY_FILE, request)
    runs, trained = train_folds(configs, data, out, folds, runs, workers, cpus_per_worker, verbose)
    write_runs(out, runs)
    per_case, scored = score_runs({k: v for k, v in runs.items() if k[1] in folds}, data, out, samples, force)
    table = study_table(per_case)
    atomic_write_parquet(per_case, out / "per_case.parquet")
    table.to_csv(out / "table.csv", index=False)
    effects = view_effects(per_case)
    effects.to_csv(out / "view_effects.csv", index=False)
    (out / "table.md").write_text(table_markdown(table) + "\n" + effects_markdown(effects))
    fig_dir = out / "figures"
    fig_dir.mkdir(exist_ok=True)
    dice_by_views(table, fig_dir / "dice_by_views.png")
    for name in configs:
        uncertainty_figure(out, data, name, folds[0], fig_dir / f"uncertainty_{slug(name)}.png")
    return StudyResult(out, per_case, table, trained, scored, effects)


def evaluate_sweep(exp_dir: Path, data: str | Path, trials: str = "best", force: bool = False,
                   samples: int = 8) -> StudyResult:
    """Cross-validate a fetal sweep's trials (``best``, ``all`` or ids): each trial's checkpoint is its
    configuration's run on the fold it was swept on; the other folds are trained with the same configuration
    under ``EXP/evaluation/fetal/runs``; then the study's table by view subset."""
    configs, runs = {}, {}
    for c in candidates(exp_dir, trials):
        cfg = TrainConfig.model_validate(load_state(c.checkpoint)["config"])
        configs[c.name] = cfg
        runs[(c.name, cfg.data.fold)] = c.checkpoint
    if not configs:
        raise StudyError(f"{exp_dir}: no trial with a checkpoint to evaluate")
    return run_study(configs, data, exp_dir / "evaluation" / "fetal", samples=samples, force=force, runs=runs)
