"""What an evaluation scores: a sweep's trials (its best, all, or ids) and extra checkpoints by path."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from shapetune import storage
from shapetune.errors import ShapeTuneError
from shapetune.experiment.checkpoints import BEST_DIR, CHECKPOINT_FILE, best_checkpoint
from shapetune.experiment.settings import frozen_space, load_settings, trial_run_dir
from shapetune.experiment.table import load_summary
from shapetune.serving.export import choose


class EvaluationError(ShapeTuneError):
    """Bad evaluation request (unknown split or trial, missing ACDC folder, grid mismatch)."""


@dataclass
class Candidate:
    name: str
    checkpoint: Path | None = None  # None for baselines
    baseline: str | None = None
    key: str = ""
    trial_id: str | None = None  # the sweep trial it comes from


def checkpoint_dir(path: Path) -> Path:
    """A checkpoint folder, or the best checkpoint of a run folder (``checkpoint_best``, or the one a
    ``shapetune train`` run names in its ``summary.json``)."""
    for cand in (path, path / BEST_DIR):
        if (cand / CHECKPOINT_FILE).exists():
            return cand
    summary = path / "summary.json"
    if summary.exists():
        best = Path(json.loads(summary.read_text()).get("best_checkpoint", ""))
        for cand in (best, path / best.name):  # the run folder may have moved since it was written
            if best.name and (cand / CHECKPOINT_FILE).exists():
                return cand
    raise EvaluationError(f"{path}: no {CHECKPOINT_FILE} here, in {BEST_DIR}/, or named by summary.json")


def candidates(exp_dir: Path, trials: str = "best", extra: list[str] | tuple = ()) -> list[Candidate]:
    """The checkpoints to evaluate: the sweep's best, all trials, or listed trial ids, plus ``NAME=DIR`` extras."""
    out: list[Candidate] = []
    if trials:
        settings = load_settings(exp_dir.parent, exp_dir.name)
        obj = frozen_space(settings).objectives[0]
        table = load_summary(exp_dir)
        if trials == "best":
            c = choose(exp_dir)
            out.append(Candidate(f"{exp_dir.name}:best({c.trial_id})", c.checkpoint, trial_id=c.trial_id))
        else:
            ids = list(table.trial_id) if trials == "all" else [t.strip() for t in trials.split(",") if t.strip()]
            unknown = sorted(set(ids) - set(table.trial_id))
            if unknown:
                raise EvaluationError(f"{exp_dir}: no trial(s) {unknown}; known: {', '.join(table.trial_id)}")
            for _, row in table[table.trial_id.isin(ids)].iterrows():
                ck = best_checkpoint(trial_run_dir(exp_dir, row.trial_id, settings.workers_per_trial), obj.metric,
                                     obj.mode)
                if ck is not None:
                    out.append(Candidate(f"{exp_dir.name}:{row.trial_id}", ck, trial_id=row.trial_id))
    for item in extra:
        name, _, path = item.partition("=")
        if not path:
            raise EvaluationError(f"extra candidate {item!r} must look like NAME=CHECKPOINT_OR_RUN_DIR")
        out.append(Candidate(name, checkpoint_dir(storage.local_copy(path))))  # a run in a bucket: its mirror
    return out
