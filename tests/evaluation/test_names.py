"""The splits' display names: one rule for the report and the dashboard."""

from __future__ import annotations

import pandas as pd
import pytest

from shapetune.dashboard.experiments import split_labels as dashboard_labels
from shapetune.evaluation.names import phases_of, split_labels
from shapetune.evaluation.report import seed_table


@pytest.mark.parametrize("phases,internal", [
    (["ed", "es"], "Imperial test"),
    (["ED", "ES"], "Imperial test"),  # the summary's upper-case phases
    ([], "Imperial test"),  # nothing scored yet: the cardiac default
    (["mask"], "test"),  # a one-phase manifest-table cohort
    (["ed"], "test"),  # one of the two cardiac phases is not a cardiac cohort
    (["pre", "post"], "test"),
])
def test_the_internal_split_is_imperial_only_in_a_cardiac_cohort(phases, internal):
    labels = split_labels(phases)
    assert labels["imperial_test"] == internal
    assert (labels["acdc_test"], labels["acdc_hard"]) == ("ACDC", "ACDC (hard)")  # named alike in every cohort


@pytest.mark.parametrize("phases", [["ed", "es"], ["mask"]])
def test_report_and_dashboard_name_the_internal_split_alike(phases):
    per_subject = pd.DataFrame({"model": ["m"] * 2, "split": ["imperial_test"] * 2,
                                **{f"dice_{p}": [0.9, 0.8] for p in phases}})
    summary = pd.DataFrame([{"model": "m", "split": "imperial_test", "metric": "dice", "phase": p.upper(),
                             "mean": 0.85, "sd": 0.05, "lo": 0.8, "hi": 0.9} for p in phases]
                           + [{"model": "m", "split": "imperial_test", "metric": "accuracy", "phase": "",
                               "mean": 1.0, "sd": 0.0, "lo": 0.9, "hi": 1.0}])
    assert phases_of(per_subject) == phases
    name = dashboard_labels(per_subject)["imperial_test"]
    header = seed_table(summary, ["m"]).splitlines()[0]
    assert f"acc {name} [95 % CI]" in header
