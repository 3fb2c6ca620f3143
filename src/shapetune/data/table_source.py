"""Bring your own cohort: a manifest table (CSV or Parquet) of NIfTI label maps, any anatomy, one or two phases.

The table has one row per subject:

- ``subject``: a plain id (letters, digits, ``.``, ``_``, ``-``);
- the phase columns, paths of NIfTI label maps relative to the table's folder (or absolute): ``ed`` and ``es``
  for a two-phase cohort, ``mask`` for a one-phase one, or the columns named by ``phases``;
- the diagnosis: ``label`` (0 or 1), or ``group`` with ``positive`` naming the group that is label 1;
- optionally ``split`` (``train``, ``val``, ``test``; every row or none: without it a split stratified by
  label is drawn with ``fractions`` and ``seed``), demographics (``age``, ``sex``, ``height_cm``,
  ``weight_kg``, checked like the Imperial layout's) and any other columns, carried into the manifest
  unchanged (a name the manifest uses itself is refused).

Every problem is reported with the table and its line (CSV) or row (Parquet). A row whose files are missing
stops the read, or with ``skip_bad`` is listed as skipped, never dropped silently.
"""

from __future__ import annotations

import csv
import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from shapetune.data.errors import DataError
from shapetune.data.sources import SAFE_ID, SPLITS, csv_header, csv_records, number_cell

PHASE_SETS = (("ed", "es"), ("mask",))  # recognised without --phases, in this order
DEMOGRAPHICS = ("age", "sex", "height_cm", "weight_kg")
# Columns the prepared manifest writes itself; a table column of the same name would be overwritten.
RESERVED = ("index", "cohort", "fov_clipped", "align_centre_mm", "align_axes")
DEFAULT_FRACTIONS = (70.0, 15.0, 15.0)


@dataclass
class TableSubject:
    """One validated row: the subject, its diagnosis, split, label-map paths per phase and carried columns."""

    subject: str
    where: str  # "line N" (CSV) or "row N" (Parquet), for messages
    group: str
    label: int
    split: str | None
    paths: dict[str, Path]
    demographics: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


@dataclass
class TableScan:
    """What a manifest table holds: the subjects to prepare, the phases, and the rows that could not be used."""

    subjects: list[TableSubject]
    phases: tuple[str, ...]
    skipped: list[dict]  # {"subject", "file", "problem"}
    positive: str | None


def _cell(v) -> str:
    """A Parquet value as the text a CSV would hold: "" for missing, whole floats without ".0" (pandas stores a
    nullable integer column as floats)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _read_csv(path: Path) -> tuple[pd.DataFrame, list[str]]:
    """Rows as strings with the line each starts on (blank lines and quoted line breaks counted)."""
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        try:
            header = csv_header(reader, path, "(subject, the phase columns, label or group, ...)")
            rows, wheres = [], []
            for line, cells in csv_records(reader, header, path):
                rows.append(cells)
                wheres.append(f"line {line}")
        except csv.Error as exc:
            raise DataError(path, f"line {reader.line_num}: malformed CSV ({exc})") from exc
    return pd.DataFrame(rows, columns=header, dtype=object), wheres


def read_table(path: Path) -> tuple[pd.DataFrame, list[str]]:
    """The table as strings (empty cells ""), and where each row is, for messages ("line 7" or "row 3").

    Raises:
        DataError: not found, an unknown suffix, unreadable, empty, or duplicate column names.
    """
    if not path.is_file():
        raise DataError(path, "manifest table not found" if not path.exists() else "not a file")
    suffix = "".join(path.suffixes[-1:]).lower()
    try:
        if suffix == ".csv":
            df, wheres = _read_csv(path)
        elif suffix in (".parquet", ".pq"):
            raw = pd.read_parquet(path)
            df = pd.DataFrame({str(c).strip(): [_cell(v).strip() for v in raw[c].tolist()] for c in raw.columns},
                              dtype=object)
            if len(set(df.columns)) != len(raw.columns):
                raise DataError(path, "duplicate column names once stripped of spaces")
            wheres = [f"row {i + 1}" for i in range(len(df))]
        else:
            raise DataError(path, f"unknown table format {suffix or '(no suffix)'!r}; expected .csv or .parquet")
    except UnicodeDecodeError as exc:
        raise DataError(path, f"not a UTF-8 text file (byte {exc.start})") from exc
    except (OSError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(path, f"cannot read the table ({type(exc).__name__}: {exc})") from exc
    if df.empty:
        raise DataError(path, "no subjects listed (only a header)")
    return df, wheres


def _phases(df: pd.DataFrame, path: Path, phases: tuple[str, ...] | None) -> tuple[str, ...]:
    if phases:
        if not 1 <= len(phases) <= 2 or len(set(phases)) != len(phases):
            raise DataError(path, f"--phases must name one or two distinct columns, got {','.join(phases)}")
        missing = [p for p in phases if p not in df.columns]
        if missing:
            raise DataError(path, f"--phases column(s) {', '.join(missing)} not in the table (columns: "
                                  f"{', '.join(df.columns)})")
        return tuple(phases)
    for cand in PHASE_SETS:
        if all(c in df.columns for c in cand):
            return cand
    raise DataError(path, "no phase columns: expected 'ed' and 'es' (two phases) or 'mask' (one), or name them "
                          f"with --phases (columns: {', '.join(df.columns)})")


def _labels(df: pd.DataFrame, path: Path, wheres: list[str], positive: str | None) -> tuple[list[str], list[int]]:
    """Each row's group and label (1 = the positive class)."""
    if "label" in df.columns:
        if positive is not None:
            raise DataError(path, "the table has a 'label' column: --positive applies to a 'group' column only")
        labels = []
        for i, v in enumerate(df["label"]):
            if v not in ("0", "1"):
                raise DataError(path, f"{wheres[i]}: label must be 0 or 1, got {v!r}")
            labels.append(int(v))
        groups = list(df["group"]) if "group" in df.columns else [str(x) for x in labels]
        return groups, labels
    if "group" not in df.columns:
        raise DataError(path, "no diagnosis column: expected 'label' (0/1) or 'group' with --positive GROUP")
    present = sorted(set(df["group"]))
    if positive is None:
        raise DataError(path, f"the 'group' column needs --positive GROUP naming the class that is label 1 "
                              f"(groups: {', '.join(present)})")
    if positive not in present:
        raise DataError(path, f"--positive {positive!r} is not a group of the table (groups: {', '.join(present)})")
    for i, g in enumerate(df["group"]):
        if g == "":
            raise DataError(path, f"{wheres[i]}: empty group")
    return list(df["group"]), [int(g == positive) for g in df["group"]]


def _demographics(rec: dict, where: str, path: Path) -> dict:
    out: dict = {}
    if "age" in rec:
        out["age"] = number_cell(rec["age"], "age", where, path, 0.0, True)
    for name in ("height_cm", "weight_kg"):
        if name in rec:
            out[name] = number_cell(rec[name], name, where, path, 0.0, False)
    if "sex" in rec:
        sex = rec["sex"].upper() or None
        if sex not in (None, "M", "F"):
            raise DataError(path, f"{where}: sex must be M, F or empty, got {rec['sex']!r}")
        out["sex"] = sex
    return out


def scan_table(path: str | Path, phases: tuple[str, ...] | None = None, positive: str | None = None,
               skip_bad: bool = False) -> TableScan:
    """Read and validate a manifest table (see the module docstring).

    Args:
        path: the CSV or Parquet table.
        phases: the phase columns (one or two); default ``ed,es`` or ``mask``, whichever the table has.
        positive: the group that is label 1, when the table has ``group`` and no ``label``.
        skip_bad: list rows whose files are missing as skipped instead of stopping.

    Returns:
        The subjects, the phases and the skipped rows.

    Raises:
        DataError: the table, a column or a row is not usable (with the table and the line or row).
    """
    path = Path(path)
    df, wheres = read_table(path)
    if "subject" not in df.columns:
        raise DataError(path, f"no 'subject' column (columns: {', '.join(df.columns)})")
    ph = _phases(df, path, phases)
    groups, labels = _labels(df, path, wheres, positive)
    clash = [c for c in df.columns
             if c in RESERVED or c.startswith(("src_", "sha256_", "volume_ml_", "source_volume_ml_"))]
    if clash:
        raise DataError(path, f"column(s) {', '.join(clash)} would be overwritten by the prepared manifest; "
                              "rename them")
    has_split = "split" in df.columns
    if has_split:
        empty = [i for i, s in enumerate(df["split"]) if s == ""]
        if empty and len(empty) < len(df):
            raise DataError(path, f"{wheres[empty[0]]}: empty split; give every row a split or none "
                                  "(then --split draws one)")
        has_split = not empty
    carried = [c for c in df.columns if c not in ("subject", "label", "group", "split", *ph, *DEMOGRAPHICS)]
    base = path.parent
    subjects: list[TableSubject] = []
    skipped: list[dict] = []
    first: dict[str, str] = {}
    for i, rec in enumerate(df.to_dict("records")):
        where = wheres[i]
        sid = rec["subject"]
        if not SAFE_ID.fullmatch(sid) or ".." in sid:
            raise DataError(path, f"{where}: subject id {sid!r} is not a plain name (letters, digits, '.', '_', '-')")
        if sid in first:
            raise DataError(path, f"{where}: duplicate subject {sid!r} (first on {first[sid]})")
        first[sid] = where
        split = rec["split"] if has_split else None
        if split is not None and split not in SPLITS:
            raise DataError(path, f"{where}: subject {sid}: unknown split {split!r}; expected one of "
                                  f"{', '.join(SPLITS)}")
        demo = _demographics(rec, where, path)
        paths: dict[str, Path] = {}
        try:
            for p in ph:
                if rec[p] == "":
                    raise DataError(path, f"{where}: subject {sid}: no {p} label map (empty cell)")
                f = Path(rec[p])
                f = f if f.is_absolute() else base / f
                if not f.is_file():
                    raise DataError(f, f"{p} label map of subject {sid} ({path.name} {where}) not found")
                paths[p] = f
        except DataError as exc:
            if not skip_bad:
                raise
            skipped.append({"subject": sid, "file": exc.path, "problem": exc.problem})
            continue
        subjects.append(TableSubject(sid, where, groups[i], labels[i], split, paths, demo,
                                     {c: rec[c] for c in carried}))
    if not subjects:
        raise DataError(path, f"no usable subject: all {len(df)} row(s) skipped (first: {skipped[0]['file']}: "
                              f"{skipped[0]['problem']})")
    return TableScan(subjects, ph, skipped, positive)


def stratified_split(labels: list[int], fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
                     seed: int = 0, subjects: list[str] | None = None) -> list[str]:
    """A train/val/test split stratified by label: each class ordered by a hash of (seed, subject id) and cut by
    ``fractions``.

    Ordering by a hash of the id, not by row position, makes the split independent of the table's row order and
    stable when subjects are added or skipped: a subject keeps its split unless the cuts move past it.

    Raises:
        ValueError: fractions that are not three non-negative numbers with a positive sum, or a split left empty.
    """
    f = np.asarray(fractions, dtype=np.float64)
    if f.shape != (3,) or np.any(f < 0) or not np.all(np.isfinite(f)) or f.sum() <= 0:
        raise ValueError(f"--split takes three non-negative percentages (train,val,test), got {fractions}")
    f = f / f.sum()
    ids = subjects if subjects is not None else [str(i) for i in range(len(labels))]
    rank = [hashlib.sha256(f"{seed}:{sid}".encode()).hexdigest() for sid in ids]
    y = np.asarray(labels)
    out = np.empty(len(y), dtype=object)
    for cls in np.unique(y):
        idx = np.array(sorted(np.flatnonzero(y == cls), key=lambda i: rank[i]), dtype=int)
        cuts = np.round(np.cumsum(f)[:2] * len(idx)).astype(int)
        for name, part in zip(SPLITS, np.split(idx, cuts), strict=True):
            out[part] = name
    sizes = {s: int(np.sum(out == s)) for s in SPLITS}
    empty = [s for s, n in sizes.items() if n == 0 and f[SPLITS.index(s)] > 0]
    if empty:
        raise ValueError(f"--split {','.join(f'{x:g}' for x in fractions)} leaves split(s) {', '.join(empty)} empty "
                         f"with {len(y)} subjects; give larger fractions or a 'split' column")
    return [str(s) for s in out]


def label_groups(subjects: list[TableSubject]) -> dict[int, list[str]]:
    """The groups that make up each label (``--positive AD`` with CN and MCI present: 0 = CN + MCI, 1 = AD)."""
    out: dict[int, set[str]] = {0: set(), 1: set()}
    for s in subjects:
        out[s.label].add(s.group)
    return {k: sorted(v) for k, v in out.items()}
