"""Latent navigation: the walk moves the classifier towards the other class; decoded shapes; cavity filling."""

from __future__ import annotations

import numpy as np
import torch

from shapetune.data.template import CAVITY, MYOCARDIUM
from shapetune.evaluation.navigation import class_mean_shapes, decode_path, labels_from_myocardium, walk
from shapetune.models.config import ModelConfig
from shapetune.models.registry import build_model


def test_walk_crosses_towards_the_other_class_and_decodes():
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="lvae", grid=16, width=4, latent_dims=[8, 4, 2], ladder_hidden=16)).eval()
    for start in (torch.tensor([2.0, -1.0]), torch.tensor([-2.0, 1.0])):
        path, probs = walk(model, start, steps=6, step_size=0.5)
        assert path.shape == (7, 2) and probs.shape == (7,)
        towards_hcm = probs[0] <= 0.5
        assert (probs[-1] > probs[0]) == towards_hcm and np.all(np.diff(probs) * (1 if towards_hcm else -1) >= -1e-6)
        vols = decode_path(model, path, [np.zeros(8), np.ones(4)])
        assert vols.shape == (7, 2, 16, 16, 16) and set(np.unique(vols)) <= {0, 1}
    rng = np.random.default_rng(0)
    levels = [rng.normal(size=(10, d)).astype(np.float32) for d in (8, 4, 2)]
    means = class_mean_shapes(model, levels, np.array([0, 1] * 5))
    assert set(means) == {0, 1} and means[0].shape == (2, 16, 16, 16)


def test_cavity_is_filled_inside_each_short_axis_ring():
    g = np.indices((15, 15)) - 7
    r = np.sqrt((g**2).sum(0))
    ring = np.repeat(((r >= 4) & (r <= 6))[None], 4, axis=0).astype(np.uint8)
    lab = labels_from_myocardium(ring)
    assert (lab[ring > 0] == MYOCARDIUM).all()
    assert (lab[:, 7, 7] == CAVITY).all() and lab[0, 0, 0] == 0
    assert ((lab == CAVITY) == np.repeat((r < 4)[None], 4, axis=0)).all()
