"""A fetal-skull study's record on disk, readable without the study's training and scoring code (the dashboard)."""

from __future__ import annotations

import re

STUDY_FILE = "study.json"


def slug(name: str) -> str:
    """A model name as a file name (sweep candidates are called ``EXP:best(TRIAL)``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")
