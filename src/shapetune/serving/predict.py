"""Run an exported model without Ray: preprocessing, HCM probability, latents per level, reconstructions.

Inputs: an ACDC patient folder (``patientNNN/Info.cfg``) or a folder of them, a pair of ED/ES NIfTI label
maps, or a prepared dataset. A model trained on a manifest-table cohort takes a manifest table (CSV/Parquet), a
prepared dataset or its own phases' NIfTI label maps (the first, then ``es`` for a second phase), aligned as
``template.json`` records.
Raw inputs get their reconstructions resampled back onto their own image grid (NIfTI, the source's structure
label); every input gets a row in ``predictions.csv``/``.parquet``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from rich.progress import track

from shapetune import storage
from shapetune.data.align import frame, resample
from shapetune.data.dataset import PreparedDataset
from shapetune.data.errors import DataError
from shapetune.data.nifti import load_label_map, save_nifti
from shapetune.data.preprocess import align_subject, template_to_subject
from shapetune.data.sources import ACDC_GROUPS, RawSubject, read_acdc
from shapetune.data.table_source import scan_table
from shapetune.data.template import MYOCARDIUM, TemplateGrid
from shapetune.io import check_output, staged_folder
from shapetune.serving.export import verify_export
from shapetune.training.engine import dice_per_channel


@dataclass
class Subject:
    subject: str
    masks: np.ndarray  # [P, D, H, W] binary: the myocardium at ED and ES, or a table cohort's structure per phase
    label: int | None = None
    aligned: object | None = None  # preprocess.Aligned (cardiac) or TableFrame (table cohort) for raw inputs
    myo_label: int = 2  # the label the reconstruction is written with (the source's myocardium or structure)


@dataclass
class TableFrame:
    """Where a raw table-cohort input's template grid lies in its own scanner space."""

    centre: np.ndarray
    axes: np.ndarray
    affine: np.ndarray
    shape: tuple[int, ...]


def _table_files(files: list[Path], grid: TemplateGrid, template: dict) -> list[Subject]:
    """One subject from its phases' label maps, aligned as the model's training data was."""
    phases, label = template["phases"], int(template["structure_label"])
    if len(files) != len(phases):
        raise DataError(files[0], f"the model takes {len(phases)} phase(s) ({', '.join(phases)}): give "
                                  + ("one label map" if len(phases) == 1 else "the first phase's map and --es"))
    align = template["alignment"]
    centre = axes = None
    vols = []
    for f in files:
        data, affine = load_label_map(f, None)
        mask = data == label
        if not mask.any():
            raise DataError(f, f"no voxel of structure label {label} (the model's; see template.json)")
        if centre is None:
            centre, axes = frame(mask, affine, align["mode"], align.get("cohort_centre_mm"))
            ref_affine, ref_shape = affine, data.shape
        vols.append(resample(mask, affine, centre, axes, grid.coords()).astype(np.uint8))
    name = files[0].name.split(".")[0]
    return [Subject(name, np.stack(vols), None, TableFrame(centre, axes, ref_affine, ref_shape), label)]


def _table_manifest(table: Path, grid: TemplateGrid, template: dict) -> list[Subject]:
    """Every subject of a manifest table (the format of ``data prepare --format table``), aligned as the model's
    training data was; labels from the table's ``label``, or its ``group`` against the model's class names."""
    names = template["class_names"]
    try:
        scan = scan_table(table, tuple(template["phases"]))
    except DataError as exc:
        if "--positive" not in exc.problem:
            raise
        scan = scan_table(table, tuple(template["phases"]), positive=names["1"])
    out = []
    for s in scan.subjects:
        subject = _table_files([s.paths[p] for p in template["phases"]], grid, template)[0]
        subject.subject, subject.label = s.subject, s.label
        out.append(subject)
    return out


def _table_to_subject(prob: np.ndarray, fr: TableFrame, grid: TemplateGrid) -> np.ndarray:
    """Template-grid probabilities resampled onto the subject's own image grid (the inverse of the alignment)."""
    from scipy.ndimage import map_coordinates

    idx = np.indices(fr.shape).reshape(3, -1).astype(np.float64)
    world = fr.affine[:3, :3] @ idx + fr.affine[:3, 3:4]
    local = fr.axes.T @ (world - fr.centre[:, None])  # template mm
    vox = (local - grid.affine()[:3, 3:4]) / grid.spacing
    return map_coordinates(prob.astype(np.float32), vox, order=1, mode="constant", cval=0.0).reshape(fr.shape)


def _acdc(path: Path, grid: TemplateGrid, in_plane: str) -> list[Subject]:
    if path.is_dir():
        raws = read_acdc(path, groups=tuple(ACDC_GROUPS))
    else:
        raise DataError(path, "expected an ACDC patient folder, a prepared dataset or --es with a NIfTI pair")
    out = []
    for raw in raws:
        a = align_subject(raw, grid, in_plane)
        out.append(Subject(raw.subject, (a.vols == MYOCARDIUM).astype(np.uint8),
                           raw.label if raw.group in ("NOR", "HCM") else None, a, raw.labels["myo"]))
    return out


def _pair(ed: Path, es: Path, grid: TemplateGrid, in_plane: str, labels: dict) -> list[Subject]:
    raw = RawSubject(ed.name.split(".")[0], "nifti", "predict", "unknown", ed, es, labels=labels)
    a = align_subject(raw, grid, in_plane)
    return [Subject(raw.subject, (a.vols == MYOCARDIUM).astype(np.uint8), None, a, labels["myo"])]


def _prepared(path: Path, grid: TemplateGrid, split: str | None) -> list[Subject]:
    ds = PreparedDataset(path)
    splits = sorted(set(ds.manifest["split"]))
    if split is not None and split not in splits:
        raise DataError(path / "manifest.parquet", f"no split {split!r}; this dataset has {', '.join(splits)}")
    if ds.grid != grid:
        raise DataError(path / "dataset.json", f"prepared at {ds.grid.shape}/{ds.grid.spacing} mm but the model "
                                               f"expects {grid.shape}/{grid.spacing} mm")
    m = ds.manifest if split is None else ds.split(split)
    m = m.sort_values("index")
    masks = (np.asarray(ds.masks[m["index"].to_numpy()]) == MYOCARDIUM).astype(np.uint8)
    return [Subject(s, masks[i], int(lab)) for i, (s, lab) in enumerate(zip(m["subject"], m["label"], strict=True))]


def _check_prepared_like_training(path: Path, template: dict) -> None:
    """Refuse a prepared dataset whose masks mean something else than the model's training data: a cardiac
    dataset for a table cohort's model or the reverse, or a table dataset with other phases, structure label or
    alignment (the shapes would be in another frame, and the predictions silently wrong)."""
    ds = PreparedDataset(path)
    if template.get("cohort") != "table":
        if not ds.is_cardiac:
            raise DataError(path / "dataset.json", "a manifest-table cohort; this model takes cardiac ED/ES masks")
        return
    if ds.is_cardiac:
        raise DataError(path / "dataset.json", "a cardiac dataset; this model was trained on a manifest-table cohort")
    orientation = ds.meta.get("orientation", {})
    have = {"phases": list(ds.phases), "structure_label": ds.meta.get("structure_label"),
            "alignment": orientation.get("alignment"), "cohort_centre_mm": orientation.get("cohort_centre_mm")}
    align = template["alignment"]
    want = {"phases": template["phases"], "structure_label": template["structure_label"],
            "alignment": align["mode"], "cohort_centre_mm": align.get("cohort_centre_mm")}
    differ = [f"{k} {have[k]} (model: {want[k]})" for k in want if have[k] != want[k]]
    if differ:
        raise DataError(path / "dataset.json", f"prepared unlike the model's training data: {'; '.join(differ)}; "
                                               "prepare it with the model's settings (template.json)")


def load_inputs(inp: Path, grid: TemplateGrid, es: Path | None = None, split: str | None = None,
                in_plane: str = "rv", labels: dict | None = None, template: dict | None = None) -> list[Subject]:
    """Subjects from any supported input, on the model's template grid (``template``: the export's
    ``template.json``, which says whether the model is a table cohort's)."""
    labels = labels or {"rv": 1, "myo": 2, "cav": 3}
    if not inp.exists():
        raise DataError(inp, "input not found")
    table = (template or {}).get("cohort") == "table"
    if (inp / "dataset.json").exists():
        _check_prepared_like_training(inp, template or {})
        return _prepared(inp, grid, split)
    if table:
        if inp.is_dir():
            raise DataError(inp, "this model was trained on a manifest-table cohort: give a manifest table, a "
                                 "prepared dataset (`data prepare TABLE --format table` at the model's grid) or "
                                 "its label map(s)")
        if inp.suffix.lower() in (".csv", ".parquet", ".pq"):
            return _table_manifest(inp, grid, template)
        return _table_files([inp] + ([es] if es is not None else []), grid, template)
    if es is not None:
        return _pair(inp, es, grid, in_plane, labels)
    return _acdc(inp, grid, in_plane)


@torch.no_grad()
def predict(export_dir: str | Path, inp: str | Path, out: str | Path, es: str | Path | None = None,
            split: str | None = None, batch_size: int = 16, write_nifti: bool = True,
            force: bool = False) -> pd.DataFrame:
    """Predict every input subject with an exported model, without Ray.

    Args:
        export_dir: a folder (or URI) written by ``shapetune export``; verified before use.
        inp: an ACDC patient folder or a folder of them, a prepared dataset, or an ED NIfTI (with ``es``).
        out: a new or empty folder, or a previous prediction output (replaced only with ``force``); it gets
            ``predictions.{csv,parquet}`` and ``SUBJECT/recon_{ED,ES}.nii.gz``, published in one rename.
        es: the ES label map when ``inp`` is an ED NIfTI file.
        split: prepared datasets only: predict this split.

    Returns:
        One row per subject: p(HCM), predicted class, label, Dice ED/ES, latent coordinates per level.

    Raises:
        ExportError: the export is missing, modified or inconsistent.
        DataError: an input is unreadable or invalid, or the split does not exist.
        OutputError: ``out`` may not be written (see :func:`shapetune.io.check_output`).
    """
    out = Path(out).absolute()
    check_output(out, "predict", force)  # before any work
    export_dir, inp = storage.local_copy(export_dir), storage.local_copy(inp)  # an export or input in a bucket
    model, cfg, template, _ = verify_export(export_dir)
    grid = TemplateGrid(tuple(template["grid"]["shape"]), float(template["grid"]["spacing"]))
    subjects = load_inputs(Path(inp), grid, Path(es) if es else None, split,
                           (template.get("preprocessing") or {}).get("in_plane", "rv"), template=template)
    with staged_folder(out, "predict", force) as tmp:
        return _predict_into(tmp, out, model, grid, subjects, batch_size, write_nifti, template)


@torch.no_grad()
def infer(model, subjects: list[Subject], device: torch.device | None = None, template: dict | None = None
          ) -> tuple[list[dict], np.ndarray]:
    """One forward pass over ``subjects`` (a batch), on ``device`` (the model's; CPU by default).

    Returns:
        A row per subject (subject, p(HCM), predicted class, label, Dice per phase of the reconstruction, latent
        means ``z<level>_<k>``, top level last) and the reconstruction probabilities ``[N, P, D, H, W]``. For a
        table cohort's model (``template``): ``p_positive`` and the classes' names.
    """
    x = torch.from_numpy(np.stack([s.masks for s in subjects])).float().to(device or "cpu")
    o = model(x)
    latents = [z.cpu() for z in model.latents(x)]
    prob = torch.sigmoid(o.cls_logit.float()).cpu().numpy()
    dice = dice_per_channel((o.logits > 0).float(), x).cpu().numpy()
    table = (template or {}).get("cohort") == "table"
    phases = template["phases"] if table else ["ed", "es"]
    names = template["class_names"] if table else {"0": "healthy", "1": "HCM"}
    rows = []
    for i, s in enumerate(subjects):
        row = {"subject": s.subject, "p_positive" if table else "p_hcm": float(prob[i]),
               "predicted": names["1"] if prob[i] > 0.5 else names["0"], "label": s.label,
               **{f"dice_{p}": float(dice[i, c]) for c, p in enumerate(phases)}}
        for lvl, z in enumerate(latents):
            for k, v in enumerate(z[i].tolist()):
                row[f"z{lvl}_{k}"] = v
        rows.append(row)
    return rows, torch.sigmoid(o.logits.float()).cpu().numpy()


def save_reconstruction(path: Path, prob: np.ndarray, subject: Subject, grid: TemplateGrid) -> None:
    """One phase's reconstruction probabilities ``[D, H, W]`` resampled onto the subject's own image grid and
    written as a NIfTI label map with the source's myocardium label."""
    if isinstance(subject.aligned, TableFrame):
        p = _table_to_subject(prob, subject.aligned, grid)
        dtype = np.int16 if subject.myo_label <= np.iinfo(np.int16).max else np.int32
        save_nifti(path, ((p > 0.5) * subject.myo_label).astype(dtype), subject.aligned.affine)
        return
    p = template_to_subject(prob, subject.aligned, grid)
    save_nifti(path, ((p > 0.5) * subject.myo_label).astype(np.uint8), subject.aligned.affine)


def _predict_into(tmp: Path, out: Path, model, grid: TemplateGrid, subjects: list[Subject], batch_size: int,
                  write_nifti: bool, template: dict | None = None) -> pd.DataFrame:
    rows = []
    phases = [p.upper() for p in (template or {}).get("phases", ["ED", "ES"])]
    for s0 in track(range(0, len(subjects), batch_size), description="predicting", disable=len(subjects) <= batch_size):
        batch = subjects[s0:s0 + batch_size]
        batch_rows, recon = infer(model, batch, template=template)
        for i, (s, row) in enumerate(zip(batch, batch_rows, strict=True)):
            if write_nifti and s.aligned is not None:
                sub = tmp / s.subject
                sub.mkdir(exist_ok=True)
                for c, phase in enumerate(phases):
                    save_reconstruction(sub / f"recon_{phase}.nii.gz", recon[i, c], s, grid)
                row["recon_dir"] = str(out / s.subject)
            rows.append(row)
    df = pd.DataFrame(rows)
    df.to_csv(tmp / "predictions.csv", index=False)
    df.to_parquet(tmp / "predictions.parquet", index=False)
    return df
