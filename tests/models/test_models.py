"""Model shapes, hierarchy-prefix decoding, KL terms, the precision-weighted merge, config errors."""

from __future__ import annotations

import re

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from shapetune.models import ModelConfig
from shapetune.models.registry import MODELS, build_model
from shapetune.models.gaussian import kl_normal, precision_weighted_merge
from shapetune.models.losses import LossWeights, shape_loss
from shapetune.config import ConfigError, load_config


def _x(b=3, g=16):
    torch.manual_seed(0)
    return (torch.rand(b, 2, g, g, g) > 0.6).float()


@pytest.mark.parametrize("name,dims", [("vae", [12]), ("ae", [12]), ("lvae", [8]), ("lvae", [8, 4, 2]),
                                       ("lvae", [16, 8, 8, 4, 2])])
def test_shapes(name, dims):
    m = build_model(ModelConfig(name=name, grid=16, width=4, latent_dims=dims)).eval()
    out = m(_x())
    assert out.logits.shape == (3, 2, 16, 16, 16) and out.cls_logit.shape == (3,)
    assert [lv.z.shape[1] for lv in out.levels] == dims
    assert out.top_mu.shape == (3, dims[-1])
    assert [t.shape[1] for t in m.latents(_x())] == dims


def test_registry_has_the_cardiac_and_fetal_models():
    from shapetune.catalog import MODEL_SPECS
    from shapetune.models.config import CONDITIONAL_MODELS

    assert set(MODELS) == {"vae", "lvae", "ae", "cvae", "hcvae", "tlnet", "cgan"}
    assert {m: MODEL_SPECS[m].task for m in MODELS} == {"vae": "cardiac", "lvae": "cardiac", "ae": "cardiac",
                                                        "cvae": "fetal", "hcvae": "fetal", "tlnet": "fetal",
                                                        "cgan": "fetal"}
    assert set(CONDITIONAL_MODELS) == {m for m in MODELS if MODEL_SPECS[m].task == "fetal"}  # one list


def test_decoding_from_each_prefix_of_the_hierarchy():
    m = build_model(ModelConfig(name="lvae", grid=16, width=4, latent_dims=[8, 4, 2])).eval()
    x = _x()
    full = m(x)
    assert torch.equal(m(x, n_levels=3).logits, full.logits)
    outs = []
    for k in (1, 2, 3):
        lv = m.encode(x, n_levels=k)
        for i in range(3 - k):  # levels below the prefix follow the prior means of the top-down path
            assert torch.equal(lv[i].z, lv[i].mu_p)
        assert torch.equal(lv[-1].mu_q, full.levels[-1].mu_q)  # the top always reads the input
        outs.append(m(x, n_levels=k).logits)
    assert not torch.equal(outs[0], outs[1]) and not torch.equal(outs[1], outs[2])
    assert torch.allclose(m.decode_from_top(full.levels[-1].mu_q), outs[0])
    with pytest.raises(ValueError, match="n_levels must be within 1..3"):
        m(x, n_levels=4)


def test_kl_of_each_level_matches_torch_distributions():
    m = build_model(ModelConfig(name="lvae", grid=16, width=4, latent_dims=[8, 4, 2])).train()
    x = _x()
    out = m(x)
    _, terms = shape_loss(out, x, torch.tensor([0, 1, 1]), LossWeights(), 10, True)
    for i, lv in enumerate(out.levels):
        q = Normal(lv.mu_q, torch.exp(0.5 * lv.logvar_q))
        p = Normal(torch.zeros_like(lv.mu_q), torch.ones_like(lv.mu_q)) if lv.mu_p is None else \
            Normal(lv.mu_p, torch.exp(0.5 * lv.logvar_p))
        ref = kl_divergence(q, p).sum(-1).mean()
        assert torch.allclose(terms[f"kl_{i}"], ref, rtol=1e-5, atol=1e-6), i
    assert out.levels[-1].mu_p is None and out.levels[0].mu_p is not None


def test_kl_normal_against_torch_random():
    g = torch.Generator().manual_seed(1)
    mq, lq, mp, lp = (torch.randn(5, 7, generator=g) for _ in range(4))
    ref = kl_divergence(Normal(mq, torch.exp(0.5 * lq)), Normal(mp, torch.exp(0.5 * lp)))
    assert torch.allclose(kl_normal(mq, lq, mp, lp), ref, atol=1e-5)
    ref0 = kl_divergence(Normal(mq, torch.exp(0.5 * lq)), Normal(0.0, 1.0))
    assert torch.allclose(kl_normal(mq, lq), ref0, atol=1e-5)


def test_precision_weighted_merge_formula():
    g = torch.Generator().manual_seed(2)
    ma, mb = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    la, lb = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    mu, logvar = precision_weighted_merge(ma, la, mb, lb)
    sa2, sb2 = torch.exp(la), torch.exp(lb)
    var = 1 / (1 / sa2 + 1 / sb2)
    assert torch.allclose(torch.exp(logvar), var, rtol=1e-5)
    assert torch.allclose(mu, (ma / sa2 + mb / sb2) * var, rtol=1e-5, atol=1e-6)
    # It is the normalised product of the two densities: log N(t; mu, var) - log Na(t) - log Nb(t) is constant in t.
    t = torch.linspace(-3, 3, 7)[:, None, None]
    diff = Normal(mu, var.sqrt()).log_prob(t) - Normal(ma, sa2.sqrt()).log_prob(t) - Normal(mb, sb2.sqrt()).log_prob(t)
    assert torch.allclose(diff, diff[0:1].expand_as(diff), atol=1e-4)


def test_classifier_is_differentiable_in_the_latent():
    m = build_model(ModelConfig(name="lvae", grid=16, width=4, latent_dims=[8, 2])).eval()
    z = torch.zeros(1, 2, requires_grad=True)
    m.classify(z).sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_free_bits_and_warmup():
    m = build_model(ModelConfig(name="vae", grid=16, width=4, latent_dims=[6])).train()
    x = _x()
    out = m(x)
    y = torch.tensor([0, 1, 0])
    l0, t0 = shape_loss(out, x, y, LossWeights(lambda_kl=1.0, kl_warmup_epochs=4), 0, True)
    l3, t3 = shape_loss(out, x, y, LossWeights(lambda_kl=1.0, kl_warmup_epochs=4), 3, True)
    assert torch.allclose(l3 - l0, 0.75 * t0["kl"], rtol=1e-4)
    _, tf = shape_loss(out, x, y, LossWeights(free_bits=10.0), 5, True)
    assert torch.isclose(tf["kl"], torch.tensor(60.0))  # every dimension raised to the 10-nat floor
    _, ta = shape_loss(build_model(ModelConfig(name="ae", grid=16, width=4, latent_dims=[6]))(x), x, y,
                       LossWeights(), 5, False)
    assert float(ta["kl"]) == 0.0


@pytest.mark.parametrize("overrides,message", [
    (["model.depth=0"], "depth must be within 1..5"),
    (["model.depth=3", "model.latent_dims=[8,2]"], "latent_dims has 2 sizes but depth is 3"),
    (["model.name=gan"], "model.name: Value error, unknown model 'gan' (did you mean 'cgan'?); registered: "
                         "vae, lvae, ae, cvae, hcvae, tlnet, cgan"),
    (["model.name=vae", "model.latent_dims=[8,2]"], "model 'vae' has a single latent"),
    (["model.grid=24"], "grid must be a power of two"),
    (["model.latent_dims=[]"], "non-empty list"),
    (["optim.lr=-1"], "optim.lr"),
    (["optim.learning_rate=0.1"], "optim.learning_rate: Extra inputs are not permitted"),
    (["nonsense"], "must look like section.key=value"),
])
def test_bad_configs_are_refused_clearly(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, overrides)


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {name: lvae, depth: 2, latent_dims: [8, 4, 2]}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: invalid configuration\n  model: Value error, latent_dims has 3"):
        load_config(bad)
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad)


def test_shipped_configs_load():
    from shapetune.cli import _config_path

    for name, model in (("lvae", "lvae"), ("vae", "vae"), ("ae", "ae")):
        cfg = load_config(_config_path(name), ["optim.epochs=1"])
        assert cfg.model.name == model and cfg.optim.epochs == 1
    assert (sum(load_config(_config_path("lvae")).model.latent_dims)
            == load_config(_config_path("vae")).model.latent_dims[0])
