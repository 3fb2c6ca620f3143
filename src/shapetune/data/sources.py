"""Readers that turn a source folder into raw subjects (label-map paths + demographics), one per format.

``READERS`` maps a format name to its reader; both return ``RawSubject`` records that the single
preprocessing path consumes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from shapetune.data.errors import DataError

ACDC_GROUPS = ("NOR", "MINF", "DCM", "HCM", "RV")
ACDC_INFO_KEYS = ("ED", "ES", "Group", "Height", "Weight", "NbFrame")
# Diagnosis label used by the models: 1 = HCM, 0 = everything else selected (normally NOR).
POSITIVE_GROUP = "HCM"


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


def bsa_mosteller(height_cm: float, weight_kg: float) -> float:
    return float(np.sqrt(height_cm * weight_kg / 3600.0))


# ------------------------------------------------------------------ ACDC
def parse_info_cfg(path: str | Path) -> dict:
    """Parse an ACDC ``Info.cfg`` (``Key: value`` lines, tolerant of extra spaces and blank lines)."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "Info.cfg not found")
    out: dict[str, str] = {}
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        if ":" not in line:
            raise DataError(path, f"line {n}: expected 'Key: value', got {line.strip()!r}")
        k, v = line.split(":", 1)
        out[k.strip()] = v.strip()
    missing = [k for k in ACDC_INFO_KEYS if k not in out]
    if missing:
        raise DataError(path, f"missing key(s) {', '.join(missing)}")
    try:
        info = {"ED": int(float(out["ED"])), "ES": int(float(out["ES"])), "Group": out["Group"].upper(),
                "Height": float(out["Height"]), "Weight": float(out["Weight"]), "NbFrame": int(float(out["NbFrame"]))}
    except ValueError as exc:
        raise DataError(path, f"non-numeric value ({exc})") from exc
    if info["Group"] not in ACDC_GROUPS:
        raise DataError(path, f"unknown Group {info['Group']!r}; expected one of {', '.join(ACDC_GROUPS)}")
    return info


def _frame_file(pdir: Path, pid: str, frame: int, gt: bool) -> Path:
    stem = f"{pid}_frame{frame:02d}{'_gt' if gt else ''}"
    for ext in (".nii.gz", ".nii"):
        if (p := pdir / (stem + ext)).exists():
            return p
    raise DataError(pdir / (stem + ".nii.gz"), f"segmentation for frame {frame} not found (.nii.gz or .nii)")


def read_acdc(root: str | Path, groups: tuple[str, ...] = ("NOR", "HCM"), split: str = "test") -> list[RawSubject]:
    """Read an ACDC folder as published (``training/``, ``testing/`` or patient folders directly)."""
    root = Path(root)
    bad = [g for g in groups if g.upper() not in ACDC_GROUPS]
    if bad:
        raise DataError(root, f"unknown ACDC group(s) {bad}; expected from {', '.join(ACDC_GROUPS)}")
    groups = tuple(g.upper() for g in groups)
    pdirs = sorted({p.parent for p in root.rglob("Info.cfg") if re.fullmatch(r"patient\d+", p.parent.name)})
    if not pdirs:
        raise DataError(root, "no ACDC patient folders (patientNNN/Info.cfg) found")
    out = []
    for pdir in pdirs:
        info = parse_info_cfg(pdir / "Info.cfg")
        if info["Group"] not in groups:
            continue
        pid = pdir.name
        demo = {"height_cm": info["Height"], "weight_kg": info["Weight"], "age": np.nan, "sex": None,
                "bsa": bsa_mosteller(info["Height"], info["Weight"])}
        out.append(RawSubject(pid, "acdc", split, info["Group"], _frame_file(pdir, pid, info["ED"], True),
                              _frame_file(pdir, pid, info["ES"], True), demo))
    return out


# ------------------------------------------------------------------ Imperial-style
IMPERIAL_COLUMNS = ("subject", "group")


def read_imperial(root: str | Path, groups: tuple[str, ...] = ("NOR", "HCM"), split: str | None = None) -> list[RawSubject]:
    """Read the Imperial-style layout: ``subjects.csv`` plus ``subjects/<id>/seg_{ED,ES}.nii[.gz]``."""
    root = Path(root)
    table = root / "subjects.csv"
    if not table.exists():
        raise DataError(table, "subjects.csv not found (expected columns subject, group[, split, age, sex, height_cm, weight_kg])")
    df = pd.read_csv(table)
    missing = [c for c in IMPERIAL_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(table, f"missing column(s) {', '.join(missing)}")
    groups = tuple(g.upper() for g in groups)
    out = []
    for r in df.to_dict("records"):
        group = str(r["group"]).upper()
        if group not in ACDC_GROUPS:
            raise DataError(table, f"subject {r['subject']}: unknown group {r['group']!r}")
        if group not in groups:
            continue
        sdir = root / "subjects" / str(r["subject"])
        paths = []
        for ph in ("ED", "ES"):
            cands = [sdir / f"seg_{ph}.nii.gz", sdir / f"seg_{ph}.nii"]
            p = next((c for c in cands if c.exists()), None)
            if p is None:
                raise DataError(cands[0], "segmentation not found (.nii.gz or .nii)")
            paths.append(p)
        h, w = r.get("height_cm", np.nan), r.get("weight_kg", np.nan)
        demo = {"age": r.get("age", np.nan), "sex": r.get("sex"), "height_cm": h, "weight_kg": w,
                "bsa": bsa_mosteller(h, w) if pd.notna(h) and pd.notna(w) else np.nan}
        out.append(RawSubject(str(r["subject"]), "imperial", str(r.get("split", split or "unsplit")), group,
                              paths[0], paths[1], demo))
    if not out:
        raise DataError(table, f"no subject of group(s) {', '.join(groups)}")
    return out


READERS: dict[str, Callable[..., list[RawSubject]]] = {"acdc": read_acdc, "imperial": read_imperial}
