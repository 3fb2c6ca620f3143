"""Data: synthetic cohorts, NIfTI/ACDC readers, the one preprocessing path, prepared datasets."""

from shapetune.data.dataset import PreparedDataset
from shapetune.data.errors import DataError
from shapetune.data.template import TemplateGrid

__all__ = ["DataError", "PreparedDataset", "TemplateGrid"]
