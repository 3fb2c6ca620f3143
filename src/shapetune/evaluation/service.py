"""The evaluation service: every candidate x split, in parallel as Ray tasks, cached, aggregated, reported.

Candidates are a sweep's trials (``best``, ``all`` or ids), extra checkpoints by path (``NAME=DIR``, e.g.
a VAE or AE run to compare against) and the baselines fitted on the experiment's training split. Each
candidate x split result is cached in ``EXP/evaluation/cache/`` under a key made of the checkpoint's
sha256 (or the baseline and its training data) and the split's fingerprint, written atomically; a
re-run evaluates only what is new (``force`` redoes everything). A candidate that fails (a corrupted
checkpoint, say) is reported in ``errors.json`` and the others still evaluate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console

from shapetune import storage
from shapetune.data.dataset import PreparedDataset, dataset_task
from shapetune.data.nifti import sha256_file
from shapetune.evaluation.aggregate import latent_projections, summarize
from shapetune.evaluation.baselines import BASELINES
from shapetune.evaluation.candidates import Candidate, EvaluationError, candidates, checkpoint_dir
from shapetune.evaluation.fetal.study import evaluate_sweep
from shapetune.evaluation.report import write_report
from shapetune.evaluation.scoring import latent_rows, score_checkpoint, subject_rows
from shapetune.evaluation.surface import NSD_TOLERANCE_MM
from shapetune.evaluation.splits import EvalSplit, acdc_prepared, load_split, load_train, split_fingerprint
from shapetune.experiment.checkpoints import CHECKPOINT_FILE
from shapetune.experiment.settings import data_dir, load_settings, local_experiment
from shapetune.experiment.tracking import track_evaluation
from shapetune.io import atomic_write_parquet, atomic_write_text
from shapetune.training.ray_driver import RAY_LOG, route_ray_output

console = Console()
SPLITS = ("imperial_test", "acdc_test", "acdc_hard")
# The external splits, each read from the ACDC-layout folder its option names (evaluate(acdc=..., acdc_hard=...)).
EXTERNAL = {"acdc_test": "acdc", "acdc_hard": "acdc_hard"}
# Tasks without held-out splits (TaskSpec.test_split None), each evaluated by its own cross-validation study.
CROSS_VALIDATED = {"fetal": evaluate_sweep}
__all__ = ["CROSS_VALIDATED", "Candidate", "EvalResult", "EvaluationError", "SPLITS", "candidates",
           "checkpoint_dir", "evaluate", "score_and_cache"]


def _sha(path: Path) -> str:
    return sha256_file(path)[:16]


@dataclass
class EvalResult:
    out_dir: Path
    per_subject: pd.DataFrame
    summary: pd.DataFrame
    latents: pd.DataFrame
    errors: list[dict] = field(default_factory=list)
    evaluated: int = 0
    cached: int = 0
    nsd_tolerance_mm: float = NSD_TOLERANCE_MM


def _score_task(checkpoint: str, name: str, split: EvalSplit, device: str, nsd_tolerance_mm: float):
    return score_checkpoint(checkpoint, name, split, device=device, nsd_tolerance_mm=nsd_tolerance_mm)


def evaluate(exp_dir: str | Path, splits: tuple[str, ...] = SPLITS[:2], trials: str = "best",
             acdc: str | Path | None = None, extra: list[str] | tuple = (),
             baselines: tuple[str, ...] = ("clinical", "pca"), force: bool = False, use_ray: bool = True,
             n_boot: int = 2000, acdc_hard: str | Path | None = None,
             nsd_tolerance_mm: float = NSD_TOLERANCE_MM, verbose: bool = False) -> EvalResult:
    """Evaluate and write ``EXP/evaluation/{per_subject,summary,latents}.parquet`` and the report.

    Args:
        exp_dir: the experiment folder or its URI (a URI is evaluated in a local mirror, then published).
        splits: ``imperial_test`` (the sweep's own test split), ``acdc_test`` (the ACDC-layout folder ``acdc``),
            ``acdc_hard`` (a second, harder external set, added whenever ``acdc_hard`` is given).
        trials: ``best`` (the checkpoint ``shapetune export`` would choose), ``all``, or trial ids joined by commas.
        acdc: a raw ACDC-layout folder or a prepared dataset for the external split ``acdc_test``.
        acdc_hard: the same for the second external split, ``acdc_hard``.
        extra: more candidates as ``NAME=CHECKPOINT_OR_RUN_DIR``.
        baselines: names in :data:`~shapetune.evaluation.baselines.BASELINES`, fitted on the training split.
        force: score again what the cache already holds.
        use_ray: score candidates in parallel Ray tasks.
        n_boot: bootstrap resamples for the confidence intervals.
        nsd_tolerance_mm: the tolerance of the normalized surface Dice (part of the cache key).
        verbose: let Ray print its own lines on the console (by default they go to ``evaluation/ray.log``, as a
            sweep's go to the experiment's ``ray.log``).

    Returns:
        Per-subject rows, the summary with CIs and paired tests, the output folder and the cache counts.

    Raises:
        EvaluationError: an unknown split, trial or baseline, a split without its folder, or nothing evaluable.
        DataError: an external folder that cannot be read or prepared on the experiment's grid.
    """
    if storage.is_uri(exp_dir):  # evaluate a local mirror, then publish evaluation/ next to the experiment
        res = evaluate(local_experiment(exp_dir), splits, trials, acdc, extra, baselines, force, use_ray, n_boot,
                       acdc_hard, nsd_tolerance_mm, verbose)
        storage.upload(res.out_dir, storage.join(exp_dir, "evaluation"))
        return res
    external = {"acdc": acdc, "acdc_hard": acdc_hard}
    external = {k: storage.local_copy(v) if v is not None and storage.is_uri(v) else v for k, v in external.items()}
    if acdc_hard is not None and "acdc_hard" not in splits:
        splits = (*splits, "acdc_hard")
    exp_dir = Path(exp_dir).resolve()
    settings = load_settings(exp_dir.parent, exp_dir.name)
    settings = settings.model_copy(update={"data": str(data_dir(settings))})
    task = dataset_task(settings.data)
    if task in CROSS_VALIDATED:  # e.g. the fetal skulls: cross-validation by view subset, not held-out splits
        return CROSS_VALIDATED[task](exp_dir, settings.data, trials, force)
    unknown = set(splits) - set(SPLITS)
    if unknown:
        raise EvaluationError(f"unknown split(s) {sorted(unknown)}; choose from {', '.join(SPLITS)}")
    out = exp_dir / "evaluation"
    cache = out / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    cands = candidates(exp_dir, trials, extra)
    data_ds = PreparedDataset(settings.data)
    grid = data_ds.grid
    if not data_ds.is_cardiac:  # a user's own cohort: no ACDC split unless given, no clinical indices
        dropped = [s for s in splits if s != "imperial_test" and external[EXTERNAL[s]] is None]
        splits = tuple(s for s in splits if s not in dropped)
        if dropped:
            console.print(f"note: split(s) {', '.join(dropped)} left out: they are the cardiac cohorts' external sets "
                          "and no folder was given for them")
        if "clinical" in baselines:
            baselines = tuple(b for b in baselines if b != "clinical")
            console.print("note: the clinical baseline is left out: a manifest-table cohort has no clinical indices")
    loaded: dict[str, EvalSplit] = {}
    sources: dict[str, dict] = {}  # where each split's masks live, for the dashboard
    for s in splits:
        if s == "imperial_test":
            sources[s] = {"data": str(Path(settings.data).resolve()), "split": "test"}
        else:
            option = EXTERNAL[s]
            if external[option] is None:
                flag = "--" + option.replace("_", "-")
                raise EvaluationError(f"{s} needs {flag} DIR (a raw ACDC-layout folder or a prepared one)")
            sources[s] = {"data": str(acdc_prepared(external[option], grid, cache, option).resolve()), "split": None}
        loaded[s] = load_split(sources[s]["data"], sources[s]["split"], s, grid)
    for name in baselines:
        if name not in BASELINES:
            raise EvaluationError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")
    errors: list[dict] = []
    for c in cands:
        try:
            c.key = _sha(c.checkpoint / CHECKPOINT_FILE)
        except OSError as exc:
            errors.append({"candidate": c.name, "problem": str(exc)})
    cands = [c for c in cands if c.key]
    train_fp = split_fingerprint(data_ds, "train")  # no need to load the masks here
    cands += [Candidate(BASELINES[b]().name, baseline=b, key=f"{b}-{train_fp}") for b in baselines]

    def cached(c: Candidate, s: EvalSplit) -> tuple[Path, Path]:
        return cache_paths(cache, c.key, s.fingerprint, nsd_tolerance_mm)

    todo = [(c, s) for c in cands for s in loaded.values() if force or not cached(c, s)[0].exists()]
    n_cached = len(cands) * len(loaded) - len(todo)
    console.print(f"evaluating {len(todo)} candidate x split pair(s); {n_cached} already evaluated (cache)")
    results: dict[tuple[str, str], tuple[pd.DataFrame, pd.DataFrame]] = {}
    ckpt_jobs = [(c, s) for c, s in todo if c.checkpoint is not None]
    if ckpt_jobs:
        ray_log = None if verbose else out / RAY_LOG
        results.update(_run_checkpoints(ckpt_jobs, use_ray, errors, nsd_tolerance_mm, ray_log))
    fitted = {}
    for c, s in todo:
        if c.baseline is None:
            continue
        if c.baseline not in fitted:
            masks, labels, clinical = _train_arrays(settings.data)
            fitted[c.baseline] = BASELINES[c.baseline]().fit(masks, labels, clinical)

        o = fitted[c.baseline].predict(s)
        results[(c.name, s.name)] = (subject_rows(c.name, s, o.prob, o.recon, nsd_tolerance_mm=nsd_tolerance_mm),
                                     latent_rows(c.name, s, o.latents))
    for c, s in todo:
        if (c.name, s.name) in results:
            subj, lat = results[(c.name, s.name)]
            ps, pl = cached(c, s)
            atomic_write_parquet(subj, ps)
            atomic_write_parquet(lat, pl)
    frames, lats = [], []
    for c in cands:
        for s in loaded.values():
            ps, pl = cached(c, s)
            if ps.exists():  # the cache is keyed by content: names are this run's (one data set, two split names)
                frames.append(pd.read_parquet(ps).assign(model=c.name, split=s.name))
                lats.append(pd.read_parquet(pl).assign(model=c.name, split=s.name))
    if not frames:
        raise EvaluationError(f"{exp_dir}: nothing could be evaluated; problems: {errors}")
    per_subject = pd.concat(frames, ignore_index=True)
    latents = latent_projections(pd.concat(lats, ignore_index=True))
    summary = summarize(per_subject, n_boot=n_boot)
    atomic_write_parquet(per_subject, out / "per_subject.parquet")
    atomic_write_parquet(summary, out / "summary.parquet")
    atomic_write_parquet(latents, out / "latents.parquet")
    (out / "errors.json").write_text(json.dumps(errors, indent=2))
    write_manifest(out, cands, sources, set(per_subject.model))
    result = EvalResult(out, per_subject, summary, latents, errors, len(todo), n_cached, nsd_tolerance_mm)
    extra_figs = _navigation(cands, latents, loaded, out / "figures", data_ds.is_cardiac)
    write_report(result, [c.name for c in cands], extra_figs)
    try:
        if track_evaluation(exp_dir, out):
            console.print("logged the evaluation to the sweep's MLflow run (artifacts under evaluation/)")
    except Exception as exc:  # the tracking store being down must not lose a finished evaluation
        console.print(f"[yellow]tracking: the evaluation was not logged:[/] {exc}")
    return result


def _navigation(cands: list[Candidate], latents: pd.DataFrame, loaded: dict, fig_dir: Path,
                cardiac: bool = True) -> list[str]:
    """Latent walk and class-mean shapes of the first checkpoint candidate (on its first split)."""
    from shapetune.evaluation.navigation import latent_levels, navigation_figure
    from shapetune.training.checkpoints import load_model

    first = next((c for c in cands if c.checkpoint is not None and c.name in set(latents.model)), None)
    if first is None:
        return []
    split = next(iter(loaded.values()))
    lat = latents[(latents.model == first.name) & (latents.split == split.name)]
    levels = latent_levels(lat)
    labels = lat.label.to_numpy()
    model, _, _ = load_model(first.checkpoint)
    fig_dir.mkdir(parents=True, exist_ok=True)
    start = int(np.flatnonzero(labels == 0)[0]) if (labels == 0).any() else 0
    navigation_figure(model, levels, labels, start, split.spacing, fig_dir / "navigation.png",
                      fig_dir / "mean_shapes.png", wall_thickness=cardiac)
    return ["navigation.png", "mean_shapes.png"]


MANIFEST = "manifest.json"


def write_manifest(out: Path, cands: list[Candidate], sources: dict[str, dict], evaluated: set[str]) -> None:
    """``manifest.json``: each evaluated candidate's checkpoint (or baseline) and each split's data folder."""
    rows = [{"name": c.name, "checkpoint": str(c.checkpoint) if c.checkpoint else None, "baseline": c.baseline,
             "trial_id": c.trial_id, "key": c.key} for c in cands if c.name in evaluated]
    atomic_write_text(out / MANIFEST, json.dumps({"candidates": rows, "splits": sources}, indent=2))


def cache_paths(cache: Path, key: str, fingerprint: str,
                nsd_tolerance_mm: float = NSD_TOLERANCE_MM) -> tuple[Path, Path]:
    """Cached per-subject rows and latents of one candidate (``key``) on one split (``fingerprint``), with the NSD
    at ``nsd_tolerance_mm`` (another tolerance is another entry)."""
    stem = f"{key}_{fingerprint}_nsd{nsd_tolerance_mm:g}mm"
    return cache / f"{stem}.subjects.parquet", cache / f"{stem}.latents.parquet"


def score_and_cache(checkpoint: str, name: str, split: EvalSplit, cache: str) -> str:
    """Score a checkpoint on a split and write the result into the evaluation cache (a Ray task in sweeps)."""
    subj, lat = score_checkpoint(checkpoint, name, split)
    ps, pl = cache_paths(Path(cache), _sha(Path(checkpoint) / CHECKPOINT_FILE), split.fingerprint)
    ps.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_parquet(subj, ps)
    atomic_write_parquet(lat, pl)
    return str(ps)


def _train_arrays(data: str):
    return load_train(data)


def _run_checkpoints(jobs, use_ray: bool, errors: list[dict], nsd_tolerance_mm: float = NSD_TOLERANCE_MM,
                     ray_log: Path | None = None) -> dict:
    """Score checkpoints as parallel Ray tasks (one per checkpoint x split; a GPU each when there is one), Ray's own
    lines into ``ray_log`` (None: on the console)."""
    results = {}
    if use_ray:
        import ray

        route_ray_output(ray_log)  # Ray's start-up warnings and the tasks' output are not for the console
        gpu = ray.cluster_resources().get("GPU", 0) > 0
        task = ray.remote(num_cpus=1, num_gpus=1 if gpu else 0, max_retries=0)(_score_task)
        refs = {}
        split_refs = {}
        for c, s in jobs:
            if s.name not in split_refs:
                split_refs[s.name] = ray.put(s)
            refs[(c.name, s.name)] = (c, task.remote(str(c.checkpoint), c.name, split_refs[s.name],
                                                     "cuda" if gpu else "cpu", nsd_tolerance_mm))
        for key, (c, ref) in refs.items():
            try:
                results[key] = ray.get(ref)
            except Exception as exc:  # one bad checkpoint must not sink the others
                errors.append({"candidate": c.name, "split": key[1], "checkpoint": str(c.checkpoint),
                               "problem": _root_cause(exc)})
    else:
        for c, s in jobs:
            try:
                results[(c.name, s.name)] = _score_task(str(c.checkpoint), c.name, s, "cpu", nsd_tolerance_mm)
            except Exception as exc:
                errors.append({"candidate": c.name, "split": s.name, "checkpoint": str(c.checkpoint),
                               "problem": _root_cause(exc)})
    for e in errors:
        console.print(f"[red]could not evaluate[/] {e['candidate']} on {e.get('split', '-')}: {e['problem']}")
    return results


def _root_cause(exc: Exception) -> str:
    cause = getattr(exc, "cause", None) or exc
    return f"{type(cause).__name__}: {cause}".splitlines()[0]
