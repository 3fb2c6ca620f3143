"""Search spaces: declarative YAML search-space definitions and their Optuna translation."""
