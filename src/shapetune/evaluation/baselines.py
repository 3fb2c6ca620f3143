"""Baselines the service evaluates beside the trained models, fitted on the same training split.

- ``clinical``: conventional indices (EDV/ESV/LV mass indexed by BSA, EF, maximal wall thickness) with a
  standardised logistic regression: the seed study's point that global indices miss regional remodeling.
  It reconstructs nothing, so its reconstruction metrics are empty.
- ``pca``: a linear shape model (PCA on the flattened ED+ES masks, as many components as the LVAE has
  latent dimensions) with a logistic regression on the component scores; reconstructions are the PCA
  back-projections thresholded at 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from shapetune.evaluation.splits import EvalSplit


@dataclass
class BaselineOutput:
    prob: np.ndarray  # [N] HCM probability
    recon: np.ndarray | None  # [N, 2, D, H, W] binary reconstructions, or None
    latents: list[np.ndarray]  # per level, [N, d]


class ClinicalBaseline:
    """Logistic regression on conventional clinical indices."""

    name = "clinical_indices+LR"

    def fit(self, masks: np.ndarray, labels: np.ndarray, clinical) -> "ClinicalBaseline":
        self.columns = list(clinical.columns)
        x = clinical.to_numpy(float)
        self.fill = np.nanmedian(x, axis=0)
        self.clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(self._x(clinical), labels)
        return self

    def _x(self, clinical) -> np.ndarray:
        x = clinical[self.columns].to_numpy(float)
        return np.where(np.isfinite(x), x, self.fill)  # a subject without BSA gets the training median

    def predict(self, split: EvalSplit) -> BaselineOutput:
        x = self._x(split.clinical)
        return BaselineOutput(self.clf.predict_proba(x)[:, 1], None, [self.clf[0].transform(x)])


class PCABaseline:
    """PCA shape model on the masks with a logistic regression on the scores."""

    def __init__(self, n_components: int = 50, seed: int = 0):
        self.n_components, self.seed = n_components, seed
        self.name = f"PCA({n_components})+LR"

    def fit(self, masks: np.ndarray, labels: np.ndarray, clinical=None) -> "PCABaseline":
        x = masks.reshape(len(masks), -1).astype(np.float32)
        self.shape = masks.shape[1:]
        self.pca = PCA(n_components=min(self.n_components, len(x) - 1), random_state=self.seed).fit(x)
        self.clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(self.pca.transform(x), labels)
        return self

    def predict(self, split: EvalSplit) -> BaselineOutput:
        x = split.masks.reshape(len(split.masks), -1).astype(np.float32)
        scores = self.pca.transform(x)
        recon = (self.pca.inverse_transform(scores) > 0.5).reshape(len(x), *self.shape).astype(np.uint8)
        return BaselineOutput(self.clf.predict_proba(scores)[:, 1], recon, [scores])


BASELINES = {"clinical": ClinicalBaseline, "pca": PCABaseline}
