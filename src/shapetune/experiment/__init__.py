"""The on-disk record of a sweep, read without Ray or torch.

An experiment folder holds ShapeTune's own, non-executable records: ``sweep.json`` (settings), ``space.yaml``,
``records/TRIAL_ID.json`` (each trial's parameters, status and per-epoch metrics, written by the sweep driver
as they happen), ``optuna.db`` (the study) and ``trials.parquet`` (the summary). Everything that only reads an
experiment (export, evaluate, the dashboard) reads these, never Tune's pickled ``experiment_state`` files.
"""
