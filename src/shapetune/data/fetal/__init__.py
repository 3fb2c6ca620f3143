"""The fetal-skull study's data: skull generator, standard 2D planes, cohort with 3-fold split, preparation."""

from shapetune.data.fetal.planes import VIEWS, PlanePose
from shapetune.data.fetal.skull import SkullParams, render_skull, sample_skull

__all__ = ["VIEWS", "PlanePose", "SkullParams", "render_skull", "sample_skull"]
