"""Fetal-skull models: every view subset, missing views, the hierarchy's use of the views, learning."""

from __future__ import annotations

import pytest
import torch

from shapetune.models.registry import build_model
from shapetune.models.hcvae import view_levels
from shapetune.models.losses import LossWeights, conditional_loss

SUBSETS = [(1, 1, 1), (1, 1, 0), (1, 0, 1), (1, 0, 0), (0, 0, 0)]


def _model(name: str, dims: list[int], size_frame: bool = False):
    torch.manual_seed(0)
    return build_model(dict(name=name, grid=16, width=4, bottleneck=4, norm="group", latent_dims=dims,
                            ladder_hidden=32, light_ends=name != "tlnet", size_frame=size_frame))


def _batch(b: int = 4):
    g = torch.Generator().manual_seed(1)
    return ((torch.rand(b, 1, 16, 16, 16, generator=g) > 0.8).float(),
            (torch.rand(b, 3, 16, 16, generator=g) > 0.8).float())


@pytest.mark.parametrize("name, dims, size_frame", [("cvae", [8], False), ("hcvae", [8, 4], False),
                                                    ("hcvae", [8, 6, 4], False), ("hcvae", [4], False),
                                                    ("tlnet", [8], False), ("cvae", [8], True),
                                                    ("hcvae", [8, 6, 4], True), ("tlnet", [8], True),
                                                    ("cgan", [8], False), ("cgan", [8], True)])
def test_every_view_subset_trains_and_predicts(name, dims, size_frame):
    model = _model(name, dims, size_frame)
    vol, planes = _batch()
    for subset in SUBSETS:
        present = torch.tensor([subset] * 4, dtype=torch.float32)
        model.train()
        out = model(vol, planes, present)
        loss, terms = conditional_loss(out, vol, LossWeights(lambda_kl=1e-2), 1.0, model.variational)
        loss.backward()
        assert torch.isfinite(loss) and out.logits.shape == (4, 1, 16, 16, 16)
        assert ("size" in terms) == size_frame and (not size_frame or torch.isfinite(terms["size"]))
        model.eval()
        with torch.no_grad():
            pred = model.predict(planes, present)
            sample = model.predict(planes, present, sample=True)
        assert pred.shape == (4, 1, 16, 16, 16) and torch.isfinite(pred).all() and torch.isfinite(sample).all()
        if not model.variational:
            assert torch.equal(pred, sample)  # TL-Net and the GAN are deterministic


@pytest.mark.parametrize("size_frame", [False, True])
def test_mixed_view_availability_in_one_batch(size_frame):
    model = _model("hcvae", [8, 6, 4], size_frame).eval()
    _, planes = _batch()
    present = torch.tensor(SUBSETS[:4], dtype=torch.float32)
    with torch.no_grad():
        together = model.predict(planes, present)
        alone = torch.cat([model.predict(planes[i:i + 1], present[i:i + 1]) for i in range(4)])
    assert torch.allclose(together, alone, atol=1e-5)  # no sample leaks another's views


def test_hcvae_axial_drives_the_top_level_and_missing_views_leave_the_hierarchy_prior():
    assert view_levels(3) == [2, 1, 0] and view_levels(2) == [1, 0, 0] and view_levels(1) == [0, 0, 0]
    model = _model("hcvae", [8, 6, 4]).eval()
    _, planes = _batch()
    full = torch.ones(4, 3)
    none = torch.tensor([[1.0, 0.0, 0.0]] * 4)
    other = planes.clone()
    other[:, 1:] = 1.0 - other[:, 1:]  # different sagittal and coronal images
    with torch.no_grad():
        lv_full = model._top_down(planes, full)
        lv_other = model._top_down(other, full)
        lv_none = model._top_down(planes, none)
        lv_none_other = model._top_down(other, none)
    assert torch.equal(lv_full[2].mu_p, lv_other[2].mu_p)  # the top level sees the axial view only
    assert not torch.allclose(lv_full[1].mu_p, lv_other[1].mu_p)  # sagittal refines level 1
    assert not torch.allclose(lv_full[0].mu_p, lv_other[0].mu_p)  # coronal refines level 0
    for a, b in zip(lv_none, lv_none_other, strict=True):  # missing views: their images are never looked at
        assert torch.equal(a.mu_p, b.mu_p)


def test_cvae_missing_view_is_a_zero_image():
    model = _model("cvae", [8]).eval()
    _, planes = _batch()
    zeroed = planes.clone()
    zeroed[:, 2] = 0
    with torch.no_grad():
        a = model.predict(planes, torch.tensor([[1.0, 1.0, 0.0]] * 4))
        b = model.predict(zeroed, torch.ones(4, 3))
    assert torch.allclose(a, b)


@pytest.mark.parametrize("name, dims, size_frame", [("cvae", [8], False), ("hcvae", [8, 4], False),
                                                    ("tlnet", [8], False), ("hcvae", [8, 4], True),
                                                    ("cgan", [8], True)])
def test_a_few_steps_fit_one_batch(name, dims, size_frame):
    model = _model(name, dims, size_frame).train()
    vol, planes = _batch()
    present = torch.ones(4, 3)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60 if size_frame else 40):  # noise volumes fill the grid: the frame scales them up 1.4x
        loss, _ = conditional_loss(model(vol, planes, present), vol, LossWeights(lambda_kl=1e-3), 10.0,
                                   model.variational)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_config_rejects_a_hierarchy_for_single_latent_models():
    with pytest.raises(ValueError, match="single latent"):
        build_model(dict(name="cvae", grid=16, latent_dims=[8, 4]))
    with pytest.raises(ValueError, match="depth 1..5"):
        build_model(dict(name="hcvae", grid=16, latent_dims=[4] * 6))


def test_the_reference_grid_96_builds_and_predicts():
    """96^3 (3 x a power of two) as in the reference study: 3D stages from a 12^3 (or 6^3) bottleneck, the plane
    encoders pooled to 4 x 4."""
    torch.manual_seed(0)
    model = build_model(dict(name="hcvae", grid=96, width=4, bottleneck=12, norm="group", latent_dims=[8, 4],
                             ladder_hidden=32, light_ends=True)).eval()
    with torch.no_grad():
        out = model.predict((torch.rand(1, 3, 96, 96) > 0.9).float(), torch.tensor([[1.0, 1.0, 0.0]]))
    assert out.shape == (1, 1, 96, 96, 96)
    with pytest.raises(ValueError, match="grid/bottleneck a power of two"):
        build_model(dict(name="hcvae", grid=96, bottleneck=8, latent_dims=[8, 4]))



@pytest.mark.parametrize("name, dims", [("cvae", [8]), ("hcvae", [8, 6, 4])])
def test_prediction_samples_draw_the_size_the_missing_views_leave_open(name, dims):
    model = _model(name, dims, size_frame=True).eval()
    _, planes = _batch()
    model.size_head.err2.copy_(torch.tensor([[1e-4, 1e-4, 4e-2], [1e-4, 4e-2, 1e-3], [4e-2, 1e-4, 1e-3]]))
    torch.manual_seed(0)
    draws = {}
    for subset in [(1, 1, 1), (1, 0, 0)]:
        present = torch.tensor([subset] * 4, dtype=torch.float32)
        with torch.no_grad():
            assert torch.equal(model._size(planes, present), model._size(planes, present))  # the mean: no draw
            draws[subset] = torch.stack([model._size(planes, present, sample=True) for _ in range(400)]).var(0).mean(0)
    # the axial plane shows no height: drawn with ~4e-2 alone, ~1e-3 once sagittal and coronal are there
    assert draws[(1, 0, 0)][2] > 10 * draws[(1, 1, 1)][2]
    assert draws[(1, 0, 0)][:2].max() < 2e-4 and draws[(1, 0, 0)][2] > 2e-2


def test_gan_players_each_get_only_their_own_gradient_and_the_critic_learns():
    model = _model("cgan", [8], size_frame=True).train()
    vol, planes = _batch()
    present = torch.ones(4, 3)
    out = model(vol, planes, present)
    critic = list(model.critic.parameters())
    generator = [p for n, p in model.named_parameters() if not n.startswith(("critic.", "size_head."))]
    g_adv = torch.autograd.grad(out.adv_loss, critic + generator, allow_unused=True)
    assert all(g is None or not g.any() for g in g_adv[:len(critic)])  # the generator's term leaves the critic alone
    assert any(g is not None and g.abs().sum() > 0 for g in g_adv[len(critic):])
    g_disc = torch.autograd.grad(out.disc_loss, critic + generator, allow_unused=True)
    assert all(g is None or not g.any() for g in g_disc[len(critic):])  # and the critic's never moves the generator
    assert all(g is not None for g in g_disc[:len(critic)])
    # with the generator still, the critic learns to tell the true skulls from its output for these planes
    opt = torch.optim.Adam(model.critic.parameters(), lr=1e-3)
    first = out.disc_loss.item()
    for _ in range(30):
        loss = model(vol, planes, present).disc_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > 1.2 and loss.item() < 0.5 * first  # log 4 = 1.39 at chance


def test_gan_critic_builds_at_every_grid():
    from shapetune.models.cgan import Critic

    for grid in (16, 64, 96):
        c = Critic(grid, 4, 8)
        assert c(torch.rand(2, 1, grid, grid, grid), torch.rand(2, 8)).shape == (2,)
