"""Outputs are published in one step, checked on open, and never written into folders ShapeTune did not make."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from shapetune.cli import app
from shapetune.data.cohorts import SynthConfig, synth_imperial
from shapetune.data.dataset import PreparedDataset
from shapetune.data.errors import DataError
from shapetune.data.fetal.prepare import prepare_fetal
from shapetune.data.prepare import prepare
from shapetune.data.template import TemplateGrid

runner = CliRunner()
GRID = TemplateGrid.cube(16, 8.0)


def _one_line(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A 4-subject Imperial-style cohort and two datasets of it: A (HCM only, 2 subjects) and B (all 4)."""
    root = tmp_path_factory.mktemp("small")
    synth_imperial(root / "raw", SynthConfig(seed=4, grid=16, spacing=8.0), split=(("train", 1, 1), ("val", 1, 1)),
                   workers=1, quiet=True)
    prepare(root / "raw", "imperial", root / "A", GRID, groups=("HCM",), workers=1, quiet=True)
    prepare(root / "raw", "imperial", root / "B", GRID, workers=1, quiet=True)
    return root


def _siblings(out):
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


# ---------------------------------------------------------------- a run killed between publishing steps
KILLER = textwrap.dedent("""
    import os, sys
    kill_at, calls = int(os.environ["KILL_AT"]), [0]

    def counting(real):
        def rename(a, b, *args, **kw):
            calls[0] += 1
            if calls[0] == kill_at:
                os._exit(9)  # as abrupt as SIGKILL: no cleanup, no finally
            return real(a, b, *args, **kw)
        return rename

    os.rename, os.replace = counting(os.rename), counting(os.replace)
    kind, src, out, grid = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    if kind == "cardiac":
        from shapetune.data.prepare import prepare
        from shapetune.data.template import TemplateGrid
        prepare(src, "imperial", out, TemplateGrid.cube(grid, 128.0 / grid), workers=1, quiet=True)
    else:
        from shapetune.data.fetal.prepare import prepare_fetal
        prepare_fetal(src, out, grid, workers=1, quiet=True)
    print("renames", calls[0])
""")


def _prepare_again(kind, src, out, grid):
    if kind == "cardiac":
        return prepare(src, "imperial", out, TemplateGrid.cube(grid, 128.0 / grid), workers=1, quiet=True).n_subjects
    return prepare_fetal(src, out, grid, workers=1, quiet=True)


@pytest.mark.parametrize("kind", ["cardiac", "fetal"])
@pytest.mark.parametrize("kill_at", [1, 2, 3])
def test_killed_publish_never_leaves_a_folder_that_opens_as_complete(small, fetal_raw, tmp_path, kind, kill_at):
    """Kill the run at its 1st (old aside), 2nd (new in) or 3rd (user file moved over) rename."""
    out = tmp_path / "ds"
    if kind == "cardiac":  # old: 2 subjects (HCM only); new: 4 subjects
        src, old_n, new_n, grid = small / "raw", 2, 4, 16
        shutil.copytree(small / "A", out)
    else:  # old: 15 subjects at 24^3; new: 15 subjects at 16^3
        src, old_n, new_n, grid = fetal_raw, 15, 15, 16
        prepare_fetal(fetal_raw, out, 24, workers=1, quiet=True)
    (out / "notes.txt").write_text("the user's own file")
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    proc = subprocess.run([sys.executable, str(script), kind, str(src), str(out), str(grid)], capture_output=True,
                          text=True, env={**os.environ, "KILL_AT": str(kill_at)}, timeout=300)
    assert proc.returncode == 9, proc.stdout + proc.stderr
    if out.exists():  # whatever is there is one complete dataset, the old or the new one
        ds = PreparedDataset(out)
        assert (len(ds), ds.grid.shape[0]) in {(old_n, 16 if kind == "cardiac" else 24), (new_n, 16)}
        assert ds.masks.shape[0] == len(ds.manifest) == ds.meta["n_subjects"]
    expected_state = {1: "old", 2: "missing", 3: "new"}[kill_at]
    state = "missing" if not out.exists() else ("new" if PreparedDataset(out).grid.shape[0] == grid
                                                 and len(PreparedDataset(out)) == new_n else "old")
    assert state == expected_state
    assert _prepare_again(kind, src, out, grid) == new_n  # the next run recovers and completes
    ds = PreparedDataset(out)
    assert len(ds) == new_n and ds.grid.shape[0] == grid and ds.masks.shape[0] == new_n
    assert (out / "notes.txt").read_text() == "the user's own file"  # never lost, never left aside
    assert _siblings(out) == []


# ---------------------------------------------------------------- a folder mixed from two preparations
def _mix(small, out, from_a: tuple[str, ...] = (), missing: tuple[str, ...] = (), legacy: bool = False):
    shutil.copytree(small / "B", out)
    for name in from_a:
        shutil.copy(small / "A" / name, out / name)
    for name in missing:
        (out / name).unlink()
    if legacy:  # a dataset.json written before files/dataset_id were recorded
        meta = json.loads((out / "dataset.json").read_text())
        for k in ("files", "dataset_id"):
            meta.pop(k)
        (out / "dataset.json").write_text(json.dumps(meta))


TORN = {  # the states the old one-file-at-a-time publishing could leave, and similar damage
    "dataset_json_of_the_previous_run": dict(from_a=("dataset.json",)),
    "legacy_dataset_json_of_the_previous_run": dict(from_a=("dataset.json",), legacy=True),
    "masks_of_the_previous_run": dict(from_a=("masks.npy",)),
    "manifest_of_the_previous_run": dict(from_a=("manifest.parquet",)),
    "legacy_manifest_of_the_previous_run": dict(from_a=("manifest.parquet",), legacy=True),
    "masks_missing": dict(missing=("masks.npy",)),
    "manifest_missing": dict(missing=("manifest.parquet",)),
}


@pytest.mark.parametrize("case", sorted(TORN))
def test_mixed_or_incomplete_dataset_is_refused_and_never_up_to_date(small, tmp_path, case):
    out = tmp_path / "ds"
    _mix(small, out, **TORN[case])
    with pytest.raises(DataError, match=r"re-run `shapetune data prepare`"):
        PreparedDataset(out)
    meta = json.loads((out / "dataset.json").read_text())
    groups = tuple(meta["settings"]["groups"])  # the inputs dataset.json claims: its fingerprint matches them
    rep = prepare(small / "raw", "imperial", out, GRID, groups=groups, workers=1, quiet=True)
    assert not rep.up_to_date
    ds = PreparedDataset(out)
    assert len(ds) == ds.masks.shape[0] == rep.n_subjects == (2 if groups == ("HCM",) else 4)


def test_truncated_masks_are_refused(small, tmp_path):
    out = tmp_path / "ds"
    shutil.copytree(small / "B", out)
    data = (out / "masks.npy").read_bytes()
    (out / "masks.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"masks.npy: \d+ bytes, but dataset.json records \d+"):
        PreparedDataset(out)


# ---------------------------------------------------------------- --out
def _file(p):
    p.write_text("mine")
    return p


def _under_a_file(p):
    _file(p.parent / "afile")
    return p.parent / "afile" / "sub"


def _foreign(p):
    p.mkdir()
    (p / "notes.txt").write_text("mine")
    return p


def _nnunet(p):
    p.mkdir()
    (p / "dataset.json").write_text(json.dumps({"name": "Task01", "labels": {"background": 0}}))
    return p


def _link(p):
    _foreign(p.parent / "real")
    p.symlink_to(p.parent / "real", target_is_directory=True)
    return p


BAD_OUT = {
    "symlink": (_link, "is a symbolic link"),
    "existing_file": (_file, "exists and is a file, not a folder"),
    "under_a_file": (_under_a_file, "cannot create a folder here"),
    "foreign_folder": (_foreign, "is a non-empty folder that is not a"),
    "other_tools_dataset_json": (_nnunet, "is a non-empty folder that is not a"),
}


def _snapshot(p):
    if p.is_file():
        return p.read_bytes()
    return {q.name: q.read_bytes() for q in p.iterdir()} if p.is_dir() else None


@pytest.mark.parametrize("command", ["prepare", "synth"])
@pytest.mark.parametrize("case", sorted(BAD_OUT))
def test_bad_out_is_refused_and_left_alone(small, tmp_path, command, case):
    make, message = BAD_OUT[case]
    out = make(tmp_path / "out")
    before = _snapshot(out)
    args = (["data", "prepare", str(small / "raw"), "--format", "imperial", "--grid", "16", "--spacing", "8"]
            if command == "prepare" else ["data", "synth", "--cohort", "acdc", "--n-per-group", "1"])
    res = runner.invoke(app, [*args, "--out", str(out), "--workers", "1"])
    assert res.exit_code == 2, res.output
    assert f"error: {out}: " in _one_line(res.output) and message in _one_line(res.output)
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_out_is_refused(small, tmp_path):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        res = runner.invoke(app, ["data", "prepare", str(small / "raw"), "--format", "imperial", "--grid", "16",
                                  "--spacing", "8", "--out", str(parent / "x")])
        assert res.exit_code == 2 and "not writable" in res.output
    finally:
        parent.chmod(0o700)


def test_out_on_a_read_only_file_system_is_a_clear_error(small):
    res = runner.invoke(app, ["data", "prepare", str(small / "raw"), "--format", "imperial", "--grid", "16",
                              "--spacing", "8", "--out", "/proc/shapetune-out"])
    assert res.exit_code == 2 and "error: /proc/shapetune-out: " in _one_line(res.output)
    assert "Traceback" not in res.output


def test_prepare_refuses_to_replace_the_source_cohort(small, tmp_path):
    src = tmp_path / "raw"
    shutil.copytree(small / "raw", src)
    with pytest.raises(DataError, match="is a non-empty folder that is not a prepared dataset"):
        prepare(src, "imperial", src, GRID, workers=1, quiet=True)
    assert (src / "cohort.json").exists()


def test_empty_out_folder_and_own_output_are_used(small, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    assert prepare(small / "raw", "imperial", out, GRID, groups=("HCM",), workers=1, quiet=True).n_subjects == 2
    (out / "figures").mkdir()
    (out / "figures" / "mine.png").write_bytes(b"png")
    rep = prepare(small / "raw", "imperial", out, GRID, workers=1, quiet=True)  # changed settings: replaced
    assert rep.n_subjects == 4 and not rep.up_to_date
    assert (out / "figures" / "mine.png").read_bytes() == b"png"  # what we did not write is kept
    assert prepare(small / "raw", "imperial", out, GRID, workers=1, quiet=True).up_to_date


def test_synth_replaces_its_own_cohort_without_leftovers(tmp_path):
    out = tmp_path / "acdc"
    runner.invoke(app, ["data", "synth", "--cohort", "acdc", "--out", str(out), "--n-per-group", "2", "--workers", "1"])
    (out / "README.txt").write_text("the user's notes")
    res = runner.invoke(app, ["data", "synth", "--cohort", "acdc", "--out", str(out), "--n-per-group", "1",
                              "--workers", "1"])
    assert res.exit_code == 0, res.output
    # patients 022 and 062 of the old cohort would otherwise be prepared as if they belonged to the new one
    assert sorted(p.name for p in out.glob("patient*")) == ["patient021", "patient061"]
    assert (out / "README.txt").read_text() == "the user's notes"


# ---------------------------------------------------------------- datasets without subjects
def _legacy_empty_dataset(small, out):
    """What the old code wrote when every subject was skipped: 0 rows everywhere."""
    out.mkdir()
    np.save(out / "masks.npy", np.zeros((0, 2, 16, 16, 16), np.uint8))
    pd.DataFrame({"index": pd.Series([], dtype=int)}).to_parquet(out / "manifest.parquet", index=False)
    meta = json.loads((small / "B" / "dataset.json").read_text())
    for k in ("files", "dataset_id"):
        meta.pop(k)
    meta.update(n_subjects=0, skipped=[{"subject": "IMP0001", "file": "x", "problem": "y"}])
    (out / "dataset.json").write_text(json.dumps(meta))


def test_zero_subject_dataset_is_a_clear_error(small, tmp_path):
    out = tmp_path / "empty"
    _legacy_empty_dataset(small, out)
    res = runner.invoke(app, ["data", "show", str(out)])
    assert (res.exit_code == 2
            and f"error: {out / 'dataset.json'}: the dataset holds 0 subjects" in _one_line(res.output))
    from shapetune.training.tasks.cardiac import load_training_data

    with pytest.raises(DataError, match="holds 0 subjects"):
        load_training_data(str(out), 16)


def test_empty_split_is_a_clear_error(small):
    ds = PreparedDataset(small / "B")
    assert len(ds.split("train")) == 2
    with pytest.raises(DataError, match=r"no subjects in split 'tset'; this dataset has train \(2\), val \(2\)"):
        ds.split("tset")
