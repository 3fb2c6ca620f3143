"""Platform: Ray Train / Ray Tune drivers, checkpoints, export and cluster glue."""
