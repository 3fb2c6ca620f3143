"""Export a sweep's chosen trial into a self-contained, checksummed model directory, and verify one.

An export holds ``model.safetensors`` (weights only), ``config.yaml`` (the full training config),
``template.json`` (grid, orientation, labels, preprocessing), ``metrics.json`` (the checkpoint's validation
metrics, trial and parameters), ``MODEL_CARD.md`` and ``checksums.sha256``. It is written to a temporary
sibling folder and renamed into place, so a reader never sees half an export.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from shapetune import __version__, storage
from shapetune.catalog import task_spec
from shapetune.config import TrainConfig
from shapetune.data.dataset import PreparedDataset
from shapetune.data.nifti import sha256_file
from shapetune.data.template import ORIENTATION, TemplateGrid
from shapetune.errors import OutputError, ShapeTuneError
from shapetune.experiment.checkpoints import best_checkpoint, checkpoint_dirs, load_state, read_metrics
from shapetune.experiment.settings import data_dir, frozen_space, load_settings, local_experiment, trial_run_dir
from shapetune.experiment.table import TUNE_TRIAL_ATTR, load_summary, open_study_readonly
from shapetune.io import check_output, files_in, staged_folder

EXPORT_FORMAT = 1
WEIGHTS, CONFIG, TEMPLATE, METRICS, CARD, CHECKSUMS = ("model.safetensors", "config.yaml", "template.json",
                                                       "metrics.json", "MODEL_CARD.md", "checksums.sha256")


# Export formats -> the file that marks a finished export of that format.
EXPORT_FORMATS = {"shapetune": "checksums.sha256", "monai-bundle": "configs/metadata.json"}


class ExportError(ShapeTuneError):
    """A missing, corrupted or inconsistent export (or nothing exportable in an experiment)."""


@dataclass
class Choice:
    trial_id: str
    checkpoint: Path
    reason: str


# The recommended model is chosen with the diagnosis in view: best validation Dice among the checkpoints that
# classify at least this well. Measured: on an external ACDC-layout set the best-Dice model of a demo-scale sweep
# classified 80 % of 40 patients, the 40-epoch shipped LVAE 100 % (issue 17).
ACC_FLOOR = ("val_acc", 0.95)


def choose(exp_dir: Path, objective: str | None = None, pareto_index: int | None = None,
           trial_id: str | None = None, min_val_acc: float | None = ACC_FLOOR[1]) -> Choice:
    """The trial and checkpoint to export: best by ``objective`` (default: the sweep's first) among checkpoints
    with validation accuracy >= ``min_val_acc`` where the task reports one (none reaching it: the best overall,
    said in the reason); a Pareto point; or the best checkpoint of one named trial."""
    settings = load_settings(exp_dir.parent, exp_dir.name)
    space = frozen_space(settings)
    if trial_id is not None:
        obj = space.objectives[0]
        ck = best_checkpoint(trial_run_dir(exp_dir, trial_id, settings.workers_per_trial), obj.metric, obj.mode)
        if ck is None:
            raise ExportError(f"{exp_dir}: trial {trial_id!r} has no checkpoint (unknown trial, or it failed "
                              "before its first validation)")
        return Choice(trial_id, ck, f"trial {trial_id} chosen by hand (its best {obj.metric})")
    table = load_summary(exp_dir)
    if pareto_index is not None:
        study = open_study_readonly(settings, exp_dir)
        if study is None:
            raise ExportError(f"{exp_dir}: no Optuna study {settings.name!r} to take a Pareto point from")
        if len(space.objectives) < 2:
            raise ExportError(f"{exp_dir}: --pareto-index needs a multi-objective sweep; this one has one objective")
        front = sorted(study.best_trials, key=lambda t: t.values[0], reverse=space.objectives[0].mode == "max")
        if not 0 <= pareto_index < len(front):
            raise ExportError(f"{exp_dir}: the Pareto front has {len(front)} trials; --pareto-index must be "
                              f"0..{len(front) - 1}")
        t = front[pareto_index]
        tid = t.user_attrs[TUNE_TRIAL_ATTR]
        # Optuna holds each trial's last reported values, so the Pareto point is the trial's latest checkpoint.
        run = trial_run_dir(exp_dir, tid, settings.workers_per_trial)
        latest = max(checkpoint_dirs(run), key=lambda ck: read_metrics(ck)["epoch"], default=None)
        if latest is None:
            raise ExportError(f"{run}: no checkpoint for Pareto trial {tid}")
        values = ", ".join(f"{o.metric}={v:.4f}" for o, v in zip(space.objectives, t.values, strict=True))
        return Choice(tid, latest, f"Pareto point {pareto_index} of {len(front)} ({values})")
    obj = next((o for o in space.objectives if o.metric == objective), None) if objective else space.objectives[0]
    metric, mode = (obj.metric, obj.mode) if obj else (objective, "min" if objective.endswith("loss") else "max")
    col = f"best_{metric}" if f"best_{metric}" in table else metric
    if col not in table:
        raise ExportError(f"{exp_dir}: no trial reported {metric!r}")
    reports_acc = ACC_FLOOR[0] in table and table[ACC_FLOOR[0]].notna().any()  # the cardiac task, not the fetal
    floor = (ACC_FLOOR[0], min_val_acc) if min_val_acc is not None and reports_acc else None
    sign = 1.0 if mode == "max" else -1.0
    scored = [(tid, ck, m) for tid in table.dropna(subset=[col]).trial_id
              for ck in checkpoint_dirs(trial_run_dir(exp_dir, tid, settings.workers_per_trial))
              for m in [read_metrics(ck)] if m.get(metric) is not None]  # each checkpoint's metrics read once
    above = [r for r in scored if floor and r[2].get(floor[0], float("-inf")) >= floor[1]]
    pick = max(above or scored, key=lambda r: (sign * r[2][metric], -r[2]["epoch"]), default=None)
    if pick is not None:
        why = f"best {metric} ({mode}) over {len(table)} trials"
        if floor:
            why += (f" among checkpoints with {floor[0]} >= {floor[1]:g}" if above else
                    f"; no checkpoint reached {floor[0]} >= {floor[1]:g}: chosen without the floor")
        return Choice(pick[0], pick[1], why)
    raise ExportError(f"{exp_dir}: no trial has a checkpoint to export")


def export_model(exp_dir: str | Path, out: str | Path, objective: str | None = None,
                 pareto_index: int | None = None, trial_id: str | None = None, force: bool = False,
                 min_val_acc: float | None = ACC_FLOOR[1], fmt: str = "shapetune") -> Path | str:
    """Export the chosen trial of an experiment to ``out``, published in one rename.

    Args:
        exp_dir: the experiment folder or its URI (mirrored locally; nothing in it is unpickled or changed).
        out: a new or empty folder, or a previous export (replaced only with ``force``); or a URI.
        objective: the metric the best checkpoint maximises (see :func:`choose`).
        pareto_index: for a multi-objective sweep, which Pareto-optimal trial (see :func:`choose`).
        trial_id: export this trial instead of choosing one.
        min_val_acc: the validation-accuracy floor a checkpoint must reach to be chosen.
        force: replace a previous ShapeTune export at ``out``.
        fmt: a format of :data:`EXPORT_FORMATS`: ``shapetune`` (what ``shapetune predict`` reads) or
            ``monai-bundle`` (the same model, verified, in MONAI's bundle layout; ``serving.bundle``).

    Returns:
        ``out``.

    Raises:
        ExportError: nothing exportable, or a fetal-skull model (evaluated with ``shapetune study``).
        OutputError: ``out`` holds something that is not a previous export, or a previous one without ``force``.
    """
    from safetensors.torch import save_file

    if fmt not in EXPORT_FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose from {', '.join(EXPORT_FORMATS)}")
    if storage.is_uri(out):  # build on this machine, then upload the finished folder
        sentinel = storage.join(out, EXPORT_FORMATS[fmt])
        if storage.exists(out) and not (force and storage.exists(sentinel)):
            what = f"a previous {fmt} export; --force replaces it" if storage.exists(sentinel) \
                else "something that is not a ShapeTune export; choose a new location"
            raise OutputError(out, f"already holds {what}")
        with tempfile.TemporaryDirectory() as staging:
            local = export_model(exp_dir, Path(staging) / storage.name_of(out), objective, pareto_index, trial_id,
                                 min_val_acc=min_val_acc, fmt=fmt)
            storage.upload(local, out)
        return out
    if fmt == "monai-bundle":  # the ShapeTune export first, verified, then rewritten as a bundle
        from shapetune.serving.bundle import write_bundle

        check_output(Path(out).absolute(), "monai-bundle", force)  # before any work
        with tempfile.TemporaryDirectory() as staging:
            plain = Path(export_model(exp_dir, Path(staging) / "export", objective, pareto_index, trial_id,
                                      min_val_acc=min_val_acc))
            model, cfg, template, metrics = verify_export(plain)
            if template.get("cohort") == "table":  # the bundle's metadata describes the cardiac models' inputs
                raise ExportError(f"{exp_dir}: a manifest-table cohort's model exports as --format shapetune only "
                                  "(the MONAI bundle's metadata describes the cardiac models' ED/ES inputs)")
            return write_bundle(model, cfg, template, metrics, (plain / CARD).read_text(), Path(out), force)
    exp_dir, out = local_experiment(exp_dir), Path(out).absolute()
    if not exp_dir.exists():
        raise ExportError(f"{exp_dir}: no such experiment")
    check_output(out, "export", force, legacy=_legacy_export)  # before any work
    choice = choose(exp_dir, objective, pareto_index, trial_id, min_val_acc)
    state = load_state(choice.checkpoint)
    cfg = TrainConfig.model_validate(state["config"])
    task = task_spec(cfg.model.name)
    if not task.exportable:
        raise ExportError(f"{exp_dir}: export and predict serve the cardiac models; a {cfg.model.name!r} {task.name} "
                          f"model is evaluated with `shapetune evaluate` / `shapetune study` from its checkpoint "
                          f"({choice.checkpoint})")
    settings = load_settings(exp_dir.parent, exp_dir.name)
    ds = PreparedDataset(data_dir(settings))
    with staged_folder(out, "export", force, legacy=_legacy_export) as tmp:
        save_file({k: v.contiguous() for k, v in state["model"].items()}, str(tmp / WEIGHTS),
                  metadata={"format": "shapetune", "model": cfg.model.name})
        (tmp / CONFIG).write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        template = template_of(ds)
        (tmp / TEMPLATE).write_text(json.dumps(template, indent=2))
        metrics = {"trial_id": choice.trial_id, "selection": choice.reason, "epoch": int(state["epoch"]),
                   "validation": {k: float(v) for k, v in state["metrics"].items() if k.startswith("val_")},
                   "experiment": str(exp_dir), "checkpoint": str(choice.checkpoint), "data": settings.data,
                   "shapetune_version": __version__, "format": EXPORT_FORMAT}
        (tmp / METRICS).write_text(json.dumps(metrics, indent=2))
        card = model_card if ds.is_cardiac else table_model_card
        (tmp / CARD).write_text(card(cfg, metrics, ds.grid, len(ds.split("train")), len(ds.split("val")), template))
        files = sorted(p.name for p in tmp.iterdir())
        (tmp / CHECKSUMS).write_text("".join(f"{sha256_file(tmp / f)}  {f}\n" for f in files))
    return out


def template_of(ds: PreparedDataset) -> dict:
    """What ``template.json`` records: the grid and how an input reaches it (the LV frame, or a table cohort's
    alignment, structure label and phases), so ``predict`` prepares raw inputs the way the training data was."""
    if ds.is_cardiac:
        return {"grid": ds.grid.to_dict(), "orientation": ORIENTATION,
                "labels": {"background": 0, "myocardium": 1, "cavity": 2},
                "channels": ["ED myocardium", "ES myocardium"],
                "preprocessing": {"in_plane": ds.meta.get("settings", {}).get("in_plane", "rv"),
                                  "method": "LV frame from the ED cavity (long axis, apex by skew, septum from "
                                            "the RV), shape-based resampling of signed distances"},
                "source_dataset": ds.meta.get("cohort")}
    orientation = ds.meta.get("orientation", {})
    return {"grid": ds.grid.to_dict(), "cohort": "table", "phases": list(ds.phases),
            "channels": [f"{p} structure" for p in ds.phases],
            "structure_label": int(ds.meta.get("structure_label", 1)),
            "alignment": {"mode": orientation.get("alignment", "principal"),
                          "cohort_centre_mm": orientation.get("cohort_centre_mm"),
                          "method": "shapetune.data.align: the first phase's centroid and principal axes "
                                    "(or as the mode says), linear resampling of the binary mask"},
            "class_names": {str(k): v for k, v in ds.class_names.items()}, "source_dataset": "table"}


def _legacy_export(folder: Path) -> bool:
    """An export written before output markers: its files are exactly those its checksums list."""
    try:
        listed = set(read_checksums(folder))
    except (ExportError, OSError):
        return False
    return files_in(folder) == listed | {CHECKSUMS}


def table_model_card(cfg, metrics: dict, grid: TemplateGrid, n_train: int, n_val: int, template: dict) -> str:
    """The card of a model trained on a manifest-table cohort (a user's own anatomy)."""
    v = metrics["validation"]
    lat = " -> ".join(map(str, cfg.model.latent_dims))
    names = template["class_names"]
    phases = ", ".join(template["phases"])
    return f"""# ShapeTune model card

## Model
- Architecture: `{cfg.model.name}`, latent sizes (bottom -> top) {lat}, width {cfg.model.width},
  bottleneck {cfg.model.bottleneck}^3, {cfg.model.norm} normalisation.
- Input: binary masks of the structure labelled {template['structure_label']} in the source label maps, one per
  phase ({phases}), on a {grid.shape[0]}x{grid.shape[1]}x{grid.shape[2]} template grid of {grid.spacing} mm,
  aligned by `{template['alignment']['mode']}` (see `template.json` and `shapetune.data.align`).
- Outputs: per-voxel reconstruction logits per phase, latent posterior means per level, and the probability
  of class `{names['1']}` (label 1, against `{names['0']}`) from the classifier on the top latent.
- Training: KL weight lambda={cfg.loss.lambda_kl:.3g}, classifier weight gamma={cfg.loss.gamma_cls:.3g},
  lr={cfg.optim.lr:.3g}, batch size {cfg.optim.batch_size}, {cfg.optim.epochs} epochs (checkpoint of epoch
  {metrics['epoch'] + 1}), seed {cfg.seed}. Selected as: {metrics['selection']} (trial {metrics['trial_id']}).

## Data
{n_train} training and {n_val} validation subjects from `{metrics['data']}` (a manifest-table cohort).

## Validation metrics
| Dice (mean over phases) | accuracy | AUC |
|---|---|---|
| {v.get('val_dice', float('nan')):.3f} | {v.get('val_acc', float('nan')):.3f} | {v.get('val_auc', float('nan')):.3f} |

## Intended use
Research on shape modelling of this structure: reconstruction, latent-space analysis, the {names['0']} vs
{names['1']} separation. Not a medical device; not for diagnosis.

## Limits
- Inputs must be label maps holding label {template['structure_label']}, segmented as the training data was.
- Only the two classes seen in training; evaluate on a new site before use.
"""


def model_card(cfg, metrics: dict, grid: TemplateGrid, n_train: int, n_val: int, template: dict | None = None) -> str:
    v = metrics["validation"]
    lat = " -> ".join(map(str, cfg.model.latent_dims))
    return f"""# ShapeTune model card

## Model
- Architecture: `{cfg.model.name}`, latent sizes (bottom -> top) {lat}, width {cfg.model.width},
  bottleneck {cfg.model.bottleneck}^3, {cfg.model.norm} normalisation.
- Input: binary LV myocardium masks at end-diastole and end-systole on a {grid.shape[0]}x{grid.shape[1]}x{grid.shape[2]}
  template grid of {grid.spacing} mm, aligned by ShapeTune's preprocessing (see `template.json`).
- Outputs: per-voxel reconstruction logits (ED, ES), latent posterior means per level, and the HCM
  probability from the classifier on the top latent.
- Training: KL weight lambda={cfg.loss.lambda_kl:.3g}, classifier weight gamma={cfg.loss.gamma_cls:.3g},
  lr={cfg.optim.lr:.3g}, batch size {cfg.optim.batch_size}, {cfg.optim.epochs} epochs (checkpoint of epoch
  {metrics['epoch'] + 1}), seed {cfg.seed}. Selected as: {metrics['selection']} (trial {metrics['trial_id']}).

## Data
{n_train} training and {n_val} validation subjects from `{metrics['data']}`. ShapeTune ships a synthetic
cohort generator; unless you trained on real segmentations, this model has seen synthetic shapes only.

## Validation metrics
| Dice ED | Dice ES | accuracy | AUC |
|---|---|---|---|
| {v.get('val_dice_ed', float('nan')):.3f} | {v.get('val_dice_es', float('nan')):.3f} | \
{v.get('val_acc', float('nan')):.3f} | {v.get('val_auc', float('nan')):.3f} |

## Intended use
Research on shape modelling of the left ventricle: reconstruction, latent-space analysis, and the
healthy-vs-HCM separation studied in the reference paper. Not a medical device; not for diagnosis.

## Limits
- Inputs must be LV segmentations (myocardium, cavity and RV labels to fix the septum direction), not images.
- Only the two classes seen in training (healthy vs HCM); other cardiomyopathies are out of scope.
- Accuracy on a new site depends on its segmentation protocol and slice thickness; evaluate before use.
"""


def verify_export(path: str | Path):
    """Check checksums and config/weights agreement; return ``(model, cfg, template, metrics)``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from shapetune.models.registry import build_model
    from shapetune.training.engine import to_channels_last
    path = Path(path)
    listed = read_checksums(path)
    for name in (WEIGHTS, CONFIG, TEMPLATE, METRICS):
        if name not in listed:
            raise ExportError(f"{path / name}: not listed in {CHECKSUMS}")
    for name, digest in listed.items():
        f = path / name
        if f.is_symlink() or (f.exists() and not f.is_file()):
            raise ExportError(f"{f}: not a regular file (a link, folder or device); an export holds plain files")
        if not f.exists():
            raise ExportError(f"{f}: missing from the export")
        if sha256_file(f) != digest:
            raise ExportError(f"{f}: checksum mismatch (the file was modified or corrupted)")
    try:
        cfg = TrainConfig.model_validate(yaml.safe_load((path / CONFIG).read_text()))
    except Exception as exc:
        raise ExportError(f"{path / CONFIG}: invalid model config ({exc})") from exc
    template, metrics = _json(path / TEMPLATE), _json(path / METRICS)
    grid = template.get("grid") if isinstance(template.get("grid"), dict) else {}
    shape, spacing = grid.get("shape"), grid.get("spacing")
    if shape != [cfg.model.grid] * 3 or not isinstance(spacing, (int, float)) or not spacing > 0:
        raise ExportError(f"{path / TEMPLATE}: grid {shape} at {spacing} mm does not fit the model, which "
                          f"takes {[cfg.model.grid] * 3} voxels with a positive spacing ({CONFIG})")
    try:
        weights = load_file(str(path / WEIGHTS))
    except (SafetensorError, OSError) as exc:
        raise ExportError(f"{path / WEIGHTS}: unreadable weights ({exc})") from exc
    model = build_model(cfg.model)
    expected = model.state_dict()
    missing, extra = set(expected) - set(weights), set(weights) - set(expected)
    bad = [k for k in set(expected) & set(weights) if expected[k].shape != weights[k].shape]
    if missing or extra or bad:
        raise ExportError(f"{path / WEIGHTS}: weights do not match {CONFIG} ({len(missing)} missing, {len(extra)} "
                          f"unexpected, {len(bad)} with other shapes{', e.g. ' + bad[0] if bad else ''})")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in weights.items()})
    if cfg.channels_last:  # the layout it trained in: same kernels, so the same outputs to the last bit
        to_channels_last(model)
    return model.eval(), cfg, template, metrics


# A checksum line: 64 hex digits, two spaces, a plain file name (no folders, no leading dot).
_CHECKSUM_LINE = re.compile(r"^([0-9a-f]{64})  ([A-Za-z0-9_][A-Za-z0-9_.-]*)$")


def read_checksums(path: Path) -> dict[str, str]:
    """``checksums.sha256`` of an export as {name: digest}, accepting only plain names of files inside it.

    Raises:
        ExportError: the file is missing, or a line is malformed or names anything but a plain file name
            (``../x``, ``/dev/zero``, ``sub/x``, a hidden file): such a list could make verification read
            files outside the export or hang on a device.
    """
    sums = path / CHECKSUMS
    if not sums.is_file():
        raise ExportError(f"{sums}: missing; not a ShapeTune export")
    listed: dict[str, str] = {}
    for i, line in enumerate(sums.read_text(errors="replace").splitlines(), 1):
        m = _CHECKSUM_LINE.match(line)
        if not m or m.group(2) in (".", ".."):
            raise ExportError(f"{sums}: line {i}: expected '<sha256>  <file name in the export>', got {line[:80]!r}")
        if m.group(2) in listed:
            raise ExportError(f"{sums}: line {i}: {m.group(2)} is listed twice")
        listed[m.group(2)] = m.group(1)
    return listed


def _json(f: Path) -> dict:
    try:
        obj = json.loads(f.read_text())
    except (OSError, ValueError) as exc:
        raise ExportError(f"{f}: not valid JSON ({exc})") from exc
    if not isinstance(obj, dict):
        raise ExportError(f"{f}: expected a JSON object")
    return obj
