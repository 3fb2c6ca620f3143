"""What the evaluation's tables call things: the phases a per-subject table holds, and the splits' display names.

The records keep their own names in every cohort (``imperial_test``, ``acdc_test``, ``acdc_hard``); the report and
the dashboard show them through :func:`split_labels`, so both follow one rule.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

SPLIT_LABELS = {"imperial_test": "Imperial test", "acdc_test": "ACDC", "acdc_hard": "ACDC (hard)"}


def phases_of(per_subject: pd.DataFrame) -> list[str]:
    """The phases (lower case) whose Dice columns ``dice_<phase>`` the per-subject rows hold: ``ed``, ``es`` for the
    cardiac cohorts, a manifest-table cohort's own (e.g. ``mask``)."""
    return [c[len("dice_"):] for c in per_subject.columns if c.startswith("dice_")]


def split_labels(phases: Sequence[str]) -> dict[str, str]:
    """Display names of the evaluated splits for a cohort of ``phases`` (any case). The internal split is an
    Imperial-style one only in a cardiac (ED/ES) cohort: a manifest-table cohort shows it as ``test``. No phases
    (nothing scored yet) reads as the cardiac default."""
    if not phases or {p.lower() for p in phases} == {"ed", "es"}:
        return dict(SPLIT_LABELS)
    return SPLIT_LABELS | {"imperial_test": "test"}
