"""The GPU benchmark scripts run end to end on the CPU (``--smoke``: the same steps, tiny), so they still run when
a GPU is next lent: the first lease found gpu_check broken twice (a 96^3 config the validation refuses, a changed
helper's signature), neither of which a CPU run had caught."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(tmp_path: Path, *cmd: str) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path / "out"
    out.mkdir()
    # Results go to tmp_path (the recorded ones under benchmarks/results stay as they are); OUT as on the device.
    env = {**os.environ, "PY": sys.executable, "OUT": str(out), "SHAPETUNE_BENCH_RESULTS": str(tmp_path / "results"),
           "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT / 'benchmarks'}"}
    return subprocess.run(list(cmd), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600), out


def test_gpu_check_smoke_measures_every_part_and_writes_to_out(tmp_path):
    r, out = _run(tmp_path, "bash", "benchmarks/gpu_check.sh", "--smoke")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rows = json.loads((out / "gpu_check_smoke.json").read_text())
    assert rows == json.loads((tmp_path / "results" / "gpu_check_smoke.json").read_text())
    assert [x for x in rows if "error" in x] == []
    steps = [x for x in rows if x["part"] == "throughput"]
    # fp32/bf16 x channels-last off/on with cuDNN's default kernels, then the fastest again with the other two.
    assert {(x["amp"], x["channels_last"]) for x in steps if x["kernels"] == "default"} == \
        {("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)}
    assert sorted(x["kernels"] for x in steps) == ["benchmark", "default", "default", "default", "default",
                                                   "deterministic"]
    assert all(x["samples_per_s"] > 0 for x in steps)
    pca, lvae = [x for x in rows if x["part"] == "quality"]
    assert pca["model"] == "PCA(50)+LR" and 0.5 < pca["dice_ed"] <= 1
    assert lvae["epochs"] == 2 and {"vs_pca_ed_p", "vs_pca_es_median"} <= set(lvae)
    assert [x["subjects"] for x in rows if x["part"] == "scoring"] == [lvae["n"]]
    assert "gpu_check on CPU" in (out / "gpu_check.log").read_text()
    assert not (ROOT / "benchmarks" / "results" / "gpu_check_smoke.json").exists()


def test_gpu_step_smoke_measures_batches_and_the_loop(tmp_path):
    """Its compile part (the same two functions with the config's ``compile``) is left out: inductor takes 70 s
    to compile the lvae on this CPU; tests/models/test_options.py checks the compiled path itself."""
    r, out = _run(tmp_path, sys.executable, "benchmarks/gpu_step.py", "--smoke", "--parts", "step,loop")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rows = json.loads((out / "gpu_step_smoke.json").read_text())
    assert [x for x in rows if "error" in x] == []
    assert [(x["batch"], x["compile_s"]) for x in rows if x["part"] == "step"] == [(2, None), (4, None)]
    loops = [x for x in rows if x["part"] == "loop"]
    assert [(x["batch"], x["augment"]) for x in loops] == [(2, True), (2, False), (4, True), (4, False)]
    assert all(x["samples_per_s"] > 0 and x["plain_checkpoint_keys"] for x in loops)
