"""Tuning: the Ray Tune driver, the Optuna searcher and the sweep's trials."""
