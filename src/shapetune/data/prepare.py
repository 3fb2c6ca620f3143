"""Prepare a source folder into a training-ready dataset: ``masks.npy``, ``manifest.parquet``, ``dataset.json``.

``masks.npy`` holds uint8 template label maps ``[N, 2 (ED, ES), D, H, W]`` (0 background, 1 LV myocardium,
2 LV cavity) and is memory-mappable (``np.load(..., mmap_mode="r")``). Preparation is idempotent: the
fingerprint of every input that reaches the manifest (label maps, ``Info.cfg`` files, ``subjects.csv``,
ground-truth tables, ``cohort.json``, what the scan skipped) and of the settings is stored, and an unchanged
re-run of a complete dataset does nothing. The dataset is written into a fresh sibling folder and renamed
into place in one step (:mod:`shapetune.data.publish`), so an interrupted run never leaves a folder that
looks complete; :class:`~shapetune.data.dataset.PreparedDataset` also cross-checks the files on open.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import nibabel
import numpy as np
import pandas as pd
import scipy

from shapetune import __version__
from shapetune.data.dataset import PreparedDataset, write_manifest
from shapetune.data.errors import DataError
from shapetune.data.indices import clinical_indices
from shapetune.data.limits import check_disk, check_field_of_view, check_memory
from shapetune.data.nifti import sha256_file
from shapetune.data.parallel import default_workers, pmap
from shapetune.data.preprocess import preprocess_subject
from shapetune.data.publish import open_out, publishing
from shapetune.data.sources import READERS, SourceScan
from shapetune.data.template import ORIENTATION, TemplateGrid

PREPROCESS_VERSION = 1  # bump when the preprocessing changes what it writes
FINGERPRINT_VERSION = 2  # bump when the fingerprint covers more inputs (older datasets are then re-prepared)
GROUND_TRUTH_FILES = ("ground_truth.parquet", "shapetune_ground_truth.parquet")
DATASET_CONTENTS = ["dataset.json", "masks.npy", "manifest.parquet"]


@dataclass
class PrepareReport:
    out: Path
    n_subjects: int
    skipped: list[dict] = field(default_factory=list)
    up_to_date: bool = False
    excluded: dict[str, int] = field(default_factory=dict)  # group -> subjects left out by --groups
    clipped: list[str] = field(default_factory=list)  # subjects whose masks touch the grid border
    notes: list[str] = field(default_factory=list)  # clean-up of interrupted runs, files kept aside


def _prepare_one(args: tuple) -> tuple[str, object]:
    raw, grid, in_plane = args
    try:
        vols, info = preprocess_subject(raw, grid, in_plane)
    except DataError as exc:
        return "error", {"subject": raw.subject, "file": exc.path, "problem": exc.problem}
    info.update(clinical_indices(vols, grid.spacing, raw.demographics.get("bsa")))
    return "ok", (vols, info)


def _metadata_files(src: Path, scan: SourceScan) -> list[Path]:
    """Every non-image input whose content reaches the manifest or dataset.json."""
    extra = [src / name for name in (*GROUND_TRUTH_FILES, "cohort.json") if (src / name).is_file()]
    return sorted(set(scan.inputs) | set(extra))


def _fingerprint(src: Path, scan: SourceScan, settings: dict) -> tuple[str, dict[str, tuple[str, str]]]:
    """Hash of the settings, the scan's outcome, every metadata file and every selected label map."""
    hashes = {s.subject: (sha256_file(s.ed_path), sha256_file(s.es_path)) for s in scan.subjects}
    h = hashlib.sha256(json.dumps({"version": FINGERPRINT_VERSION, "settings": settings,
                                   "source": str(src.resolve()), "skipped": scan.skipped,
                                   "excluded": scan.excluded}, sort_keys=True, default=str).encode())
    for p in _metadata_files(src, scan):
        h.update(f"{p}:{sha256_file(p)}\n".encode())
    for s in sorted(scan.subjects, key=lambda s: s.subject):
        ed, es = hashes[s.subject]
        h.update(f"{s.subject}:{s.split}:{s.group}:{s.ed_path}:{ed}:{s.es_path}:{es}\n".encode())
    return h.hexdigest(), hashes


def up_to_date(out: Path, fingerprint: str) -> PrepareReport | None:
    """The report of a complete, consistent dataset at ``out`` prepared from these very inputs, else None."""
    if not (out / "dataset.json").exists():
        return None
    try:
        ds = PreparedDataset(out)
    except DataError:  # incomplete or inconsistent: prepare again (it is ours: check_out said so)
        return None
    m = ds.meta
    if m.get("fingerprint") != fingerprint:
        return None
    return PrepareReport(out, int(m["n_subjects"]), m.get("skipped", []), up_to_date=True,
                         excluded=m.get("excluded_groups", {}), clipped=m.get("fov_clipped", []))


def _nothing_selected(src: Path, scan: SourceScan, groups: tuple[str, ...]) -> DataError:
    present = scan.groups_present()
    have = ", ".join(f"{g} ({n})" for g, n in present.items()) or "none readable"
    why = f"no subject of group(s) {', '.join(g.upper() for g in groups)}; groups present: {have}"
    if scan.skipped:
        s = scan.skipped[0]
        why += f"; {len(scan.skipped)} subject folder(s) skipped (first: {s['subject']}: {s['file']}: {s['problem']})"
    return DataError(src, why)


def prepare(src: str | Path, fmt: str, out: str | Path,
            grid: TemplateGrid = TemplateGrid(),  # noqa: B008 (a frozen dataclass: an immutable default, safe to share)
            groups: tuple[str, ...] = ("NOR", "HCM"), skip_bad: bool = False, in_plane: str = "rv",
            workers: int | None = None, quiet: bool = False) -> PrepareReport:
    """Read ``src`` in format ``fmt`` and write the prepared dataset to ``out`` (see module docstring)."""
    if fmt not in READERS:
        raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(READERS)}")
    src = Path(src)
    options = f"--grid {'x'.join(map(str, grid.shape))} --spacing {grid.spacing:g}"
    check_field_of_view(grid, options)
    workers = workers or default_workers()
    check_memory(grid.shape, workers, "prepare", options)
    out, notes = open_out(out, "dataset")
    scan = READERS[fmt](src, groups=tuple(groups), skip_bad=skip_bad)
    if not scan.subjects:
        raise _nothing_selected(src, scan, tuple(groups))
    settings = {"format": fmt, "grid": grid.to_dict(), "groups": sorted(g.upper() for g in groups),
                "in_plane": in_plane, "skip_bad": skip_bad, "preprocess_version": PREPROCESS_VERSION}
    fingerprint, hashes = _fingerprint(src, scan, settings)
    if (done := up_to_date(out, fingerprint)) is not None:
        done.notes = notes
        return done
    subjects = scan.subjects
    check_disk(out, len(subjects) * 2 * math.prod(grid.shape), "masks.npy")
    with publishing(out, "dataset", notes, "dataset") as pub:
        report = _write(pub.staging, src, fmt, out, grid, scan, settings, fingerprint, hashes, in_plane, skip_bad,
                        workers, quiet)
    report.notes = pub.notes
    return report


def _write(tmp: Path, src: Path, fmt: str, out: Path, grid: TemplateGrid, scan: SourceScan, settings: dict,
           fingerprint: str, hashes: dict, in_plane: str, skip_bad: bool, workers: int, quiet: bool) -> PrepareReport:
    """Preprocess every subject into ``tmp`` and write the three files there."""
    subjects = scan.subjects
    masks = np.lib.format.open_memmap(tmp / "masks.npy", mode="w+", dtype=np.uint8,
                                      shape=(len(subjects), 2, *grid.shape))
    rows: list[dict | None] = [None] * len(subjects)
    skipped: list[dict] = list(scan.skipped)
    failed: list[dict] = []
    jobs = [(s, grid, in_plane) for s in subjects]
    for i, (status, payload) in pmap(_prepare_one, jobs, workers, f"prepare {fmt}", quiet):
        if status == "error":
            if not skip_bad:
                raise DataError(payload["file"], payload["problem"], subject=payload["subject"])
            failed.append(payload)
            continue
        vols, info = payload
        masks[i] = vols
        s = subjects[i]
        rows[i] = {"subject": s.subject, "cohort": s.cohort, "split": s.split, "group": s.group,
                   "label": s.label, **s.demographics, "src_ed": str(s.ed_path), "src_es": str(s.es_path),
                   "sha256_ed": hashes[s.subject][0], "sha256_es": hashes[s.subject][1], **info}
    skipped += sorted(failed, key=lambda r: r["subject"])
    keep = [i for i, r in enumerate(rows) if r is not None]
    if not keep:
        first = "; ".join(f"{r['subject']}: {r['file']}: {r['problem']}" for r in failed[:3])
        raise DataError(src, f"no subject could be prepared: all {len(subjects)} selected subject(s) failed "
                             f"({first}{'; ...' if len(failed) > 3 else ''})")
    if len(keep) < len(subjects):  # compact the array so row k of the manifest is masks[k]
        compact = np.lib.format.open_memmap(tmp / "masks.compact.npy", mode="w+", dtype=np.uint8,
                                            shape=(len(keep), 2, *grid.shape))
        for k, i in enumerate(keep):
            compact[k] = masks[i]
        compact.flush()
        del compact, masks
        os.replace(tmp / "masks.compact.npy", tmp / "masks.npy")
    else:
        masks.flush()
        del masks
    manifest = pd.DataFrame([rows[i] for i in keep])
    manifest.insert(0, "index", np.arange(len(manifest)))
    manifest = _attach_ground_truth(manifest, src)
    dataset_id = uuid.uuid4().hex
    write_manifest(manifest, tmp / "manifest.parquet", dataset_id)
    clipped = sorted(manifest.loc[manifest["fov_clipped"], "subject"]) if "fov_clipped" in manifest else []
    meta = {"format_version": 1, "generator": f"shapetune {__version__}", "cohort": fmt,
            "source": str(src.resolve()), "grid": grid.to_dict(),
            "orientation": ORIENTATION, "labels": {"0": "background", "1": "LV myocardium", "2": "LV cavity"},
            "array": {"file": "masks.npy", "dtype": "uint8", "shape": [len(manifest), 2, *grid.shape],
                      "axes": ["subject", "phase (0=ED, 1=ES)", "D (apex->base)", "H (inferior->anterior)",
                               "W (septum->lateral)"]},
            "versions": {"shapetune": __version__, "numpy": np.__version__, "scipy": scipy.__version__,
                         "nibabel": nibabel.__version__, "preprocess": PREPROCESS_VERSION},
            "seed": _source_seed(src), "settings": settings, "fingerprint": fingerprint, "dataset_id": dataset_id,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "n_subjects": len(manifest), "skipped": skipped, "excluded_groups": scan.excluded,
            "fov_clipped": clipped, "contents": DATASET_CONTENTS,
            "files": {name: (tmp / name).stat().st_size for name in ("masks.npy", "manifest.parquet")}}
    (tmp / "dataset.json").write_text(json.dumps(meta, indent=2, default=str))
    return PrepareReport(out, len(manifest), skipped, excluded=scan.excluded, clipped=clipped)


def _attach_ground_truth(manifest: pd.DataFrame, src: Path) -> pd.DataFrame:
    """Synthetic sources carry their generator parameters; join them (``gt_*``, phenotype) when present."""
    for name in GROUND_TRUTH_FILES:
        path = src / name
        if not path.exists():
            continue
        try:
            gt = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise DataError(path, f"cannot read the ground-truth table ({type(exc).__name__}: {exc})") from exc
        if "subject" not in gt:
            raise DataError(path, "ground-truth table has no 'subject' column")
        if gt["subject"].duplicated().any():
            raise DataError(path, f"duplicate subject(s) {sorted(gt.subject[gt.subject.duplicated()])[:5]}")
        missing = sorted(set(manifest["subject"]) - set(gt["subject"].astype(str)))
        if missing:
            raise DataError(path, f"no ground-truth row for subject(s) {', '.join(missing[:5])}"
                                  f"{' ...' if len(missing) > 5 else ''}")
        cols = ["subject"] + [c for c in gt.columns if c.startswith("gt_") or c in ("phenotype", "borderline")]
        gt = gt[cols].assign(subject=gt["subject"].astype(str))
        return manifest.merge(gt, on="subject", how="left")
    return manifest


def _source_seed(src: Path):
    meta = src / "cohort.json"
    if not meta.exists():
        return None
    try:
        return json.loads(meta.read_text()).get("seed")
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
        raise DataError(meta, f"not a valid cohort.json ({exc})") from exc
