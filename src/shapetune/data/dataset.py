"""Read a prepared dataset (``masks.npy`` memory-mapped, ``manifest.parquet``, ``dataset.json``).

Opening checks that the files belong together before anything is used: ``dataset.json`` parses, records at
least one subject, every array it lists is there with the recorded byte size and one row per subject, the
manifest has that many rows and carries the same ``dataset_id`` (written into its parquet metadata), so a
folder left half-written or mixed from two preparations is refused instead of read.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from shapetune import storage
from shapetune.catalog import cohort_task
from shapetune.data.errors import DataError
from shapetune.data.template import TemplateGrid

DATASET_ID_KEY = b"shapetune.dataset_id"
RERUN = "re-run `shapetune data prepare`"


def write_manifest(manifest: pd.DataFrame, path: Path, dataset_id: str) -> None:
    """Write the manifest with the dataset's id in its parquet metadata (checked against dataset.json on open)."""
    table = pa.Table.from_pandas(manifest, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), DATASET_ID_KEY: dataset_id.encode()})
    pq.write_table(table, path)


def manifest_id(path: Path) -> str | None:
    """The dataset id stored in a manifest's parquet metadata (None for manifests written before it existed)."""
    meta = pq.read_schema(path).metadata or {}
    return meta[DATASET_ID_KEY].decode() if DATASET_ID_KEY in meta else None


def dataset_task(path: str | Path) -> str:
    """The task (``shapetune.catalog.TASK_SPECS``) a prepared dataset serves: its ``dataset.json`` cohort's.

    Raises:
        DataError: ``path`` holds no ``dataset.json``.
    """
    meta = Path(path) / "dataset.json"
    if not meta.exists():
        raise DataError(meta, "not a prepared dataset (dataset.json missing); run `shapetune data prepare`")
    return cohort_task(json.loads(meta.read_text()).get("cohort"))


def dataset_phases(path: str | Path) -> tuple[str, ...] | None:
    """The phases a prepared dataset (a folder or a URI) declares (a manifest-table cohort: one or two); None for the
    cohorts whose layout fixes them (cardiac: ED and ES; fetal skulls), or where ``path`` is not a prepared
    dataset."""
    try:
        phases = json.loads(storage.read_text(storage.join(path, "dataset.json"))).get("phases")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):  # StorageError is an OSError
        return None
    return tuple(phases) if isinstance(phases, list) and phases else None


def cohort_overrides(path: str | Path, overrides: list[str]) -> tuple[list[str], list[str]]:
    """``overrides`` plus ``model.in_channels=P`` for a manifest-table cohort of P phases at ``path`` when they do
    not set it, and the list of what was added (empty for the cardiac and fetal cohorts). ``path`` may be a URI.

    The shipped augmentation (a turn about the template's axis 0, shifts, an elastic jitter) stays on: on the tubes
    cohort, turning it off helped after 20 epochs (validation Dice 0.965 vs 0.950) but the model then overfitted
    its 280 subjects and ended no better (``benchmarks/RESULTS.md``).
    """
    phases = dataset_phases(path)
    if phases is None or any(o.split("=", 1)[0].strip() == "model.in_channels" for o in overrides):
        return overrides, []
    added = [f"model.in_channels={len(phases)}"]
    return [*overrides, *added], added


class PreparedDataset:
    """A prepared dataset on disk; masks are memory-mapped, so opening it is cheap."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        meta = self.path / "dataset.json"
        if not meta.exists():
            raise DataError(meta, "not a prepared dataset (dataset.json missing); run `shapetune data prepare`")
        try:
            self.meta = json.loads(meta.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(meta, f"not valid JSON ({exc}); {RERUN}") from exc
        if not isinstance(self.meta, dict) or "grid" not in self.meta:
            raise DataError(meta, "not a ShapeTune dataset.json (no grid)")
        self.grid = TemplateGrid(tuple(self.meta["grid"]["shape"]), float(self.meta["grid"]["spacing"]))
        self._check_files()

    def _array_files(self) -> list[str]:
        files = self.meta.get("files")
        if isinstance(files, dict):
            return [f for f in files if f.endswith(".npy")]
        return ["masks.npy", "planes.npy"] if self.meta.get("cohort") == "fetal" else ["masks.npy"]

    def _check_files(self) -> None:
        """Refuse a dataset whose files do not belong together (see the module docstring)."""
        meta = self.path / "dataset.json"
        n = self.meta.get("n_subjects")
        if n == 0:
            raise DataError(meta, f"the dataset holds 0 subjects (none selected, or every one skipped); {RERUN} "
                                  "with other --groups or fixed inputs")
        names = [*self._array_files(), "manifest.parquet"]
        for name in names:
            if not (self.path / name).is_file():
                raise DataError(self.path / name, f"missing: incomplete dataset (interrupted or partial copy?); "
                                                  f"{RERUN}")
        for name, size in (self.meta.get("files") or {}).items():
            actual = (self.path / name).stat().st_size
            if actual != size:
                raise DataError(self.path / name, f"{actual} bytes, but dataset.json records {size}: the files are "
                                                  f"not from one preparation; {RERUN}")
        rows = pq.read_metadata(self.path / "manifest.parquet").num_rows
        if n is not None and rows != n:
            raise DataError(self.path / "manifest.parquet", f"{rows} rows, but dataset.json records {n} subjects; "
                                                            f"{RERUN}")
        if "dataset_id" in self.meta and manifest_id(self.path / "manifest.parquet") != self.meta["dataset_id"]:
            raise DataError(self.path / "manifest.parquet", f"belongs to another preparation than dataset.json; "
                                                            f"{RERUN}")
        for name in self._array_files():
            try:
                arr = np.load(self.path / name, mmap_mode="r")
            except (ValueError, OSError, EOFError) as exc:
                raise DataError(self.path / name, f"cannot read ({exc}); {RERUN}") from exc
            if arr.shape[0] != rows:
                raise DataError(self.path / name, f"{arr.shape[0]} volumes but {rows} manifest rows; {RERUN}")

    @property
    def phases(self) -> tuple[str, ...]:
        """The phase of each channel of ``masks``: the table's columns, or ``ed``, ``es`` for the cardiac cohorts."""
        return tuple(self.meta.get("phases") or ("ed", "es"))

    @property
    def is_cardiac(self) -> bool:
        """Whether the masks are the LV myocardium in its template frame (wall thickness, ED/ES): every cohort but
        a manifest-table one (a user's own anatomy)."""
        return self.meta.get("cohort") != "table"

    @property
    def class_names(self) -> dict[int, str]:
        """Label -> class name: healthy/HCM for the cardiac cohorts, the table's groups for a manifest-table one."""
        if self.is_cardiac or "group" not in self.manifest:
            return {0: "healthy", 1: "HCM"}
        m = self.manifest
        return {lab: "/".join(sorted(set(m.loc[m["label"] == lab, "group"].astype(str)))) or str(lab) for lab in (0, 1)}

    @cached_property
    def manifest(self) -> pd.DataFrame:
        return pd.read_parquet(self.path / "manifest.parquet")

    @cached_property
    def masks(self) -> np.ndarray:
        arr = np.load(self.path / "masks.npy", mmap_mode="r")
        if arr.shape[0] != len(self.manifest):
            raise DataError(self.path / "masks.npy", f"{arr.shape[0]} volumes but {len(self.manifest)} manifest rows")
        return arr

    @cached_property
    def planes(self) -> np.ndarray:
        """The fetal-skull cohort's 2D planes ``[N, 3, G, G]`` (axial, sagittal, coronal), memory-mapped."""
        path = self.path / "planes.npy"
        if not path.exists():
            raise DataError(path, "no planes here: not a fetal-skull dataset (shapetune data prepare --format fetal)")
        arr = np.load(path, mmap_mode="r")
        if arr.shape[0] != len(self.manifest):
            raise DataError(path, f"{arr.shape[0]} plane sets but {len(self.manifest)} manifest rows")
        return arr

    def __len__(self) -> int:
        return len(self.manifest)

    def split(self, name: str) -> pd.DataFrame:
        """Manifest rows of one split (``train``, ``val``, ``test``); an empty or unknown split is an error."""
        m = self.manifest
        if "split" not in m:
            raise DataError(self.path / "manifest.parquet", "no 'split' column (fetal datasets use fold columns)")
        rows = m[m["split"] == name]
        if rows.empty:
            have = ", ".join(f"{k} ({v})" for k, v in m["split"].value_counts().sort_index().items())
            raise DataError(self.path / "manifest.parquet", f"no subjects in split {name!r}; this dataset has {have}")
        return rows
