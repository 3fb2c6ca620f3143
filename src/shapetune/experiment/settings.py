"""A sweep's settings (``sweep.json``) and what follows from them: where it lives, its frozen search space."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shapetune import storage
from shapetune.config import ConfigError, parse_overrides
from shapetune.search_spaces import load_space, parse_space
from shapetune.search_spaces.samplers import check_sampler
from shapetune.search_spaces.schedulers import check_scheduler
from shapetune.search_spaces.sampling import base_config
from shapetune.search_spaces.spec import SearchSpace, check_space, config_field_exists, unknown_field
from shapetune.experiment.tracking import check_tracking

SETTINGS_FILE = "sweep.json"
SPACE_FILE = "space.yaml"
SUMMARY_FILE = "trials.parquet"


class SweepSettings(BaseModel):
    """Everything a sweep needs; persisted in the experiment directory for ``--resume``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    space: str
    data: str
    trials: int = Field(8, ge=1)
    concurrency: int = Field(1, ge=1)
    storage_path: str
    optuna_storage: str | None = None  # SQLAlchemy URL; default SQLite in the experiment directory
    workers_per_trial: int = Field(1, ge=1)
    cpus_per_worker: float | None = Field(None, gt=0, description="None: the node's CPUs / concurrency, fixed "
                                                                  "when the sweep starts.")
    gpus_per_worker: float = Field(0.0, ge=0)
    scheduler: str | None = Field(None, description="A scheduler of search_spaces.schedulers.SCHEDULERS.")
    sampler: str | None = Field(None, description="A sampler of search_spaces.samplers.SAMPLERS.")
    grace_period: int | None = Field(None, ge=1, description="ASHA grace period (default: the space's).")
    seed: int = 0
    overrides: list[str] = Field(default_factory=list)
    max_failures: int = Field(1, ge=0, description="Retries of a failed trial before it is recorded as failed.")
    time_budget_s: float | None = None
    evaluate: bool = Field(False, description="Score each finished trial on the test split as soon as it ends.")
    tracking: str | None = Field(None, description="BACKEND=TARGET, e.g. mlflow=sqlite:///mlflow.db: a parent run "
                                                   "for the sweep, a nested run per trial (experiment.tracking).")

    @field_validator("storage_path", "data")
    @classmethod
    def _location(cls, v: str) -> str:
        if storage.is_uri(v) and not v.split("://", 1)[1].strip("/"):
            raise ValueError(f"{v!r}: a URI needs a bucket and a path")
        return v

    @field_validator("tracking")
    @classmethod
    def _tracking(cls, v: str | None) -> str | None:
        return None if v is None else check_tracking(v)

    @field_validator("scheduler")
    @classmethod
    def _scheduler(cls, v: str | None) -> str | None:
        return None if v is None else check_scheduler(v)

    @field_validator("sampler")
    @classmethod
    def _sampler(cls, v: str | None) -> str | None:
        return None if v is None else check_sampler(v)

    @property
    def remote(self) -> bool:
        """Results go to a storage URI rather than a local (or NFS) folder."""
        return storage.is_uri(self.storage_path)

    @property
    def exp_location(self) -> str:
        """The experiment's home: ``STORAGE/NAME`` as a URI or an absolute path."""
        if self.remote:
            return storage.join(self.storage_path, self.name)
        return str(Path(self.storage_path).resolve() / self.name)

    @property
    def exp_dir(self) -> Path:
        """The experiment folder on this machine: itself, or the local mirror of a URI."""
        return storage.mirror_path(self.exp_location) if self.remote else Path(self.exp_location)


def local_experiment(location: str | Path) -> Path:
    """An experiment folder on this machine: the folder itself, or a fresh mirror of an experiment at a URI."""
    if storage.is_uri(location):
        if not storage.exists(storage.join(location, SETTINGS_FILE)):
            raise ConfigError(f"{location}: no such experiment (no {SETTINGS_FILE})")
        return storage.local_copy(location)
    return Path(location).resolve()


def data_dir(settings: SweepSettings) -> Path:
    """The sweep's prepared dataset on this machine (a URI is mirrored into the cache first)."""
    return storage.local_copy(settings.data)


def frozen_space(settings: SweepSettings) -> SearchSpace:
    """The sweep's space (the copy in the experiment directory once started) with CLI overrides in ``fixed``."""
    copy = settings.exp_dir / SPACE_FILE
    space = parse_space(copy.read_text(), str(copy)) if copy.exists() else load_space(settings.space)
    fixed = {**space.fixed, **parse_overrides(settings.overrides)}
    for key in fixed:
        if not config_field_exists(key):
            raise ConfigError(f"override {key!r}: {unknown_field(key)}")
    space = space.model_copy(update={"fixed": fixed})
    if settings.overrides:
        check_space(space)  # the overrides meet the same checks as the space file's own values
    return space


def max_epochs(space: SearchSpace) -> int:
    """The most epochs a trial of ``space`` trains (the largest searched value, else the fixed one)."""
    p = space.params.get("optim.epochs")
    if p is not None:
        if p.choices:
            return int(max(p.choices))
        assert p.high is not None  # a numeric parameter has bounds (checked when the space is parsed)
        return int(p.high)
    return base_config(space).optim.epochs


def read_settings(exp_dir: Path) -> SweepSettings:
    """The settings in an experiment folder on this machine."""
    f = exp_dir / SETTINGS_FILE
    try:
        return SweepSettings.model_validate_json(f.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{f}: missing; {exp_dir} is not a ShapeTune experiment") from None
    except ValueError as exc:  # pydantic's message names the field; the path names the file
        raise ConfigError(f"{f}: unreadable sweep settings ({exc})") from exc


def load_settings(storage_path: str | Path, name: str) -> SweepSettings:
    """Settings of an existing experiment (a local folder or a URI)."""
    f = storage.join(storage.normalise(storage_path), name, SETTINGS_FILE)
    if not storage.exists(f):
        raise ConfigError(f"{f}: no sweep named {name!r} under {storage_path}")
    try:
        return SweepSettings.model_validate_json(storage.read_text(f))
    except ValueError as exc:
        raise ConfigError(f"{f}: unreadable sweep settings ({exc})") from exc


def trial_location(exp: str | Path, trial_id: str, workers: int) -> str:
    """Where a trial keeps its checkpoints (a path or a URI): its own folder (1 worker) or its nested Train
    run (several)."""
    return storage.join(exp, "trials" if workers == 1 else "train_runs", trial_id)


def trial_run_dir(exp: str | Path, trial_id: str, workers: int) -> Path:
    """:func:`trial_location` in a local experiment folder (or a local mirror of a remote one)."""
    return Path(trial_location(exp, trial_id, workers))
