"""Training: the engine, the epoch loops (local, Ray Train workers), augmentation, checkpoints and the tasks."""
