"""The fetal-skull study's evaluation: per view subset DC/HD/RVD over the cross-validation folds, and
voxel-wise prediction uncertainty from repeated samples of the conditional prior."""
