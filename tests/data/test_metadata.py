"""Metadata is read strictly: Info.cfg and subjects.csv, refused with file and line, and property-based checks."""

from __future__ import annotations

import math
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from shapetune.cli import app
from shapetune.data.errors import DataError
from shapetune.data.sources import ACDC_GROUPS, SPLITS, parse_info_cfg, parse_subjects_table, read_imperial

GOOD_INFO = "ED: 1\nES: 9\nGroup: HCM\nHeight: 170\nNbFrame: 30\nWeight: 70\n"

# (Info.cfg text, message the refusal must contain, line it must name)
BAD_INFO = {
    "duplicate_group": ("ED: 1\nES: 9\nGroup: HCM\nGroup: NOR\nHeight: 170\nNbFrame: 30\nWeight: 70\n",
                        "duplicate key 'Group' (first on line 3)", 4),
    "duplicate_any_case": ("ED: 1\nES: 9\nGroup: HCM\nHeight: 170\nNbFrame: 30\nWeight: 70\nheight: 150\n",
                           "duplicate key 'height'", 7),
    "ed_equals_es": ("ED: 1\nES: 1\nGroup: HCM\nHeight: 170\nNbFrame: 30\nWeight: 70\n", "is the ED frame", 2),
    "fractional_frame": ("ED: 1.7\nES: 9\nGroup: HCM\nHeight: 170\nNbFrame: 30\nWeight: 70\n",
                         "ED must be a whole frame number", 1),
    "float_frame": ("ED: 1\nES: 9.0\nGroup: HCM\nHeight: 170\nNbFrame: 30\nWeight: 70\n", "ES must be a whole", 2),
    "zero_frame": ("ED: 0\nES: 9\nGroup: HCM\nHeight: 170\nNbFrame: 30\nWeight: 70\n", "ED must be a whole", 1),
    "frame_past_nbframe": ("ED: 1\nES: 9\nGroup: HCM\nHeight: 170\nNbFrame: 8\nWeight: 70\n",
                           "ES frame 9 exceeds NbFrame 8", 2),
    "negative_height": ("ED: 1\nES: 9\nGroup: HCM\nHeight: -170\nNbFrame: 30\nWeight: 70\n",
                        "Height must be a positive number (cm)", 4),
    "nan_weight": ("ED: 1\nES: 9\nGroup: HCM\nHeight: 170\nNbFrame: 30\nWeight: nan\n",
                   "Weight must be a positive number (kg)", 6),
    "zero_weight": ("ED: 1\nES: 9\nGroup: HCM\nHeight: 170\nNbFrame: 30\nWeight: 0\n", "Weight must be a positive", 6),
    "inf_height": ("ED: 1\nES: 9\nGroup: HCM\nHeight: inf\nNbFrame: 30\nWeight: 70\n", "Height must be a positive", 4),
    "unknown_key": ("ED: 1\nES: 9\nGroup: HCM\nHeight: 170\nNbFrame: 30\nWeight: 70\nPathology: x\n",
                    "unknown key 'Pathology'", 7),
    "unknown_group": ("ED: 1\nES: 9\nGroup: XXX\nHeight: 170\nNbFrame: 30\nWeight: 70\n", "unknown Group 'XXX'", 3),
    "no_colon": ("ED: 1\nES 9\n", "expected 'Key: value'", 2),
}


@pytest.mark.parametrize("case", sorted(BAD_INFO))
def test_bad_info_cfg_is_refused_with_file_and_line(tmp_path, case):
    text, message, line = BAD_INFO[case]
    f = tmp_path / "Info.cfg"
    f.write_text(text)
    with pytest.raises(DataError) as err:
        parse_info_cfg(f)
    assert str(err.value).startswith(f"{f}: line {line}: ") and message in str(err.value)


def test_good_info_cfg(tmp_path):
    f = tmp_path / "Info.cfg"
    f.write_text(GOOD_INFO)
    assert parse_info_cfg(f) == {"ED": 1, "ES": 9, "Group": "HCM", "Height": 170.0, "Weight": 70.0, "NbFrame": 30}


def test_cli_names_file_and_line_of_a_duplicate_key(acdc_copy, tmp_path):
    cfg = acdc_copy / "patient021" / "Info.cfg"
    lines = cfg.read_text().splitlines()
    lines.insert(3, "Group: NOR")  # an HCM patient with a second Group line
    cfg.write_text("\n".join(lines) + "\n")
    res = CliRunner().invoke(app, ["data", "prepare", str(acdc_copy), "--format", "acdc", "--out",
                                   str(tmp_path / "p"), "--grid", "32", "--spacing", "4", "--workers", "1"])
    assert res.exit_code == 2
    assert f"error: {cfg}: line 4: duplicate key 'Group' (first on line 3)" in " ".join(res.output.split())


# ---------------------------------------------------------------- Info.cfg properties
FRAMES = st.integers(1, 60)


@st.composite
def info_files(draw):
    """A well-formed Info.cfg: (values, text); keys in any order and case, any spacing, blank lines."""
    nb = draw(st.integers(2, 60))
    ed = draw(st.integers(1, nb))
    es = draw(st.integers(1, nb).filter(lambda x: x != ed))
    positive = st.floats(min_value=0.01, max_value=500, allow_nan=False, allow_infinity=False)
    values = {"ED": ed, "ES": es, "Group": draw(st.sampled_from(ACDC_GROUPS)), "Height": draw(positive),
              "Weight": draw(positive), "NbFrame": nb}
    keys = draw(st.permutations(list(values)))
    space = st.sampled_from(["", " ", "  ", "\t"])
    lines = []
    for k in keys:
        name = draw(st.sampled_from([k, k.lower(), k.upper()]))
        group_case = draw(st.sampled_from([str.lower, str.upper, str.title]))
        v = group_case(values[k]) if k == "Group" else repr(values[k])
        lines += [""] * draw(st.integers(0, 1))
        lines.append(f"{draw(space)}{name}{draw(space)}:{draw(space)}{v}{draw(space)}")
    return values, lines


def _parse_lines(lines: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "Info.cfg"
        f.write_text("\n".join(lines) + "\n")
        return parse_info_cfg(f)


def _refusal(lines: list[str]) -> str:
    with pytest.raises(DataError) as err:
        _parse_lines(lines)
    return err.value.problem


@settings(max_examples=150, deadline=None)
@given(info_files())
def test_any_well_formed_info_cfg_round_trips(case):
    values, lines = case
    assert _parse_lines(lines) == values


@settings(max_examples=100, deadline=None)
@given(info_files(), st.data())
def test_any_duplicated_key_is_refused_with_its_line(case, data):
    _, lines = case
    content = [i for i, line in enumerate(lines) if line.strip()]
    src = data.draw(st.sampled_from(content))
    at = data.draw(st.integers(src + 1, len(lines)))
    key = lines[src].split(":")[0].strip()
    dup = lines[:at] + [f"{key}: {data.draw(st.sampled_from(['1', '2', 'NOR', '70.5']))}"] + lines[at:]
    first = src + 1
    assert re.fullmatch(rf"line {at + 1}: duplicate key '{re.escape(key)}' \(first on line {first}\)",
                        _refusal(dup))


NON_INTEGER_FRAMES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).filter(lambda x: not (math.isfinite(x) and x == int(x) and x >= 1))
    .map(repr),
    st.floats(min_value=1, max_value=60).filter(lambda x: x == int(x)).map(lambda x: f"{x:.1f}"),  # "3.0"
    st.integers(-50, 0).map(str),
    st.text(alphabet="abc xyz-+.,", min_size=0, max_size=6).filter(lambda s: not s.strip().isdigit()))


@settings(max_examples=150, deadline=None)
@given(info_files(), st.sampled_from(["ED", "ES", "NbFrame"]), NON_INTEGER_FRAMES)
def test_any_non_integer_frame_is_refused_with_its_line(case, key, bad):
    _, lines = case
    i = next(i for i, line in enumerate(lines) if line.split(":")[0].strip().lower() == key.lower())
    lines = lines.copy()
    lines[i] = f"{key}: {bad}"
    problem = _refusal(lines)
    assert problem.startswith(f"line {i + 1}: {key} must be a whole frame number >= 1"), problem


NON_POSITIVE = st.one_of(st.floats(max_value=0.0).map(repr), st.just("nan"), st.just("inf"), st.just("-inf"),
                         st.just(""), st.just("tall"))


@settings(max_examples=150, deadline=None)
@given(info_files(), st.sampled_from(["Height", "Weight"]), NON_POSITIVE)
def test_any_non_positive_height_or_weight_is_refused_with_its_line(case, key, bad):
    _, lines = case
    i = next(i for i, line in enumerate(lines) if line.split(":")[0].strip().lower() == key.lower())
    lines = lines.copy()
    lines[i] = f"{key}: {bad}"
    problem = _refusal(lines)
    assert problem.startswith(f"line {i + 1}: {key} must be a positive number"), problem


# ---------------------------------------------------------------- subjects.csv
HEADER = "subject,split,group,age,sex,height_cm,weight_kg\n"
BAD_TABLES = {
    "empty_file": ("", "empty file"),
    "blank_lines_only": ("\n\n", "empty file"),
    "header_only": (HEADER, "no subjects listed"),
    "split_typo": (HEADER + "A,train,NOR,40,M,170,70\nB,trian,HCM,50,F,160,60\n",
                   "line 3: subject B: unknown split 'trian'"),
    "duplicate_id": (HEADER + "A,train,NOR,40,M,170,70\nB,val,HCM,50,F,160,60\nA,test,HCM,50,F,160,60\n",
                     "line 4: duplicate subject 'A' (first on line 2)"),
    "dotdot_id": (HEADER + "../A,train,NOR,40,M,170,70\n", "line 2: subject id '../A' is not a plain folder name"),
    "absolute_id": (HEADER + "/etc,train,NOR,40,M,170,70\n", "line 2: subject id '/etc' is not a plain folder"),
    "nested_id": (HEADER + "a/b,train,NOR,40,M,170,70\n", "line 2: subject id 'a/b' is not a plain folder"),
    "parent_id": (HEADER + "..,train,NOR,40,M,170,70\n", "line 2: subject id '..' is not a plain folder"),
    "negative_height": (HEADER + "A,train,NOR,40,M,-170,70\n", "line 2: height_cm must be a positive number"),
    "nan_weight": (HEADER + "A,train,NOR,40,M,170,nan\n", "line 2: weight_kg must be a positive number"),
    "unknown_group": (HEADER + "A,train,XYZ,40,M,170,70\n", "line 2: subject A: unknown group 'XYZ'"),
    "bad_sex": (HEADER + "A,train,NOR,40,yes,170,70\n", "line 2: subject A: sex must be M, F or empty"),
    "unknown_column": ("subject,group,label\nA,NOR,1\n", "unknown column(s) 'label'"),
    "missing_column": ("subject,split\nA,train\n", "missing column(s) group"),
    "ragged_row": (HEADER + "A,train,NOR\n", "line 2: 3 field(s), the header has 7"),
    "blank_line_keeps_numbering": (HEADER + "A,train,NOR,40,M,170,70\n\nB,tset,NOR,40,M,170,70\n",
                                   "line 4: subject B: unknown split 'tset'"),
}


@pytest.mark.parametrize("case", sorted(BAD_TABLES))
def test_bad_subjects_table_is_refused_with_file_and_line(tmp_path, case):
    text, message = BAD_TABLES[case]
    (tmp_path / "subjects.csv").write_text(text)
    with pytest.raises(DataError) as err:
        read_imperial(tmp_path)
    assert str(err.value).startswith(f"{tmp_path / 'subjects.csv'}: ") and message in str(err.value)


IDS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,10}", fullmatch=True)
OPTIONAL_NUMBER = st.one_of(st.just(math.nan), st.floats(min_value=0.5, max_value=300, allow_nan=False))


@st.composite
def subject_tables(draw):
    """Rows (subject, split, group, age, sex, height, weight) with unique safe ids, and the CSV text."""
    ids = draw(st.lists(IDS, min_size=1, max_size=12, unique=True))
    rows = [(sid, draw(st.sampled_from(SPLITS)), draw(st.sampled_from(ACDC_GROUPS)),
             draw(st.one_of(st.just(math.nan), st.floats(0, 110, allow_nan=False))),
             draw(st.sampled_from([None, "M", "F"])), draw(OPTIONAL_NUMBER), draw(OPTIONAL_NUMBER)) for sid in ids]

    def cell(v):
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else (repr(v) if isinstance(v, float) else v)

    text = HEADER + "".join(",".join(cell(v) for v in r) + "\n" for r in rows)
    return rows, text


def _write_table(text: str):
    d = tempfile.TemporaryDirectory()
    path = Path(d.name) / "subjects.csv"
    path.write_text(text)
    return d, path


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(subject_tables())
def test_any_well_formed_subjects_table_round_trips(case):
    rows, text = case
    d, path = _write_table(text)
    with d:
        parsed, skipped = parse_subjects_table(path)
    assert not skipped and len(parsed) == len(rows)
    for p, (sid, split, group, age, sex, h, w) in zip(parsed, rows, strict=True):
        assert (p.subject, p.split, p.group, p.sex) == (sid, split, group, sex)
        assert _same(p.age, age) and _same(p.height_cm, h) and _same(p.weight_kg, w)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(subject_tables(), st.data())
def test_any_duplicate_subject_is_refused_with_its_line(case, data):
    rows, text = case
    lines = text.splitlines()
    src = data.draw(st.integers(1, len(lines) - 1))
    at = data.draw(st.integers(src + 1, len(lines)))
    lines.insert(at, lines[src])
    d, path = _write_table("\n".join(lines) + "\n")
    with d, pytest.raises(DataError) as err:
        parse_subjects_table(path, skip_bad=True)  # ambiguous even when bad rows may be skipped
    sid = lines[src].split(",")[0]
    assert err.value.problem == f"line {at + 1}: duplicate subject {sid!r} (first on line {src + 1})"


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(subject_tables(), st.data(), st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=6))
def test_any_unknown_split_is_refused_with_its_line_or_listed_with_skip_bad(case, data, bad):
    if bad in SPLITS:
        bad += "x"
    rows, text = case
    lines = text.splitlines()
    i = data.draw(st.integers(1, len(lines) - 1))
    cells = lines[i].split(",")
    cells[1] = bad
    lines[i] = ",".join(cells)
    d, path = _write_table("\n".join(lines) + "\n")
    with d:
        with pytest.raises(DataError) as err:
            parse_subjects_table(path)
        parsed, skipped = parse_subjects_table(path, skip_bad=True)
    assert err.value.problem.startswith(f"line {i + 1}: subject {cells[0]}: unknown split {bad!r}")
    assert [s["subject"] for s in skipped] == [cells[0]] and len(parsed) == len(rows) - 1
