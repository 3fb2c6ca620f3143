"""Readers that turn a source folder into raw subjects (label-map paths + demographics), one per format.

``READERS`` maps a format name to its scanner; each returns a ``SourceScan``: the subjects to prepare,
every subject-like folder or table row it could not use with the reason (``skipped``), how many subjects
``--groups`` left out per group, and the metadata files it read (so the preparation fingerprint covers them).

Metadata is read strictly: a duplicate key, a frame number that is not a whole number, ED == ES, a
non-positive height or weight, an unknown split or group, a duplicate subject id, or an id that is not a
plain folder name is refused with the file and line. Folders are never skipped silently: a folder that
looks like a subject but cannot be used is either an error or (``skip_bad``) listed in ``skipped``.
Symbolic links to subject folders are followed when they resolve inside the source folder and refused
(with the reason) when they point outside it; no input file outside the source folder is ever read.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shapetune.data.errors import DataError

ACDC_GROUPS = ("NOR", "MINF", "DCM", "HCM", "RV")
ACDC_INFO_KEYS = ("ED", "ES", "Group", "Height", "Weight", "NbFrame")
# Diagnosis label used by the models: 1 = HCM, 0 = everything else selected (normally NOR).
POSITIVE_GROUP = "HCM"
SPLITS = ("train", "val", "test")
PATIENT_DIR = re.compile(r"patient\d+")
# A subject id is used as a folder name: letters, digits, '.', '_', '-', starting with a letter or digit
# (so no '/', no '..', no absolute path, no hidden folder).
SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass
class RawSubject:
    """One subject's source files and metadata, before preprocessing."""

    subject: str
    cohort: str
    split: str
    group: str
    ed_path: Path
    es_path: Path
    demographics: dict = field(default_factory=dict)
    labels: dict = field(default_factory=lambda: {"rv": 1, "myo": 2, "cav": 3})

    @property
    def label(self) -> int:
        return int(self.group == POSITIVE_GROUP)


@dataclass
class SourceScan:
    """What a reader found in a source folder."""

    subjects: list[RawSubject] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)  # {"subject", "file", "problem"}
    excluded: dict[str, int] = field(default_factory=dict)  # group -> subjects left out by --groups
    inputs: list[Path] = field(default_factory=list)  # metadata files read (hashed into the fingerprint)

    def problem(self, exc: DataError, subject: str, skip_bad: bool) -> None:
        """Record a subject that cannot be used (``skip_bad``), or stop with its error."""
        if not skip_bad:
            raise DataError(exc.path, exc.problem, subject=subject)
        self.skipped.append({"subject": subject, "file": exc.path, "problem": exc.problem})

    def groups_present(self) -> dict[str, int]:
        counts = Counter(s.group for s in self.subjects)
        counts.update(self.excluded)
        return dict(sorted(counts.items()))


def bsa_mosteller(height_cm: float, weight_kg: float) -> float:
    return float(np.sqrt(height_cm * weight_kg / 3600.0))


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(path, f"not a UTF-8 text file (byte {exc.start})") from exc
    except OSError as exc:
        raise DataError(path, f"cannot read ({exc.strerror or exc})") from exc


def _inside(root: Path, path: Path) -> bool:
    """Whether ``path`` (symbolic links resolved) lies inside ``root``."""
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def _check_inside(root: Path, path: Path) -> None:
    if not _inside(root, path):
        raise DataError(path, f"resolves to {path.resolve()}, outside the source folder {root}; not read")


# ------------------------------------------------------------------ ACDC
def parse_info_cfg(path: str | Path) -> dict:
    """Parse an ACDC ``Info.cfg``: ``Key: value`` lines (extra spaces, blank lines and key case tolerated).

    Refused, with the line: a line without ':', a duplicate or unknown key, a frame (ED, ES, NbFrame) that is
    not a whole number >= 1 or exceeds NbFrame, ED == ES, a height or weight that is not a positive number,
    an unknown Group. A missing key is refused with its name.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "Info.cfg not found")
    canonical = {k.lower(): k for k in ACDC_INFO_KEYS}
    seen: dict[str, tuple[int, str]] = {}
    unknown: list[tuple[int, str]] = []
    for n, line in enumerate(_read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        if ":" not in line:
            raise DataError(path, f"line {n}: expected 'Key: value', got {line.strip()!r}")
        k, v = (part.strip() for part in line.split(":", 1))
        key = canonical.get(k.lower())
        if key is None:
            unknown.append((n, k))
            continue
        if key in seen:
            raise DataError(path, f"line {n}: duplicate key {k!r} (first on line {seen[key][0]})")
        seen[key] = (n, v)
    missing = [k for k in ACDC_INFO_KEYS if k not in seen]
    if missing:
        raise DataError(path, f"missing key(s) {', '.join(missing)}")
    if unknown:
        n, k = unknown[0]
        raise DataError(path, f"line {n}: unknown key {k!r}; expected {', '.join(ACDC_INFO_KEYS)}")
    info: dict = {}
    for key in ("ED", "ES", "NbFrame"):
        n, v = seen[key]
        if not re.fullmatch(r"\d+", v) or int(v) < 1:
            raise DataError(path, f"line {n}: {key} must be a whole frame number >= 1, got {v!r}")
        info[key] = int(v)
    for key, unit in (("Height", "cm"), ("Weight", "kg")):
        n, v = seen[key]
        try:
            x = float(v)
        except ValueError:
            x = math.nan
        if not (math.isfinite(x) and x > 0):
            raise DataError(path, f"line {n}: {key} must be a positive number ({unit}), got {v!r}")
        info[key] = x
    n, v = seen["Group"]
    if v.upper() not in ACDC_GROUPS:
        raise DataError(path, f"line {n}: unknown Group {v!r}; expected one of {', '.join(ACDC_GROUPS)}")
    info["Group"] = v.upper()
    if info["ED"] == info["ES"]:
        raise DataError(path, f"line {seen['ES'][0]}: ES frame {info['ES']} is the ED frame "
                              f"(line {seen['ED'][0]}); ED and ES must differ")
    for key in ("ED", "ES"):
        if info[key] > info["NbFrame"]:
            raise DataError(path, f"line {seen[key][0]}: {key} frame {info[key]} exceeds NbFrame {info['NbFrame']} "
                                  f"(line {seen['NbFrame'][0]})")
    return {k: info[k] for k in ("ED", "ES", "Group", "Height", "Weight", "NbFrame")}


def _frame_file(pdir: Path, pid: str, frame: int, gt: bool) -> Path:
    stem = f"{pid}_frame{frame:02d}{'_gt' if gt else ''}"
    for ext in (".nii.gz", ".nii"):
        if (p := pdir / (stem + ext)).exists():
            return p
    raise DataError(pdir / (stem + ".nii.gz"), f"segmentation for frame {frame} not found (.nii.gz or .nii)")


def _subject_folders(root: Path, pattern: re.Pattern) -> list[tuple[Path, str | None]]:
    """Every folder under ``root`` (``root`` included) whose name matches ``pattern``: (path, problem or None).

    Symbolic links are not descended into; a link named like a subject is followed only when it resolves to
    a folder inside ``root`` (the problem says why otherwise).
    """
    found: list[tuple[Path, str | None]] = []
    if pattern.fullmatch(root.name):
        return [(root, None)]
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        for name in sorted(dirnames + filenames):
            p = here / name
            if not pattern.fullmatch(name):
                continue
            if p.is_symlink():
                target = Path(os.path.realpath(p))
                if not target.exists():
                    found.append((p, f"broken symbolic link to {os.readlink(p)}"))
                elif not target.is_dir():
                    continue  # a link to a file is not a folder
                elif not _inside(root, p):
                    found.append((p, f"symbolic link to {target}, outside the source folder {root}; not followed"))
                else:
                    found.append((p, None))
            elif p.is_dir():
                found.append((p, None))
        # Patient folders hold files only; do not look for patients inside them.
        dirnames[:] = [d for d in dirnames if not pattern.fullmatch(d)]
    return sorted(found, key=lambda t: (t[0].name, str(t[0])))


def _check_unique(root: Path, folders: list[tuple[Path, str | None]]) -> None:
    first: dict[str, Path] = {}
    for p, _ in folders:
        if p.name in first:
            raise DataError(p, f"duplicate subject folder {p.name!r} (also {first[p.name]}); "
                               "each subject id may appear once in the source folder")
        first[p.name] = p
        if p.is_symlink() and p.exists():  # two names for one folder
            target = p.resolve()
            for q, _ in folders:
                if q != p and not q.is_symlink() and q.resolve() == target:
                    raise DataError(p, f"symbolic link to {q}, which is also in the source folder")


def scan_acdc(root: str | Path, groups: tuple[str, ...] = ("NOR", "HCM"), split: str = "test",
              skip_bad: bool = False) -> SourceScan:
    """Scan an ACDC folder as published (``training/``, ``testing/`` or patient folders directly)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "source folder not found" if not root.exists() else "not a folder")
    bad = [g for g in groups if g.upper() not in ACDC_GROUPS]
    if bad:
        raise DataError(root, f"unknown ACDC group(s) {bad}; expected from {', '.join(ACDC_GROUPS)}")
    groups = tuple(g.upper() for g in groups)
    folders = _subject_folders(root, PATIENT_DIR)
    if not folders:
        raise DataError(root, "no ACDC patient folders (patientNNN/Info.cfg) found")
    _check_unique(root, folders)
    scan = SourceScan()
    excluded: Counter = Counter()
    for pdir, problem in folders:
        pid = pdir.name
        try:
            if problem:
                raise DataError(pdir, problem)
            cfg = pdir / "Info.cfg"
            if not cfg.is_file():
                raise DataError(cfg, "Info.cfg not found: the folder looks like an ACDC patient but has no metadata")
            _check_inside(root, cfg)
            scan.inputs.append(cfg)
            info = parse_info_cfg(cfg)
            if info["Group"] not in groups:
                excluded[info["Group"]] += 1
                continue
            ed, es = _frame_file(pdir, pid, info["ED"], True), _frame_file(pdir, pid, info["ES"], True)
            for p in (ed, es):
                _check_inside(root, p)
        except DataError as exc:
            scan.problem(exc, pid, skip_bad)
            continue
        demo = {"height_cm": info["Height"], "weight_kg": info["Weight"], "age": np.nan, "sex": None,
                "bsa": bsa_mosteller(info["Height"], info["Weight"])}
        scan.subjects.append(RawSubject(pid, "acdc", split, info["Group"], ed, es, demo))
    scan.excluded = dict(sorted(excluded.items()))
    return scan


def read_acdc(root: str | Path, groups: tuple[str, ...] = ("NOR", "HCM"), split: str = "test") -> list[RawSubject]:
    """The subjects of an ACDC folder; stops at the first unusable patient folder (see ``scan_acdc``)."""
    return scan_acdc(root, groups, split).subjects


# ------------------------------------------------------------------ Imperial-style
IMPERIAL_COLUMNS = ("subject", "group")
IMPERIAL_OPTIONAL = ("split", "age", "sex", "height_cm", "weight_kg")


@dataclass
class TableRow:
    """One validated row of ``subjects.csv``."""

    line: int
    subject: str
    group: str
    split: str | None
    age: float
    sex: str | None
    height_cm: float
    weight_kg: float


def number_cell(value: str, name: str, line: int | str, path: Path, minimum: float, inclusive: bool) -> float:
    """A finite number above ``minimum`` (at or above when ``inclusive``); an empty cell is missing (NaN).
    ``line``: the line number, or where the cell is in words ("row 3")."""
    if value == "":
        return math.nan
    try:
        x = float(value)
    except ValueError:
        x = math.nan
    ok = math.isfinite(x) and (x >= minimum if inclusive else x > minimum)
    if not ok:
        bound = f">= {minimum:g}" if inclusive else "positive"
        at = f"line {line}" if isinstance(line, int) else line
        raise DataError(path, f"{at}: {name} must be a {bound} number or empty, got {value!r}")
    return x


def _parse_row(path: Path, line: int, rec: dict[str, str]) -> TableRow:
    sid = rec["subject"]
    if not SAFE_ID.fullmatch(sid) or ".." in sid:
        raise DataError(path, f"line {line}: subject id {sid!r} is not a plain folder name (letters, digits, "
                              "'.', '_', '-'; no '/', '..' or absolute path)")
    group = rec["group"].upper()
    if group not in ACDC_GROUPS:
        raise DataError(path, f"line {line}: subject {sid}: unknown group {rec['group']!r}; expected one of "
                              f"{', '.join(ACDC_GROUPS)}")
    split = rec.get("split")
    if split is not None and split not in SPLITS:
        raise DataError(path, f"line {line}: subject {sid}: unknown split {split!r}; expected one of "
                              f"{', '.join(SPLITS)}")
    sex = rec.get("sex", "").upper() or None
    if sex is not None and sex not in ("M", "F"):
        raise DataError(path, f"line {line}: subject {sid}: sex must be M, F or empty, got {rec['sex']!r}")
    return TableRow(line, sid, group, split, number_cell(rec.get("age", ""), "age", line, path, 0.0, True), sex,
                    number_cell(rec.get("height_cm", ""), "height_cm", line, path, 0.0, False),
                    number_cell(rec.get("weight_kg", ""), "weight_kg", line, path, 0.0, False))


def csv_header(reader, path: Path, expected: str) -> list[str]:
    """The first non-blank line of a ``csv.reader``, stripped; an empty file or a duplicate column is refused."""
    header = next(reader, None)
    while header is not None and not any(c.strip() for c in header):
        header = next(reader, None)
    if header is None:
        raise DataError(path, f"empty file: expected a header line {expected} and one row per subject")
    header = [c.strip() for c in header]
    dup = [c for c, k in Counter(header).items() if k > 1]
    if dup:
        raise DataError(path, f"line {reader.line_num}: duplicate column(s) {', '.join(dup)}")
    return header


def csv_records(reader, header: list[str], path: Path) -> Iterator[tuple[int, list[str]]]:
    """The records after ``header`` (stripped) with the line each starts on, blank lines and quoted line breaks
    counted; blank lines skipped, a record whose field count differs from the header's refused."""
    end = reader.line_num
    for cells in reader:
        line, end = end + 1, reader.line_num
        if not any(c.strip() for c in cells):
            continue  # a blank line holds no subject
        if len(cells) != len(header):
            raise DataError(path, f"line {line}: {len(cells)} field(s), the header has {len(header)}")
        yield line, [c.strip() for c in cells]


def parse_subjects_table(path: str | Path, skip_bad: bool = False) -> tuple[list[TableRow], list[dict]]:
    """Read ``subjects.csv``: header ``subject,group[,split,age,sex,height_cm,weight_kg]``, one row per subject.

    The file and its header must be well formed and subject ids unique (always an error); a bad row stops
    the read, or with ``skip_bad`` is returned in the second list (subject, file, problem with its line).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "subjects.csv not found (expected columns subject, group[, split, age, sex, "
                              "height_cm, weight_kg])")
    text = _read_text(path)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = csv_header(reader, path, "'subject,group[,split,age,sex,height_cm,weight_kg]'")
        missing = [c for c in IMPERIAL_COLUMNS if c not in header]
        if missing:
            raise DataError(path, f"missing column(s) {', '.join(missing)}")
        unknown = [c for c in header if c not in IMPERIAL_COLUMNS + IMPERIAL_OPTIONAL]
        if unknown:
            raise DataError(path, f"line {reader.line_num}: unknown column(s) {', '.join(map(repr, unknown))}; "
                                  f"expected {', '.join(IMPERIAL_COLUMNS + IMPERIAL_OPTIONAL)}")
        rows: list[TableRow] = []
        skipped: list[dict] = []
        first: dict[str, int] = {}
        for line, cells in csv_records(reader, header, path):
            rec = dict(zip(header, cells, strict=True))
            if rec["subject"] in first:
                raise DataError(path, f"line {line}: duplicate subject {rec['subject']!r} (first on line "
                                      f"{first[rec['subject']]})")
            first[rec["subject"]] = line
            try:
                rows.append(_parse_row(path, line, rec))
            except DataError as exc:
                if not skip_bad:
                    raise
                skipped.append({"subject": rec["subject"] or f"line {line}", "file": exc.path, "problem": exc.problem})
    except csv.Error as exc:
        raise DataError(path, f"line {reader.line_num}: malformed CSV ({exc})") from exc
    if not rows and not skipped:
        raise DataError(path, "no subjects listed (only a header)")
    return rows, skipped


def scan_imperial(root: str | Path, groups: tuple[str, ...] = ("NOR", "HCM"), split: str | None = None,
                  skip_bad: bool = False) -> SourceScan:
    """Scan the Imperial-style layout: ``subjects.csv`` plus ``subjects/<id>/seg_{ED,ES}.nii[.gz]``."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "source folder not found" if not root.exists() else "not a folder")
    bad = [g for g in groups if g.upper() not in ACDC_GROUPS]
    if bad:
        raise DataError(root, f"unknown group(s) {bad}; expected from {', '.join(ACDC_GROUPS)}")
    groups = tuple(g.upper() for g in groups)
    table = root / "subjects.csv"
    rows, skipped = parse_subjects_table(table, skip_bad)
    scan = SourceScan(skipped=skipped, inputs=[table])
    excluded: Counter = Counter()
    base = root / "subjects"
    for r in rows:
        if r.group not in groups:
            excluded[r.group] += 1
            continue
        sdir = base / r.subject
        try:
            if sdir.is_symlink() and not _inside(root, sdir):
                raise DataError(sdir, f"symbolic link to {sdir.resolve()}, outside the source folder {root}; "
                                      "not followed")
            paths = []
            for ph in ("ED", "ES"):
                cands = [sdir / f"seg_{ph}.nii.gz", sdir / f"seg_{ph}.nii"]
                p = next((c for c in cands if c.exists()), None)
                if p is None:
                    raise DataError(cands[0], "segmentation not found (.nii.gz or .nii)")
                _check_inside(root, p)
                paths.append(p)
        except DataError as exc:
            scan.problem(exc, r.subject, skip_bad)
            continue
        demo = {"age": r.age, "sex": r.sex, "height_cm": r.height_cm, "weight_kg": r.weight_kg,
                "bsa": bsa_mosteller(r.height_cm, r.weight_kg) if not (math.isnan(r.height_cm)
                                                                       or math.isnan(r.weight_kg)) else np.nan}
        scan.subjects.append(RawSubject(r.subject, "imperial", r.split or split or "unsplit", r.group,
                                        paths[0], paths[1], demo))
    listed = {r.subject for r in rows} | {s["subject"] for s in skipped}
    if base.is_dir():  # folders of subjects the table does not list would otherwise be ignored without a word
        for p in sorted(base.iterdir()):
            if p.is_dir() and p.name not in listed:
                scan.skipped.append({"subject": p.name, "file": str(p), "problem": f"not listed in {table}"})
    scan.excluded = dict(sorted(excluded.items()))
    return scan


def read_imperial(root: str | Path, groups: tuple[str, ...] = ("NOR", "HCM"),
                  split: str | None = None) -> list[RawSubject]:
    """The subjects of an Imperial-style folder; stops at the first bad row or missing file."""
    scan = scan_imperial(root, groups, split)
    if not scan.subjects:
        raise DataError(Path(root) / "subjects.csv", f"no subject of group(s) {', '.join(g.upper() for g in groups)}")
    return scan.subjects


READERS: dict[str, Callable[..., SourceScan]] = {"acdc": scan_acdc, "imperial": scan_imperial}
