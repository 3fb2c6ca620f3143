"""Prepare a source folder into a training-ready dataset: ``masks.npy``, ``manifest.parquet``, ``dataset.json``.

``masks.npy`` holds uint8 template label maps ``[N, 2 (ED, ES), D, H, W]`` (0 background, 1 LV myocardium,
2 LV cavity) and is memory-mappable (``np.load(..., mmap_mode="r")``). Preparation is idempotent: the
fingerprint of the inputs (file hashes) and settings is stored, and an unchanged re-run does nothing.
Files are written into a temporary folder and moved into place, ``dataset.json`` last, so an interrupted
run never leaves a dataset that looks complete.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import nibabel
import numpy as np
import pandas as pd
import scipy

from shapetune import __version__
from shapetune.data.errors import DataError
from shapetune.data.indices import clinical_indices
from shapetune.data.nifti import sha256_file
from shapetune.data.parallel import pmap
from shapetune.data.preprocess import preprocess_subject
from shapetune.data.sources import READERS, RawSubject
from shapetune.data.template import ORIENTATION, TemplateGrid

PREPROCESS_VERSION = 1  # bump when the preprocessing changes what it writes
GROUND_TRUTH_FILES = ("ground_truth.parquet", "shapetune_ground_truth.parquet")


@dataclass
class PrepareReport:
    out: Path
    n_subjects: int
    skipped: list[dict] = field(default_factory=list)
    up_to_date: bool = False


def _prepare_one(args: tuple) -> tuple[str, object]:
    raw, grid, in_plane = args
    try:
        vols, info = preprocess_subject(raw, grid, in_plane)
    except DataError as exc:
        return "error", {"subject": raw.subject, "file": exc.path, "problem": exc.problem}
    info.update(clinical_indices(vols, grid.spacing, raw.demographics.get("bsa")))
    return "ok", (vols, info)


def _fingerprint(subjects: list[RawSubject], settings: dict) -> tuple[str, dict[str, tuple[str, str]]]:
    hashes = {s.subject: (sha256_file(s.ed_path), sha256_file(s.es_path)) for s in subjects}
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for sid in sorted(hashes):
        h.update(f"{sid}:{hashes[sid][0]}:{hashes[sid][1]}".encode())
    return h.hexdigest(), hashes


def prepare(src: str | Path, fmt: str, out: str | Path, grid: TemplateGrid = TemplateGrid(),
            groups: tuple[str, ...] = ("NOR", "HCM"), skip_bad: bool = False, in_plane: str = "rv",
            workers: int | None = None, quiet: bool = False) -> PrepareReport:
    """Read ``src`` in format ``fmt`` and write the prepared dataset to ``out`` (see module docstring)."""
    if fmt not in READERS:
        raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(READERS)}")
    src, out = Path(src), Path(out)
    subjects = READERS[fmt](src, groups=tuple(groups))
    settings = {"format": fmt, "grid": grid.to_dict(), "groups": sorted(groups), "in_plane": in_plane,
                "skip_bad": skip_bad, "preprocess_version": PREPROCESS_VERSION}
    fingerprint, hashes = _fingerprint(subjects, settings)
    meta_path = out / "dataset.json"
    if meta_path.exists():
        try:
            old = json.loads(meta_path.read_text())
        except json.JSONDecodeError:
            old = {}
        if old.get("fingerprint") == fingerprint and (out / "masks.npy").exists():
            return PrepareReport(out, old["n_subjects"], old.get("skipped", []), up_to_date=True)

    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".tmp-prepare-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        masks = np.lib.format.open_memmap(tmp / "masks.npy", mode="w+", dtype=np.uint8,
                                          shape=(len(subjects), 2, *grid.shape))
        rows: list[dict | None] = [None] * len(subjects)
        skipped: list[dict] = []
        jobs = [(s, grid, in_plane) for s in subjects]
        for i, (status, payload) in pmap(_prepare_one, jobs, workers, f"prepare {fmt}", quiet):
            if status == "error":
                if not skip_bad:
                    raise DataError(payload["file"], payload["problem"], subject=payload["subject"])
                skipped.append(payload)
                continue
            vols, info = payload
            masks[i] = vols
            s = subjects[i]
            rows[i] = {"subject": s.subject, "cohort": s.cohort, "split": s.split, "group": s.group,
                       "label": s.label, **s.demographics, "src_ed": str(s.ed_path), "src_es": str(s.es_path),
                       "sha256_ed": hashes[s.subject][0], "sha256_es": hashes[s.subject][1], **info}
        keep = [i for i, r in enumerate(rows) if r is not None]
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
        manifest.to_parquet(tmp / "manifest.parquet", index=False)
        meta = {"format_version": 1, "cohort": fmt, "source": str(src.resolve()), "grid": grid.to_dict(),
                "orientation": ORIENTATION, "labels": {"0": "background", "1": "LV myocardium", "2": "LV cavity"},
                "array": {"file": "masks.npy", "dtype": "uint8", "shape": [len(manifest), 2, *grid.shape],
                          "axes": ["subject", "phase (0=ED, 1=ES)", "D (apex->base)", "H (inferior->anterior)",
                                   "W (septum->lateral)"]},
                "versions": {"shapetune": __version__, "numpy": np.__version__, "scipy": scipy.__version__,
                             "nibabel": nibabel.__version__, "preprocess": PREPROCESS_VERSION},
                "seed": _source_seed(src), "settings": settings, "fingerprint": fingerprint,
                "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "n_subjects": len(manifest), "skipped": skipped}
        for name in ("masks.npy", "manifest.parquet"):
            os.replace(tmp / name, out / name)
        (tmp / "dataset.json").write_text(json.dumps(meta, indent=2, default=str))
        os.replace(tmp / "dataset.json", meta_path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return PrepareReport(out, len(manifest), skipped)


def _attach_ground_truth(manifest: pd.DataFrame, src: Path) -> pd.DataFrame:
    """Synthetic sources carry their generator parameters; join them (``gt_*``, phenotype) when present."""
    for name in GROUND_TRUTH_FILES:
        if (src / name).exists():
            gt = pd.read_parquet(src / name)
            cols = ["subject"] + [c for c in gt.columns if c.startswith("gt_") or c in ("phenotype", "borderline")]
            return manifest.merge(gt[cols], on="subject", how="left")
    return manifest


def _source_seed(src: Path):
    meta = src / "cohort.json"
    return json.loads(meta.read_text()).get("seed") if meta.exists() else None
