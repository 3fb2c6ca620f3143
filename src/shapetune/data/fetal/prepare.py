"""Prepare a fetal-skull folder (the layout of :mod:`shapetune.data.fetal.cohort`) into a training dataset.

Writes ``masks.npy`` (uint8 ``[N, 1, G, G, G]`` calvarium), ``planes.npy`` (uint8 ``[N, 3, G, G]``: axial,
sagittal, coronal masks, each on a ``G x G`` image of the volume's spacing), ``manifest.parquet`` (subject,
fold columns, gestational age, cephalic index, plane poses) and ``dataset.json`` (cohort ``fetal``), into a
staging folder published in one step. Every input is checked; a bad file stops preparation with its path
and the problem.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy.ndimage import zoom

from shapetune import __version__
from shapetune.data.errors import DataError
from shapetune.data.dataset import write_manifest
from shapetune.data.fetal.planes import VIEWS, PlanePose
from shapetune.data.limits import check_disk, check_memory
from shapetune.data.nifti import check_voxel_sizes
from shapetune.data.parallel import default_workers, pmap
from shapetune.data.publish import open_out, publishing
from shapetune.data.sources import SAFE_ID

FORMAT_VERSION = 1


def _read(path: Path, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    if not path.exists():
        raise DataError(path, "file not found")
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise DataError(path, f"cannot read NIfTI ({type(exc).__name__}: {exc})") from exc
    if ndim == 2 and data.ndim == 3 and data.shape[2] == 1:
        data = data[:, :, 0]
    if data.ndim != ndim or len(set(data.shape)) != 1:
        raise DataError(path, f"expected a square/cubic {ndim}D mask, got shape {data.shape}")
    check_voxel_sizes(img, path, ndim)
    if not np.all(np.isfinite(data)):
        raise DataError(path, "mask contains NaN/inf values")
    values = set(np.unique(data).tolist())
    if not values <= {0, 1}:
        raise DataError(path, f"expected a binary mask (0/1), found values {sorted(values)[:6]}")
    if ndim == 3 and not values - {0}:
        raise DataError(path, "empty skull mask")
    return data.astype(np.uint8), np.asarray(img.affine, dtype=np.float64)


def _resample(x: np.ndarray, size: int) -> np.ndarray:
    if x.shape[0] == size:
        return x
    return (zoom(x.astype(np.float32), size / x.shape[0], order=1) > 0.5).astype(np.uint8)


def _one(args: tuple) -> tuple[np.ndarray, np.ndarray, dict]:
    folder, grid = args
    vol, aff3 = _read(folder / "skull.nii.gz", 3)
    spacing_in = float(abs(aff3[0, 0]))
    rec: dict = {"subject": folder.name, "source_grid": vol.shape[0], "source_spacing": spacing_in}
    planes = []
    for view in VIEWS:
        path = folder / f"plane_{view}.nii.gz"
        plane, aff = _read(path, 2)
        if plane.shape[0] != vol.shape[0]:
            raise DataError(path, f"plane is {plane.shape[0]}^2 but the skull is {vol.shape[0]}^3")
        rec[f"pose_{view}"] = PlanePose.from_affine(aff, plane.shape[0]).as_list()
        rec[f"plane_pixels_{view}"] = int(plane.sum())
        planes.append(_resample(plane, grid))
    return _resample(vol, grid)[None], np.stack(planes), rec


def read_folds(folds_csv: Path) -> pd.DataFrame:
    """``folds.csv``: unique plain subject ids and fold0, fold1, ... columns of train/val/test."""
    if not folds_csv.exists():
        raise DataError(folds_csv, "not a fetal-skull cohort (folds.csv missing); run "
                                   "`shapetune data synth --cohort fetal`")
    try:
        folds = pd.read_csv(folds_csv, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError as exc:
        raise DataError(folds_csv, "empty file: expected a header 'subject,fold0,fold1,...' and one row per "
                                   "subject") from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(folds_csv, f"malformed CSV ({exc})") from exc
    fold_cols = [c for c in folds.columns if c.startswith("fold")]
    if "subject" not in folds or not fold_cols:
        raise DataError(folds_csv, "needs a 'subject' column and fold0, fold1, ... columns")
    if folds.empty:
        raise DataError(folds_csv, "no subjects listed (only a header)")
    for i, sid in enumerate(folds["subject"]):
        line = i + 2  # the header is line 1; pandas skips no line here (every row has a subject)
        if not SAFE_ID.fullmatch(sid) or ".." in sid:
            raise DataError(folds_csv, f"line {line}: subject id {sid!r} is not a plain folder name")
    dup = folds["subject"].duplicated()
    if dup.any():
        raise DataError(folds_csv, f"duplicate subject(s) {sorted(set(folds.subject[dup]))[:5]}")
    bad = set(folds[fold_cols].stack().unique()) - {"train", "val", "test"}
    if bad:
        raise DataError(folds_csv, f"fold values must be train/val/test, found {sorted(bad)}")
    return folds


def prepare_fetal(src: str | Path, out: str | Path, grid: int = 64, workers: int | None = None,
                  quiet: bool = False) -> int:
    """Prepare ``src`` into ``out`` at ``grid`` (the field of view is kept); returns the number of subjects.

    Written into a staging folder and published in one step (:mod:`shapetune.data.publish`).
    """
    src = Path(src)
    if grid < 8:
        raise DataError("--grid", f"must be at least 8, got {grid}")
    workers = workers or default_workers()
    check_memory((grid,) * 3, workers, "fetal", f"--grid {grid}")
    out, notes = open_out(out, "dataset")
    folds = read_folds(src / "folds.csv")
    fold_cols = [c for c in folds.columns if c.startswith("fold")]
    n = len(folds)
    check_disk(out, n * (grid ** 3 + 3 * grid ** 2), "masks.npy and planes.npy")
    with publishing(out, "dataset", notes, "dataset") as pub:
        tmp = pub.staging
        masks = np.lib.format.open_memmap(tmp / "masks.npy", mode="w+", dtype=np.uint8, shape=(n, 1, grid, grid, grid))
        planes = np.lib.format.open_memmap(tmp / "planes.npy", mode="w+", dtype=np.uint8, shape=(n, 3, grid, grid))
        rows: list = [None] * n
        jobs = [(src / "subjects" / s, grid) for s in folds.subject]
        for i, (vol, pl, rec) in pmap(_one, jobs, workers, "prepare fetal", quiet):
            masks[i], planes[i], rows[i] = vol, pl, rec
        masks.flush(), planes.flush()
        del masks, planes
        spacings = {r["source_spacing"] * r["source_grid"] for r in rows}
        fov = spacings.pop() if len(spacings) == 1 else None
        if fov is None:
            raise DataError(src, "subjects have different fields of view; resample them to one grid first")
        manifest = pd.DataFrame(rows).merge(folds, on="subject")
        manifest.insert(0, "index", np.arange(n))
        gt = src / "ground_truth.parquet"
        if gt.exists():  # synthetic cohorts carry their generator parameters
            keep = ["subject", "ga_weeks", "cephalic_index", "shape_class", "bpd_mm", "ofd_mm", "height_mm",
                    *(f"standard_{v}" for v in VIEWS)]  # the unperturbed planes: training re-perturbs them
            manifest = manifest.merge(pd.read_parquet(gt)[keep], on="subject", how="left")
        dataset_id = uuid.uuid4().hex
        write_manifest(manifest, tmp / "manifest.parquet", dataset_id)
        files = ("masks.npy", "planes.npy", "manifest.parquet")
        meta = {"format_version": FORMAT_VERSION, "generator": f"shapetune {__version__}", "cohort": "fetal",
                "source": str(src.resolve()),
                "grid": {"shape": [grid] * 3, "spacing": fov / grid}, "field_of_view_mm": fov,
                "views": list(VIEWS), "folds": len(fold_cols), "labels": {"0": "background", "1": "calvarium"},
                "arrays": {"masks.npy": [n, 1, grid, grid, grid], "planes.npy": [n, 3, grid, grid]},
                "versions": {"shapetune": __version__}, "n_subjects": n, "dataset_id": dataset_id,
                "contents": ["dataset.json", *files], "files": {f: (tmp / f).stat().st_size for f in files},
                "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        (tmp / "dataset.json").write_text(json.dumps(meta, indent=2))
    return n
