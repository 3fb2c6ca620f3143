"""Prepare a manifest-table cohort (``data prepare TABLE --format table``) into the prepared-dataset layout.

``masks.npy`` holds uint8 ``[N, P, D, H, W]``, P the table's phases (1 or 2), 1 = the modelled structure
(``structure_label`` of the source maps), 0 elsewhere; ``manifest.parquet`` one row per subject (the table's
columns, the source files with their SHA-256, the structure's volume in ml before and after resampling, whether
it touches the grid border, the alignment); ``dataset.json`` records ``cohort: table``, the phases, the label,
the alignment and the fingerprint of every input. Like :func:`shapetune.data.prepare.prepare`: idempotent,
published in one step, bad input stops with the file and its problem (or, with ``skip_bad``, is listed).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import uuid
from pathlib import Path

import nibabel
import numpy as np
import pandas as pd
import scipy

from shapetune import __version__
from shapetune.data.align import ALIGNMENTS, frame, resample, world_points
from shapetune.data.dataset import write_manifest
from shapetune.data.errors import DataError
from shapetune.data.limits import check_disk, check_memory
from shapetune.data.nifti import load_label_map, sha256_file
from shapetune.data.parallel import default_workers, pmap
from shapetune.data.prepare import DATASET_CONTENTS, PrepareReport, up_to_date
from shapetune.data.publish import open_out, publishing
from shapetune.data.table_source import (DEFAULT_FRACTIONS, TableScan, TableSubject, label_groups, scan_table,
                                         stratified_split)
from shapetune.data.template import TemplateGrid

TABLE_VERSION = 1  # bump when what this writes changes


def _load(path: Path, structure_label: int, subject: str) -> tuple[np.ndarray, np.ndarray]:
    data, affine = load_label_map(path, None)
    mask = data == structure_label
    if not mask.any():
        present = sorted(int(v) for v in np.unique(data) if v != 0)
        raise DataError(path, f"subject {subject}: no voxel of structure label {structure_label} (labels present: "
                              f"{present or 'none'}); choose it with --structure-label")
    return mask, affine


def _centroid(args: tuple) -> tuple[str, object]:
    s, structure_label = args
    try:
        mask, affine = _load(s.paths[next(iter(s.paths))], structure_label, s.subject)
    except DataError as exc:
        return "error", {"subject": s.subject, "file": exc.path, "problem": exc.problem}
    return "ok", world_points(mask, affine).mean(axis=0)


def _prepare_one(args: tuple) -> tuple[str, object]:
    s, grid, structure_label, align, cohort_centre = args
    coords = grid.coords()
    vols, info = [], {}
    try:
        centre = axes = None
        for phase, path in s.paths.items():
            mask, affine = _load(path, structure_label, s.subject)
            if centre is None:  # the first phase fixes the frame for every phase
                try:
                    centre, axes = frame(mask, affine, align, cohort_centre)
                except ValueError as exc:
                    raise DataError(path, f"subject {s.subject}: {exc}") from exc
            out = resample(mask, affine, centre, axes, coords)
            src_ml = float(mask.sum() * abs(np.linalg.det(affine[:3, :3])) / 1000.0)
            if not out.any():
                raise DataError(path, f"subject {s.subject}: the structure falls outside the {grid.shape} grid of "
                                      f"{grid.spacing:g} mm; a larger --grid or --spacing holds it")
            vols.append(out)
            info[f"volume_ml_{phase}"] = float(out.sum() * grid.spacing**3 / 1000.0)
            info[f"source_volume_ml_{phase}"] = src_ml
    except DataError as exc:
        return "error", {"subject": s.subject, "file": exc.path, "problem": exc.problem}
    stack = np.stack(vols).astype(np.uint8)
    border = np.zeros(stack.shape[1:], dtype=bool)
    border[[0, -1], :, :] = border[:, [0, -1], :] = border[:, :, [0, -1]] = True
    info["fov_clipped"] = bool((stack.astype(bool) & border).any())
    info["align_centre_mm"] = [float(x) for x in centre]
    info["align_axes"] = [float(x) for x in np.asarray(axes).ravel()]
    return "ok", (stack, info)


def _fingerprint(table: Path, scan: TableScan, settings: dict) -> tuple[str, dict[str, dict[str, str]]]:
    hashes = {s.subject: {p: sha256_file(f) for p, f in s.paths.items()} for s in scan.subjects}
    first: dict[str, str] = {}
    for s in scan.subjects:  # one scan listed twice would put a subject in two splits
        for p, h in hashes[s.subject].items():
            if h in first and first[h] != s.subject:
                raise DataError(table, f"{s.where}: the {p} label map of subject {s.subject} ({s.paths[p]}) is the "
                                       f"same file content as subject {first[h]}'s; each subject needs its own scans")
            first.setdefault(h, s.subject)
    h = hashlib.sha256(json.dumps({"version": TABLE_VERSION, "settings": settings, "table": str(table.resolve()),
                                   "skipped": scan.skipped}, sort_keys=True, default=str).encode())
    h.update(f"{table}:{sha256_file(table)}\n".encode())
    for s in sorted(scan.subjects, key=lambda s: s.subject):
        h.update(f"{s.subject}:{json.dumps({p: str(f) for p, f in s.paths.items()})}:{hashes[s.subject]}\n".encode())
    return h.hexdigest(), hashes


def prepare_table(table: str | Path, out: str | Path,
                  grid: TemplateGrid = TemplateGrid(),  # noqa: B008 (frozen dataclass: an immutable default)
                  structure_label: int = 1, align: str = "principal", phases: tuple[str, ...] | None = None,
                  positive: str | None = None, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
                  seed: int = 0, skip_bad: bool = False, workers: int | None = None,
                  quiet: bool = False) -> PrepareReport:
    """Prepare a manifest-table cohort (see the module docstring and :mod:`shapetune.data.table_source`).

    Args:
        table: the CSV or Parquet manifest.
        out: the prepared dataset folder (new, or a previous one of ours).
        grid: the template grid.
        structure_label: the label value of the structure to model.
        align: ``principal``, ``centroid`` or ``none`` (:mod:`shapetune.data.align`).
        phases: the phase columns; default ``ed,es`` or ``mask``.
        positive: the group that is label 1 when the table has ``group`` and no ``label``.
        fractions: train/val/test percentages of the stratified split drawn when the table has no ``split``.
        seed: the seed of that split.
        skip_bad: list unusable subjects instead of stopping.
        workers: parallel processes.
        quiet: no progress bar.

    Returns:
        What was prepared, skipped and clipped.

    Raises:
        DataError: a bad table, file or setting, named with its file.
    """
    table = Path(table)
    if align not in ALIGNMENTS:
        raise DataError(table, f"unknown --align {align!r}; choose from {', '.join(ALIGNMENTS)}")
    if structure_label < 1:
        raise DataError(table, f"--structure-label must be a label value >= 1, got {structure_label}")
    options = f"--grid {'x'.join(map(str, grid.shape))} --spacing {grid.spacing:g}"
    # No field-of-view rule here (that one is the LV's): a structure cut by the grid is flagged per subject.
    workers = workers or default_workers()
    check_memory(grid.shape, workers, "prepare", options)
    out, notes = open_out(out, "dataset")
    scan = scan_table(table, phases, positive, skip_bad)
    drawn = scan.subjects[0].split is None
    if drawn:
        try:
            splits = stratified_split([s.label for s in scan.subjects], fractions, seed,
                                      [s.subject for s in scan.subjects])
        except ValueError as exc:
            raise DataError(table, str(exc)) from exc
        for s, sp in zip(scan.subjects, splits, strict=True):
            s.split = sp
    settings = {"format": "table", "grid": grid.to_dict(), "structure_label": structure_label, "align": align,
                "phases": list(scan.phases), "positive": positive, "skip_bad": skip_bad,
                "split": {"drawn": drawn, "fractions": list(fractions), "seed": seed} if drawn else "from the table",
                "table_version": TABLE_VERSION}
    fingerprint, hashes = _fingerprint(table, scan, settings)
    if (done := up_to_date(out, fingerprint)) is not None:
        done.notes = notes
        return done
    check_disk(out, len(scan.subjects) * len(scan.phases) * math.prod(grid.shape), "masks.npy")
    with publishing(out, "dataset", notes, "dataset") as pub:
        report = _write(pub.staging, table, out, grid, scan, settings, fingerprint, hashes, structure_label, align,
                        skip_bad, workers, quiet)
    report.notes = pub.notes + [f"label {k}: group(s) {', '.join(v)}" for k, v in label_groups(scan.subjects).items()
                                if len(v) > 1]
    return report


def _write(tmp: Path, table: Path, out: Path, grid: TemplateGrid, scan: TableScan, settings: dict,
           fingerprint: str, hashes: dict, structure_label: int, align: str, skip_bad: bool, workers: int,
           quiet: bool) -> PrepareReport:
    subjects: list[TableSubject] = scan.subjects
    failed: list[dict] = []
    centre = None
    if align == "none":  # one frame for the cohort: the mean of the subjects' centroids
        cents: list = [None] * len(subjects)
        for i, (status, payload) in pmap(_centroid, [(s, structure_label) for s in subjects], workers,
                                         "centroids", quiet):
            if status == "error" and not skip_bad:
                raise DataError(payload["file"], payload["problem"], subject=payload["subject"])
            cents[i] = payload if status == "ok" else None
        ok = [c for c in cents if c is not None]
        if not ok:
            raise DataError(table, "no subject could be read")
        centre = np.mean(ok, axis=0)
    n_ph = len(scan.phases)
    results: list = [None] * len(subjects)
    jobs = [(s, grid, structure_label, align, centre) for s in subjects]
    for i, (status, payload) in pmap(_prepare_one, jobs, workers, "prepare table", quiet):
        if status == "error":
            if not skip_bad:
                raise DataError(payload["file"], payload["problem"], subject=payload["subject"])
            failed.append(payload)
            continue
        results[i] = payload
    keep = [i for i, r in enumerate(results) if r is not None]
    if not keep:
        first = "; ".join(f"{r['subject']}: {r['file']}: {r['problem']}" for r in failed[:3])
        raise DataError(table, f"no subject could be prepared ({first})")
    masks = np.lib.format.open_memmap(tmp / "masks.npy", mode="w+", dtype=np.uint8,
                                      shape=(len(keep), n_ph, *grid.shape))
    rows = []
    for k, i in enumerate(keep):
        vols, info = results[i]
        masks[k] = vols
        s = subjects[i]
        rows.append({"subject": s.subject, "cohort": "table", "split": s.split, "group": s.group, "label": s.label,
                     **s.demographics, **s.extra,
                     **{f"src_{p}": str(f) for p, f in s.paths.items()},
                     **{f"sha256_{p}": h for p, h in hashes[s.subject].items()}, **info})
    masks.flush()
    del masks
    manifest = pd.DataFrame(rows)
    manifest.insert(0, "index", np.arange(len(manifest)))
    dataset_id = uuid.uuid4().hex
    write_manifest(manifest, tmp / "manifest.parquet", dataset_id)
    skipped = list(scan.skipped) + sorted(failed, key=lambda r: r["subject"])
    clipped = sorted(manifest.loc[manifest["fov_clipped"], "subject"])
    meta = {"format_version": 1, "generator": f"shapetune {__version__}", "cohort": "table",
            "source": str(table.resolve()), "grid": grid.to_dict(), "phases": list(scan.phases),
            "structure_label": structure_label, "positive": scan.positive,
            "orientation": {"alignment": align, "see": "shapetune.data.align",
                            "cohort_centre_mm": None if centre is None else [float(x) for x in centre]},
            "labels": {"0": "background", "1": f"structure (source label {structure_label})"},
            "array": {"file": "masks.npy", "dtype": "uint8", "shape": [len(manifest), n_ph, *grid.shape],
                      "axes": ["subject", f"phase ({', '.join(f'{i}={p}' for i, p in enumerate(scan.phases))})",
                               "D", "H", "W"]},
            "versions": {"shapetune": __version__, "numpy": np.__version__, "scipy": scipy.__version__,
                         "nibabel": nibabel.__version__, "table": TABLE_VERSION},
            "settings": settings, "fingerprint": fingerprint, "dataset_id": dataset_id,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "n_subjects": len(manifest), "skipped": skipped, "excluded_groups": {},
            "fov_clipped": clipped, "contents": DATASET_CONTENTS,
            "files": {name: (tmp / name).stat().st_size for name in ("masks.npy", "manifest.parquet")}}
    (tmp / "dataset.json").write_text(json.dumps(meta, indent=2, default=str))
    return PrepareReport(out, len(manifest), skipped, clipped=clipped)

