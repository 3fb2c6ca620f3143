"""The ``shapetune`` command line."""

from __future__ import annotations

import json
import tempfile
import time
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from shapetune import __version__, storage
from shapetune.catalog import task_spec
from shapetune.config import ConfigError, load_config
from shapetune.dashboard.experiments import DashboardError
from shapetune.dashboard.optuna_server import serve_optuna
from shapetune.data.cohorts import SynthConfig, synth_acdc, synth_imperial
from shapetune.data.dataset import cohort_overrides
from shapetune.data.errors import DataError
from shapetune.data.fetal.cohort import FetalConfig, synth_fetal
from shapetune.data.fetal.prepare import prepare_fetal
from shapetune.data.prepare import prepare
from shapetune.data.table_prepare import prepare_table
from shapetune.data.template import TemplateGrid
from shapetune.data.tubes_synth import TubesConfig, synth_tubes
from shapetune.errors import ShapeTuneError
from shapetune.experiment.tracking import check_tracking, track_training_run
from shapetune.evaluation.fetal.study import SUBSET_LABELS, mean_sd, run_study
from shapetune.io import claim_folder
from shapetune.search_spaces.samplers import SAMPLERS
from shapetune.search_spaces.schedulers import SCHEDULERS
from shapetune.serving.export import EXPORT_FORMATS, export_model
from shapetune.storage import StorageError
from shapetune.training.ray_driver import RAY_LOG, route_ray_output, settle

app = typer.Typer(help="ShapeTune: tune and clinically evaluate generative 3D cardiac shape models.",
                  no_args_is_help=True, pretty_exceptions_show_locals=False)
data_app = typer.Typer(help="Synthesize, prepare and inspect cardiac shape datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console()
err_console = Console(stderr=True)


class Cohort(str, Enum):
    imperial = "imperial"
    acdc = "acdc"
    fetal = "fetal"
    tubes = "tubes"


class Format(str, Enum):
    imperial = "imperial"
    acdc = "acdc"
    fetal = "fetal"
    table = "table"


def _version(value: bool) -> None:
    if value:
        console.print(f"shapetune {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                               help="Print the version and exit.")] = False) -> None:
    """ShapeTune command line."""


def _fail(exc: Exception) -> None:
    err_console.print(f"[bold red]error:[/] {exc}", soft_wrap=True)  # never break a file path
    raise typer.Exit(code=2)


@data_app.command("synth")
def data_synth(
    cohort: Annotated[Cohort, typer.Option(help="Which cohort to generate.")],
    out: Annotated[Path, typer.Option(help="Output folder (raw NIfTI layout).")],
    seed: Annotated[int, typer.Option(help="Random seed; the cohort is deterministic in it.")] = 0,
    grid: Annotated[int, typer.Option(help="Imperial: template grid size (voxels per side).")] = 64,
    spacing: Annotated[float, typer.Option(help="Imperial: template spacing in mm.")] = 2.0,
    borderline_fraction: Annotated[float, typer.Option(help="Fraction of HCM cases that are borderline "
                                                            "(13-16 mm).")] = 0.15,
    n_per_group: Annotated[int, typer.Option(help="ACDC: patients per group (NOR, HCM); tubes: subjects per group "
                                                  "(CN, AD).")] = 20,
    slice_mm: Annotated[float | None, typer.Option(help="ACDC: one slice thickness in mm for every patient "
                                                        "(default: drawn from 5, 6.5, 8, 10).")] = None,
    max_tilt_deg: Annotated[float, typer.Option(help="ACDC: largest tilt of the short-axis stack off the long "
                                                     "axis, degrees.")] = 8.0,
    subjects: Annotated[int, typer.Option(help="Fetal: cohort size (72 in the reference study; 3 folds x "
                                               "14 test).")] = 72,
    workers: Annotated[int, typer.Option(help="Parallel processes (0 = all cores).")] = 0,
) -> None:
    """Generate a synthetic cohort: Imperial-style 3D template masks, an ACDC-layout test set, fetal skulls with
    their 2D standard planes (--grid 64 for CPU, 96 as in the reference study; spacing follows the grid), or
    hippocampus-like tubes with a local atrophy (a manifest table; `data prepare OUT/manifest.csv --format table
    --structure-label 17 --positive AD`)."""
    try:
        cfg = SynthConfig(seed=seed, grid=grid, spacing=spacing, borderline_fraction=borderline_fraction)
        t0 = time.perf_counter()
        if cohort is Cohort.fetal:
            gt = synth_fetal(out, FetalConfig(seed=seed, n_subjects=subjects, grid=grid), workers=workers or None)
        elif cohort is Cohort.tubes:
            gt = synth_tubes(out, TubesConfig(seed=seed, n_per_group=n_per_group), workers=workers or None)
        elif cohort is Cohort.imperial:
            gt = synth_imperial(out, cfg, workers=workers or None)
        else:
            gt = synth_acdc(out, cfg, n_per_group=n_per_group, workers=workers or None, slice_mm=slice_mm,
                            max_tilt_deg=max_tilt_deg)
    except (DataError, ValueError) as exc:
        _fail(exc)
    dt = time.perf_counter() - t0
    console.print(f"[green]wrote {len(gt)} {cohort.value} subjects to {out}[/] in {dt:.1f} s "
                  f"({len(gt) / dt:.1f} subjects/s)")


@data_app.command("prepare")
def data_prepare(
    src: Annotated[Path, typer.Argument(help="Source folder (ACDC layout or Imperial-style layout), or the manifest "
                                             "table (CSV or Parquet) with --format table.")],
    format: Annotated[Format, typer.Option("--format", help="Layout of SRC.")],
    out: Annotated[Path, typer.Option(help="Prepared dataset folder.")],
    groups: Annotated[str, typer.Option(help="Comma-separated diagnosis groups to keep (NOR, MINF, DCM, HCM, "
                                             "RV).")] = "NOR,HCM",
    grid: Annotated[int, typer.Option(help="Template grid size (voxels per side).")] = 64,
    spacing: Annotated[float, typer.Option(help="Template spacing in mm.")] = 2.0,
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Skip unreadable/invalid subjects and list them, "
                                                              "instead of stopping.")] = False,
    in_plane: Annotated[str, typer.Option(help="In-plane alignment: 'rv' (septum from the RV) or 'keep' (input "
                                               "already aligned).")] = "rv",
    structure_label: Annotated[int, typer.Option(help="Table: the label value of the structure to model.")] = 1,
    align: Annotated[str, typer.Option(help="Table: 'principal' (centroid + principal axes), 'centroid' (shift "
                                            "only) or 'none' (data already registered).")] = "principal",
    phases: Annotated[str | None, typer.Option(help="Table: the phase columns, one or two, comma-separated "
                                                    "(default: ed,es or mask).")] = None,
    positive: Annotated[str | None, typer.Option(help="Table: the group that is label 1 (with a 'group' "
                                                      "column).")] = None,
    split: Annotated[str, typer.Option(help="Table without a 'split' column: train,val,test percentages of the "
                                            "split drawn per class.")] = "70,15,15",
    seed: Annotated[int, typer.Option(help="Table: the seed of that split.")] = 0,
    workers: Annotated[int, typer.Option(help="Parallel processes (0 = all cores).")] = 0,
) -> None:
    """Align, resample and check every subject onto the template grid; compute clinical indices."""
    try:
        t0 = time.perf_counter()
        if format is Format.fetal:  # fetal skulls keep their field of view: spacing follows the grid
            n = prepare_fetal(src, out, grid, workers=workers or None)
            console.print(f"[green]prepared {n} fetal subjects into {out}[/] in {time.perf_counter() - t0:.1f} s")
            return
        tg = TemplateGrid.cube(grid, spacing)
        table_only = {"--structure-label": structure_label != 1, "--align": align != "principal",
                      "--phases": phases is not None, "--positive": positive is not None,
                      "--split": split != "70,15,15", "--seed": seed != 0}
        cardiac_only = {"--groups": groups != "NOR,HCM", "--in-plane": in_plane != "rv"}
        unused = [k for k, v in (cardiac_only if format is Format.table else table_only).items() if v]
        if unused:  # an option that would be ignored is a mistake to say, not to pass over
            raise DataError(", ".join(unused), f"not an option of --format {format.value}")
        if format is Format.table:
            rep = prepare_table(src, out, tg, structure_label, align, _phase_list(phases), positive,
                                _fractions(split), seed, skip_bad=skip_bad, workers=workers or None)
        else:
            rep = prepare(src, format.value, out, tg, tuple(g.strip() for g in groups.split(",") if g.strip()),
                          skip_bad=skip_bad, in_plane=in_plane, workers=workers or None)
    except (DataError, ValueError) as exc:
        _fail(exc)
    dt = time.perf_counter() - t0
    for note in rep.notes:
        console.print(f"[yellow]note:[/] {note}", soft_wrap=True)
    if rep.up_to_date:
        console.print(f"[green]{out} is up to date[/] ({rep.n_subjects} subjects; inputs unchanged, nothing to do)")
    else:
        console.print(f"[green]prepared {rep.n_subjects} subjects into {out}[/] in {dt:.1f} s")
    if rep.excluded:
        console.print("not selected by --groups: " + ", ".join(f"{g} ({n})" for g, n in rep.excluded.items()))
    if rep.clipped:
        shown = ", ".join(rep.clipped[:10]) + (" ..." if len(rep.clipped) > 10 else "")
        console.print(f"[bold yellow]warning:[/] {len(rep.clipped)} subject(s) touch the template border (shape cut "
                      f"off; recorded as fov_clipped in dataset.json): {shown}; a larger --grid or --spacing holds "
                      "them", soft_wrap=True)
    if rep.skipped:
        t = Table(title=f"{len(rep.skipped)} subject(s) skipped", title_style="bold yellow")
        for c in ("subject", "file", "problem"):
            t.add_column(c, overflow="fold")
        for s in rep.skipped:
            t.add_row(s["subject"], s["file"], s["problem"])
        console.print(t)


def _phase_list(phases: str | None) -> tuple[str, ...] | None:
    return tuple(p.strip() for p in phases.split(",") if p.strip()) if phases else None


def _fractions(split: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(x) for x in split.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3:
        raise DataError("--split", f"expected three percentages train,val,test (e.g. 70,15,15), got {split!r}")
    return parts[0], parts[1], parts[2]


@data_app.command("show")
def data_show(
    path: Annotated[Path, typer.Argument(help="Prepared dataset folder.")],
    figures: Annotated[Path | None, typer.Option(help="Where to write the PNGs (default DIR/figures).")] = None,
) -> None:
    """Counts per split and class, clinical-index distributions per class, and a PNG mosaic."""
    from shapetune.data.show import show

    try:
        show(path, figures, console)
    except DataError as exc:
        _fail(exc)


def _config_path(config: str) -> Path:
    """A shipped config name (``lvae``, ``vae``, ``ae``) or a YAML file path."""
    p = Path(config)
    if p.exists() or p.suffix in (".yaml", ".yml"):
        return p
    shipped = Path(__file__).parent / "configs" / f"{config}.yaml"
    return shipped if shipped.exists() else p


@app.command("train", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train(
    ctx: typer.Context,
    config: Annotated[str, typer.Option(help="Config YAML file, or a shipped one: lvae, vae, ae (cardiac); cvae, "
                                             "hcvae, tlnet (fetal).")],
    data: Annotated[str, typer.Option(help="Prepared dataset folder (shapetune data prepare), or its URI.")],
    out: Annotated[str, typer.Option(help="Run folder or URI: checkpoints, history.csv, summary.json, "
                                          "learning_curves.png.")],
    workers: Annotated[int, typer.Option(help="Ray Train workers (DDP); 0 trains in this process without Ray: "
                                              "no start-up cost, no worker restarts, a local --out.",
                                         min=0)] = 1,
    gpus_per_worker: Annotated[float, typer.Option(help="GPUs per worker (0 = CPU with gloo).")] = 0.0,
    cpus_per_worker: Annotated[float | None, typer.Option(help="CPUs per worker (default: the node's CPUs / "
                                                               "workers).")] = None,
    tracking: Annotated[str | None, typer.Option(help="Log the finished run: mlflow=URI (experiment shapetune-train) "
                                                      "or wandb=PROJECT (offline unless WANDB_MODE says).")] = None,
    verbose: Annotated[bool, typer.Option(help="Show Ray's own lines on the console (by default they go to "
                                               "ray.log in the run folder).")] = False,
) -> None:
    """Train a model with Ray Train (or, --workers 0, in this process). Extra arguments are dotted overrides, e.g.
    optim.epochs=5 model.latent_dims=[32,8,2] (fetal models: data.fold=K picks the cross-validation fold)."""
    from shapetune.training.local import check_run_kind, train_in_process
    from shapetune.training.ray_train import run_training

    try:
        if workers == 0 and storage.is_uri(out):
            raise ShapeTuneError(f"{out}: --workers 0 trains in this process and writes a local run folder; give a "
                                 "folder, or train through Ray with --workers 1 or more")
        data_dir = storage.local_copy(data)
        cfg = load_config(_config_path(config), _fit_overrides(data_dir, list(ctx.args)))
        if tracking:
            check_tracking(tracking)
        if not storage.is_uri(out):  # a run folder is continued by train, never someone else's folder
            claim_folder(out, "train", legacy=lambda p: (p / "summary.json").is_file())
            check_run_kind(out, in_process=workers == 0)
        ray_log = None
        if workers == 0:
            outcome = train_in_process(cfg, data_dir, out, gpus=gpus_per_worker, cpus=cpus_per_worker)
        else:
            ray_log = route_ray_output(None if verbose else _ray_log_path(out))
            outcome = run_training(cfg, data_dir, out, workers=workers, gpus_per_worker=gpus_per_worker,
                                   cpus_per_worker=cpus_per_worker)
            settle()
    except (ShapeTuneError, storage.StorageError, ValueError) as exc:  # ValueError: a malformed --tracking
        _fail(exc)
    if tracking:
        try:
            run = track_training_run(tracking, Path(outcome.run_dir), cfg.model_dump(mode="json"),
                                     outcome.history.to_dict("records"), outcome.best_metrics)
            backend, _, target = tracking.partition("=")
            console.print(f"logged to {backend} ({target}): run {run}", soft_wrap=True)
        except Exception as exc:  # the run is finished and saved; only its copy in the tracking store is missing
            console.print(f"[yellow]tracking: the run was not logged:[/] {exc}")
    m = outcome.best_metrics
    keys = [k for k in task_spec(cfg.model.name).val_keys if k in m]  # a one-phase cohort has no ED/ES Dice
    t = Table(title=f"best checkpoint by {cfg.checkpoint.metric} ({cfg.checkpoint.mode})")
    for c in ("epoch", *keys):
        t.add_column(c, justify="right")
    t.add_row(str(m.get("epoch", -1) + 1), *(f"{m.get(k, float('nan')):.3f}" for k in keys))
    console.print(t)
    console.print(f"checkpoint: {outcome.best_checkpoint}\nrun folder: {outcome.run_dir} "
                  f"(history.csv, summary.json, learning_curves.png); wall {outcome.wall_s:.0f} s", soft_wrap=True)
    if ray_log:
        console.print(f"Ray's log: {ray_log}", soft_wrap=True)


def _fit_overrides(data: str | Path, overrides: list[str]) -> list[str]:
    """``overrides`` plus ``model.in_channels=P`` for a manifest-table cohort of P phases unless they set it, said
    on the console (``data`` may be a URI: a sweep reads its data from the bucket)."""
    out, added = cohort_overrides(data, overrides)
    if added:
        console.print(f"a manifest-table cohort: added {' '.join(added)} (one input channel per phase)", soft_wrap=True)
    return out


def _ray_log_path(out: str) -> Path:
    """Where ``train`` puts Ray's lines: the run folder, or (a URI run) the temp folder."""
    if storage.is_uri(out):
        return Path(tempfile.gettempdir()) / f"shapetune-{storage.name_of(out)}-{RAY_LOG}"
    return Path(out) / RAY_LOG


SchedulerName = Enum("SchedulerName", {name: name for name in SCHEDULERS}, type=str)  # the registry's names

ExportFormat = Enum("ExportFormat", {name: name for name in EXPORT_FORMATS}, type=str)  # the registry's names
DEFAULT_EXPORT_FORMAT = ExportFormat("shapetune")
SamplerName = Enum("SamplerName", {name: name for name in SAMPLERS}, type=str)  # the registry's names


@app.command("tune", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def tune_cmd(
    ctx: typer.Context,
    space: Annotated[str | None, typer.Option(help="Search space: a shipped name (lvae_hcm, vae_hcm, lvae_hcm_pareto) "
                                                   "or a YAML file.")] = None,
    data: Annotated[str | None, typer.Option(help="Prepared dataset: a folder or a URI "
                                                  "(s3://bucket/data/imperial).")] = None,
    trials: Annotated[int, typer.Option(help="Number of trials.")] = 8,
    concurrency: Annotated[int, typer.Option(help="Trials running at once.")] = 1,
    name: Annotated[str | None, typer.Option(help="Experiment name (a folder under --storage-path).")] = None,
    storage_path: Annotated[str, typer.Option(help="Where experiments live: a folder, or a URI (s3://, gs://, file://) "
                                                   "on a cluster.")] = "experiments",
    resume: Annotated[str | None, typer.Option(help="Continue the interrupted experiment of this name. Resuming loads "
                                                    "Ray Tune's pickled state from the experiment folder, which can "
                                                    "run code: resume only experiments from storage you "
                                                    "trust.")] = None,
    optuna_storage: Annotated[str | None, typer.Option(help="SQLAlchemy URL for the Optuna study (default: SQLite in "
                                                            "the experiment folder).")] = None,
    workers_per_trial: Annotated[int, typer.Option(help="Ray Train workers per trial (1 = in the trial's own "
                                                        "process).")] = 1,
    cpus_per_worker: Annotated[float | None, typer.Option(help="CPUs per worker, the torch threads of in-process "
                                                               "trials (default: the node's CPUs / "
                                                               "concurrency).")] = None,
    gpus_per_worker: Annotated[float, typer.Option(help="GPUs per worker.")] = 0.0,
    scheduler: Annotated[SchedulerName | None, typer.Option(help="Early stopping (default: the space's).")] = None,
    sampler: Annotated[SamplerName | None, typer.Option(help="Optuna sampler (default: the space's).")] = None,
    grace_period: Annotated[int | None, typer.Option(help="ASHA: epochs before a trial may be stopped (default: the "
                                                          "space's).")] = None,
    seed: Annotated[int, typer.Option(help="Sampler seed.")] = 0,
    max_failures: Annotated[int, typer.Option(help="Retries of a failed trial before it is recorded as failed.")] = 1,
    time_budget_s: Annotated[float | None, typer.Option(help="Stop starting trials after this many seconds.")] = None,
    evaluate: Annotated[bool, typer.Option(help="Score each finished trial on the test split as soon as it ends "
                                                "(cached for `shapetune evaluate`).")] = False,
    tracking: Annotated[str | None, typer.Option(help="Track the sweep: mlflow=URI (e.g. mlflow=sqlite:///mlflow.db) "
                                                      "or wandb=PROJECT: a parent run for the sweep, a nested run per "
                                                      "trial.")] = None,
    verbose: Annotated[bool, typer.Option(help="Show Ray's own lines on the console (by default they go to "
                                               "ray.log in the experiment folder).")] = False,
) -> None:
    """Search a space with Ray Tune + Optuna (ASHA early stopping); extra arguments are dotted overrides for every
    trial.

    --resume unpickles Tune's saved state (as Python's pickle documentation warns, only for data you trust):
    resume sweeps from storage that only you and people you trust can write. Reading an experiment (export,
    evaluate, dashboard) never unpickles anything."""
    from shapetune.evaluation.on_complete import on_complete_callbacks
    from shapetune.tuning.sweep import SweepSettings, load_settings, run_sweep

    try:
        if resume:
            settings = load_settings(storage_path, resume)
            run_sweep(settings, resume=True, callbacks=on_complete_callbacks(settings), verbose=verbose)
            return
        if not (space and data and name):
            raise ConfigError("--space, --data and --name are required (or --resume NAME)")
        settings = SweepSettings(
            name=name, space=space, data=storage.normalise(data), trials=trials, concurrency=concurrency,
            storage_path=storage.normalise(storage_path), optuna_storage=optuna_storage,
            workers_per_trial=workers_per_trial,
            cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker,
            scheduler=scheduler.value if scheduler else None, sampler=sampler.value if sampler else None, seed=seed,
            grace_period=grace_period,
            overrides=_fit_overrides(data, list(ctx.args)), max_failures=max_failures, time_budget_s=time_budget_s,
            evaluate=evaluate, tracking=tracking)
        run_sweep(settings, callbacks=on_complete_callbacks(settings), verbose=verbose)
    except (ShapeTuneError, ValueError, storage.StorageError) as exc:  # ValueError: the settings' own checks
        _fail(exc)


def _experiment(experiment: str, storage_path: str) -> str:
    """An experiment given by its folder or URI, or by its name under ``--storage-path``."""
    if storage.is_uri(experiment) or Path(experiment).is_dir():
        return experiment
    return storage.join(storage_path, experiment)


@app.command("export")
def export_cmd(
    experiment: Annotated[str, typer.Argument(help="Experiment name (under --storage-path) or its folder.")],
    out: Annotated[str, typer.Option(help="Export folder or storage URI: new or empty (a previous export is replaced "
                                          "only with --force).")],
    storage_path: Annotated[str, typer.Option(help="Where experiments live (a folder or a URI such as "
                                                   "s3://bucket/experiments).")] = "experiments",
    objective: Annotated[str | None, typer.Option(help="Pick the best trial by this metric (default: the sweep's "
                                                       "objective).")] = None,
    pareto_index: Annotated[int | None, typer.Option(help="Multi-objective sweeps: export this point of the Pareto "
                                                          "front.")] = None,
    trial: Annotated[str | None, typer.Option(help="Export this trial (its best checkpoint) instead of the best "
                                                   "one.")] = None,
    min_val_acc: Annotated[float, typer.Option(help="Choose the best checkpoint among those with at least this "
                                                    "validation accuracy (0 for none); none reaching it: the best "
                                                    "overall, said.")] = 0.95,
    force: Annotated[bool, typer.Option(help="Replace a previous ShapeTune export at --out (nothing else is ever "
                                             "replaced).")] = False,
    format: Annotated[ExportFormat, typer.Option(help="shapetune (what `shapetune predict` reads) or monai-bundle "
                                                      "(MONAI's bundle layout: configs/, models/model.pt, docs/).")]
    = DEFAULT_EXPORT_FORMAT,
) -> None:
    """Export a sweep's best trial (or a Pareto point, or a named trial): safetensors weights, config, template,
    metrics, model card, checksums; or the same model as a MONAI bundle."""

    try:
        path = export_model(_experiment(experiment, storage_path), out, objective, pareto_index, trial, force=force,
                            min_val_acc=min_val_acc or None, fmt=format.value)
        if format.value == "monai-bundle":
            meta = json.loads(storage.read_text(storage.join(path, "configs/metadata.json")))
            console.print(f"[green]wrote MONAI bundle[/] {path}: {meta['changelog'][meta['version']]}")
            return
        m = json.loads(storage.read_text(storage.join(path, "metrics.json")))
    except (ShapeTuneError, storage.StorageError) as exc:
        _fail(exc)
    console.print(f"[green]exported[/] trial {m['trial_id']} ({m['selection']}, epoch {m['epoch'] + 1}) to {path}")
    console.print("validation: " + ", ".join(f"{k} {v:.3f}" for k, v in m["validation"].items()))


@app.command("predict")
def predict_cmd(
    export_dir: Annotated[str, typer.Argument(help="A folder (or URI) written by `shapetune export`.")],
    input: Annotated[str, typer.Argument(help="ACDC patient folder (or a folder of them), a prepared dataset, or an "
                                              "ED NIfTI with --es; or a URI of one.")],
    out: Annotated[Path, typer.Option(help="Output folder, new or empty: predictions.csv/.parquet and "
                                           "SUBJECT/recon_{ED,ES}.nii.gz.")],
    es: Annotated[Path | None, typer.Option(help="ES label map when INPUT is an ED NIfTI file.")] = None,
    split: Annotated[str | None, typer.Option(help="Prepared datasets: only this split (train, val, test).")] = None,
    force: Annotated[bool, typer.Option(help="Replace a previous `shapetune predict` output at --out.")] = False,
) -> None:
    """Run an exported model without Ray: HCM probability, latent coordinates per level, reconstructions in the
    subject's space."""
    from shapetune.serving.predict import predict

    try:
        df = predict(export_dir, input, out, es, split, force=force)
    except (ShapeTuneError, storage.StorageError) as exc:
        _fail(exc)
    prob = "p_hcm" if "p_hcm" in df else "p_positive"  # a table cohort's model: the probability of its label 1
    dices = [c for c in df.columns if c.startswith("dice_")]
    t = Table(title=f"{len(df)} subject(s)")
    for c in ("subject", "p(HCM)" if prob == "p_hcm" else "p(label 1)", "predicted", "label",
              *(f"Dice {c[5:].upper()}" for c in dices)):
        t.add_column(c)
    for _, r in df.head(20).iterrows():
        lab = str(int(r.label)) if r.label == r.label and r.label is not None else "-"
        if prob == "p_hcm" and lab != "-":
            lab = {"0": "healthy", "1": "HCM"}[lab]
        t.add_row(r.subject, f"{r[prob]:.3f}", r.predicted, lab, *(f"{r[c]:.3f}" for c in dices))
    console.print(t)
    if df.label.notna().any():
        known = df[df.label.notna()]
        console.print(f"accuracy {((known[prob] > 0.5) == known.label.astype(bool)).mean():.3f} on "
                      f"{len(known)} labelled; mean " + ", ".join(f"Dice {c[5:].upper()} {df[c].mean():.3f}"
                                                                  for c in dices))
    console.print(f"written to {out}")


@app.command("evaluate")
def evaluate_cmd(
    experiment: Annotated[str, typer.Argument(help="Experiment name (under --storage-path) or its folder.")],
    storage_path: Annotated[str, typer.Option(help="Where experiments live (a folder or a URI).")] = "experiments",
    splits: Annotated[str, typer.Option(help="Comma-separated: imperial_test, acdc_test, acdc_hard (added when "
                                             "--acdc-hard is given).")] = "imperial_test,acdc_test",
    trials: Annotated[str, typer.Option(help="best, all, or trial ids separated by commas ('' for none).")] = "best",
    acdc: Annotated[str | None, typer.Option(help="ACDC-layout folder or URI (prepared on the fly, cached) or a "
                                                  "prepared ACDC dataset.")] = None,
    acdc_hard: Annotated[str | None, typer.Option(help="A second, harder ACDC-layout set (split acdc_hard), e.g. "
                                                       "`data synth --cohort acdc --seed 1 --slice-mm 10 "
                                                       "--max-tilt-deg 15 --borderline-fraction 0.5`.")] = None,
    extra: Annotated[list[str] | None, typer.Option(help="More checkpoints to compare, NAME=RUN_OR_CHECKPOINT_DIR "
                                                         "(repeatable).")] = None,
    baselines: Annotated[str, typer.Option(help="Comma-separated baselines: clinical, pca ('' for "
                                                "none).")] = "clinical,pca",
    force: Annotated[bool, typer.Option(help="Re-evaluate what is already cached.")] = False,
    ray: Annotated[bool, typer.Option(help="Score checkpoints as parallel Ray tasks.")] = True,
    nsd_tolerance_mm: Annotated[float, typer.Option(min=0.0, help="Tolerance of the normalized surface Dice "
                                                                  "(mm).")] = 2.0,
    verbose: Annotated[bool, typer.Option(help="Show Ray's own lines on the console (by default they go to "
                                               "ray.log in the experiment's evaluation folder).")] = False,
) -> None:
    """Evaluate trials and baselines: DC/NSD/HD/HD95/ASSD/RVD at ED and ES, diagnosis with CIs, latents, a
    report."""
    from shapetune.evaluation.service import evaluate

    try:
        res = evaluate(_experiment(experiment, storage_path), tuple(s.strip() for s in splits.split(",") if s.strip()),
                       trials, acdc, extra or [], tuple(b.strip() for b in baselines.split(",") if b.strip()), force,
                       use_ray=ray, acdc_hard=acdc_hard, nsd_tolerance_mm=nsd_tolerance_mm, verbose=verbose)
    except (ShapeTuneError, StorageError) as exc:
        _fail(exc)
    if hasattr(res, "table"):  # a fetal-skull sweep: the study table by view subset
        _print_study(res.table)
        console.print(f"table: {res.out / 'table.md'}, figures: {res.out / 'figures'}")
        return
    _print_eval(res)


def _print_eval(res) -> None:
    """The evaluation summary in five columns, to read in an 80-column terminal (every metric is in report.md)."""
    s = res.summary
    phases = [p for p in dict.fromkeys(s.phase) if isinstance(p, str) and p] or ["ED", "ES"]
    names = "/".join(phases)
    t = Table(title="evaluation: means over subjects, HD in mm, accuracy (95 % CI)", box=box.SIMPLE_HEAD,
              padding=(0, 1), pad_edge=False)
    for c, just in (("model", "left"), ("split", "left"), (f"Dice {names}", "right"), (f"HD {names}", "right"),
                    ("accuracy", "right")):
        t.add_column(c, justify=just, overflow="fold")
    for (model, split), g in s.groupby(["model", "split"], sort=False):
        def val(metric, phase="", fmt=".3f", g=g):
            r = g[(g.metric == metric) & (g.phase == phase)]
            return "-" if r.empty or r["mean"].isna().all() else format(r["mean"].iloc[0], fmt)
        acc = g[g.metric == "accuracy"].iloc[0]
        t.add_row(model, split, "/".join(val("dice", p) for p in phases),
                  "/".join(val("hd", p, ".1f") for p in phases), f"{acc['mean']:.3f} ({acc.lo:.2f}-{acc.hi:.2f})")
    console.print(t)
    console.print(f"evaluated {res.evaluated} candidate x split pair(s), {res.cached} from cache; "
                  f"report (RVD, HD95, paired tests): {res.out_dir / 'report.md'}")


@app.command("study", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def study_cmd(
    ctx: typer.Context,
    data: Annotated[str, typer.Option(help="Prepared fetal-skull dataset (shapetune data prepare --format fetal), or "
                                           "its URI.")],
    out: Annotated[Path, typer.Option(help="Study folder: runs/, scores/, table.md, per_case.parquet, figures/.")],
    model: Annotated[list[str], typer.Option(help="A shipped config (cvae, hcvae, tlnet, cgan) or NAME=CONFIG.yaml; "
                                                  "repeatable.")] = ["cvae", "hcvae", "tlnet", "cgan"],  # noqa: B006
    folds: Annotated[str | None, typer.Option(help="Comma-separated folds (default: all).")] = None,
    samples: Annotated[int, typer.Option(help="Prior samples per case for the uncertainty maps.")] = 8,
    force: Annotated[bool, typer.Option(help="Re-score every run (training is never repeated).")] = False,
    workers: Annotated[int, typer.Option(help="Ray Train workers per run (DDP); 0 trains each run in this process "
                                              "without Ray.", min=0)] = 1,
    cpus_per_worker: Annotated[float | None, typer.Option(help="CPUs per worker, its torch threads (default: the "
                                                               "node's CPUs / workers).")] = None,
    verbose: Annotated[bool, typer.Option(help="Show Ray's own lines on the console (by default they go to "
                                               "ray.log in the study folder).")] = False,
) -> None:
    """Fetal-skull study: train each model on each fold (Ray Train, or --workers 0 in this process), then DC/HD/RVD
    by view subset (3, 2, 1 views) as mean ± sd over folds, with uncertainty maps. Extra arguments are dotted
    overrides for every model."""
    try:
        configs = {}
        for item in model:
            name, _, path = item.partition("=")
            configs[name] = load_config(_config_path(path or name), list(ctx.args))
        fold_list = [int(f) for f in folds.split(",")] if folds else None
        res = run_study(configs, storage.local_copy(data), out, fold_list, samples=samples, force=force,
                        workers=workers, cpus_per_worker=cpus_per_worker, verbose=verbose)
    except (ShapeTuneError, storage.StorageError, ValueError) as exc:
        _fail(exc)
    _print_study(res.table)
    for r in res.effects.query("`from` == '3v' and to == '1v'").itertuples():
        console.print(f"Dice lost 3 views -> 1 view, {r.what}: {r.mean:+.3f} [{r.ci_lo:+.3f}, {r.ci_hi:+.3f}] "
                      f"(paired over {r.n} subjects, Wilcoxon p={r.p_value:.2g})")
    console.print(f"trained {len(res.trained)} run(s), scored {len(res.scored)}; table: {res.out / 'table.md'}, "
                  f"figures: {res.out / 'figures'}")


def _print_study(table) -> None:
    t = Table(title="fetal skull reconstruction: mean ± sd over folds")
    for c in ("model", "views", "DC", "HD mm", "RVD", "uncertainty"):
        t.add_column(c)
    for _, r in table.iterrows():
        t.add_row(r.model, SUBSET_LABELS[r.views], mean_sd(r, "dice", ".3f"), mean_sd(r, "hd", ".2f"),
                  mean_sd(r, "rvd", ".3f"), mean_sd(r, "uncertainty", ".4f"))
    console.print(t)


@app.command("serve")
def serve_cmd(
    export_dir: Annotated[Path, typer.Argument(help="A folder written by `shapetune export`.")],
    host: Annotated[str, typer.Option(help="Address to bind; the default keeps it on this machine (Serve has no "
                                           "authentication: use SSH port forwarding).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port.")] = 8000,
    replicas: Annotated[int, typer.Option(min=1, help="Model replicas (Ray actors).")] = 1,
    cpus_per_replica: Annotated[float, typer.Option(help="CPUs (and torch threads) per replica.")] = 1.0,
    gpus_per_replica: Annotated[float, typer.Option(help="GPUs per replica (0: CPU).")] = 0.0,
    data: Annotated[Path | None, typer.Option(help="A prepared dataset: POST /predict with index=K predicts its "
                                                   "K-th subject.")] = None,
    max_upload_mb: Annotated[float, typer.Option(help="The largest upload a request may carry.")] = 20.0,
) -> None:
    """Serve an exported model over HTTP on Ray Serve: POST /predict (ed and es NIfTI label maps, or index=K with
    --data), GET /healthz."""
    from shapetune.serving.http import run_service

    console.print(f"ShapeTune prediction service on http://{host}:{port} (POST /predict, GET /healthz; Ctrl-C to "
                  "stop)")
    try:
        run_service(export_dir, host, port, replicas, cpus_per_replica, gpus_per_replica, data, max_upload_mb)
    except ShapeTuneError as exc:
        _fail(exc)


@app.command("dashboard")
def dashboard_cmd(
    experiments: Annotated[list[str], typer.Argument(help="Experiment folders, or folders holding several (a "
                                                          "--storage-path).")],
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 8501,
    host: Annotated[str, typer.Option(help="Address to bind; the default keeps it on this machine (use SSH port "
                                           "forwarding).")] = "127.0.0.1",
    optuna: Annotated[bool, typer.Option("--optuna", help="Serve optuna-dashboard on the sweep's study instead (a "
                                                          "snapshot of its SQLite file; default port 8080).")] = False,
) -> None:
    """Open the results dashboard (Streamlit): runs, comparisons, latent clusters, shapes, export; or, with
    --optuna, optuna-dashboard on one sweep's study."""
    from shapetune.dashboard.launch import environment, serve

    if optuna:
        if len(experiments) != 1:
            _fail(DashboardError("--optuna serves one sweep: give one experiment folder"))
        port = 8080 if port == 8501 else port
        console.print(f"optuna-dashboard on http://{host}:{port}/dashboard/ (a snapshot of the study; Ctrl-C to "
                      "stop)")
        try:
            serve_optuna(Path(experiments[0]), host, port)
        except DashboardError as exc:
            _fail(exc)
        return
    try:
        env = environment(experiments)  # fail here, in the terminal, on a path that is not an experiment
    except DashboardError as exc:
        _fail(exc)
    console.print(f"ShapeTune dashboard on http://{host}:{port} (Ctrl-C to stop)")
    raise typer.Exit(serve(env, host, port))


if __name__ == "__main__":
    app()
