"""The linear shape basis (``model.linear_path``): its PCA start is PCA, and it reaches the model's output."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from shapetune.models.backbone import PCA_LOGIT_SCALE, LinearPath
from shapetune.models.config import ModelConfig
from shapetune.models.registry import build_model


def _masks(n: int = 40, g: int = 8, seed: int = 0) -> np.ndarray:
    """Random blobs: spheres of varying centre and radius, two channels, uint8 like prepared masks."""
    rng = np.random.default_rng(seed)
    ax = np.arange(g) - g / 2 + 0.5
    zz, yy, xx = np.meshgrid(ax, ax, ax, indexing="ij")
    out = np.zeros((n, 2, g, g, g), np.uint8)
    for i in range(n):
        for c in range(2):
            cz, cy, cx = rng.uniform(-1.5, 1.5, 3)
            out[i, c] = ((zz - cz) ** 2 + (yy - cy) ** 2 + (xx - cx) ** 2) < rng.uniform(2.0, 3.5) ** 2
    return out


def test_pca_start_is_sklearns_pca():
    masks = _masks()
    k = 6
    lp = LinearPath(2, 8, k, k + 3)  # decoder inputs beyond the basis (upper ladder levels) start at zero
    lp.init_pca(masks)
    x = torch.as_tensor(masks).float()
    flat = masks.reshape(len(masks), -1).astype(np.float64)
    ref = PCA(n_components=k, svd_solver="full").fit(flat)
    coef = ref.transform(flat)
    z = lp.encode(x).detach().numpy()
    # Each latent is the component's coefficient over its standard deviation (up to the component's sign).
    scaled = coef / coef.std(0, ddof=1)
    assert np.allclose(np.abs(z), np.abs(scaled), atol=1e-3)
    assert np.allclose(z.std(0, ddof=1), 1.0, atol=1e-4)
    zfull = np.concatenate([z, np.random.default_rng(1).normal(size=(len(z), 3))], 1)  # upper levels ignored
    logits = lp.decode(torch.as_tensor(zfull, dtype=torch.float32)).detach().numpy().reshape(len(z), -1)
    recon = ref.inverse_transform(coef)
    assert np.allclose(logits, PCA_LOGIT_SCALE * (recon - 0.5), atol=1e-3)


@pytest.mark.parametrize("name,dims", [("lvae", [6, 3, 2]), ("vae", [6]), ("ae", [6])])
def test_linear_path_adds_to_the_conv_decoder(name, dims):
    cfg = ModelConfig(name=name, grid=16, width=4, latent_dims=dims, ladder_hidden=16, linear_path=True)
    model = build_model(cfg).eval()
    x = torch.as_tensor(_masks(4, 16)).float()
    with torch.no_grad():
        base = model(x).logits
        model.linear.dec.bias.fill_(3.0)  # the linear path's output is added to every voxel's logit
        assert torch.allclose(model(x).logits, base + 3.0, atol=1e-5)
    with pytest.raises(ValueError, match="linear_init: pca needs linear_path"):
        ModelConfig(name=name, grid=16, latent_dims=dims, linear_init="pca")


@pytest.mark.parametrize("name,dims", [("vae", [6]), ("ae", [6]), ("lvae", [6, 3, 2])])
def test_a_pca_start_makes_the_model_reconstruct_as_pca(name, dims):
    """``linear_init: pca``: before any step the whole model reconstructs as PCA(k) thresholded at 0.5 (the conv
    path's output starts at zero, the bottom latent's mean is the coefficients, its variance small)."""
    masks = _masks(40, 16)
    cfg = ModelConfig(name=name, grid=16, width=4, latent_dims=dims, ladder_hidden=16, linear_path=True,
                      linear_init="pca")
    torch.manual_seed(0)
    model = build_model(cfg)
    model.start_from_pca(masks)
    model.eval()
    flat = masks.reshape(len(masks), -1).astype(np.float64)
    ref = PCA(n_components=dims[0], svd_solver="full").fit(flat)
    pca_recon = ref.inverse_transform(ref.transform(flat)) > 0.5
    with torch.no_grad():
        logits = model(torch.as_tensor(masks).float()).logits.numpy().reshape(len(masks), -1)
    if name != "lvae":
        assert np.allclose(logits, PCA_LOGIT_SCALE * (ref.inverse_transform(ref.transform(flat)) - 0.5), atol=1e-3)
    # The ladder's bottom posterior is merged with its (untrained) prior: within a fraction of a percent.
    agree = ((logits > 0) == pca_recon).mean()
    assert agree > 0.995, agree
