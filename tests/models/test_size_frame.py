"""Size frame: radii of a mask, plane features blind to pose, the warp, and the fused per-view size head."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from shapetune.models.size_frame import R_REF, SizeHead, plane_moments, rms_log, warp

G = 32


def _ellipsoid(radii: tuple[float, float, float], g: int = G) -> torch.Tensor:
    """Solid ellipsoid mask ``[1, 1, g, g, g]``, semi-axes in half-widths of the grid (axes D, H, W)."""
    k = torch.linspace(-1, 1, g)
    d, h, w = torch.meshgrid(k, k, k, indexing="ij")
    return (((d / radii[0]) ** 2 + (h / radii[1]) ** 2 + (w / radii[2]) ** 2) <= 1).float()[None, None]


def _ellipse(a: float, b: float, angle: float = 0.0, shift: tuple[int, int] = (0, 0), p: int = 64) -> torch.Tensor:
    """Elliptic ring (a thin 2D 'skull' outline), semi-axes in half-widths, rotated and shifted in the plane."""
    k = (torch.arange(p) - (p - 1) / 2) / (p / 2)
    r, c = torch.meshgrid(k - shift[0] * 2 / p, k - shift[1] * 2 / p, indexing="ij")
    u = math.cos(angle) * r + math.sin(angle) * c
    v = -math.sin(angle) * r + math.cos(angle) * c
    q = (u / a) ** 2 + (v / b) ** 2
    return ((q <= 1) & (q >= 0.6)).float()


def test_rms_log_of_a_solid_ellipsoid():
    # a solid ellipsoid with semi-axis a has RMS radius a / sqrt(5) along that axis
    radii = (0.8, 0.6, 0.4)
    got = rms_log(_ellipsoid(radii, 64))[0]
    assert torch.allclose(got, torch.log(torch.tensor(radii) / math.sqrt(5)), atol=0.02)


def test_warp_scales_a_canonical_shape_to_the_requested_radii():
    canon = _ellipsoid((0.4 * math.sqrt(5),) * 3) * 20 - 10  # logits of a sphere whose RMS radius is R_REF
    assert torch.allclose(rms_log(canon > 0), torch.full((1, 3), R_REF), atol=0.02)
    target = torch.tensor([[R_REF + 0.2, R_REF - 0.1, R_REF + 0.05]])
    placed = warp(canon, target)
    assert placed.shape == canon.shape
    assert torch.allclose(rms_log((placed > 0).float()), target, atol=0.03)
    assert torch.allclose(warp(canon, torch.full((1, 3), R_REF)), canon, atol=1e-4)  # identity at R_REF


def test_plane_moments_ignore_in_plane_pose_and_follow_size():
    base = plane_moments(_ellipse(0.6, 0.4)[None, None])[0, 0]
    principal = [0, 1, 2, 5, 6]  # area, RMS radii and extents along the principal axes
    moved = plane_moments(_ellipse(0.6, 0.4, angle=0.7, shift=(5, -4))[None, None])[0, 0]
    assert torch.allclose(base[principal], moved[principal], atol=0.04)
    shifted = plane_moments(_ellipse(0.6, 0.4, shift=(5, -4))[None, None])[0, 0]
    assert torch.allclose(base, shifted, atol=0.02)
    turned = plane_moments(_ellipse(0.4, 0.6)[None, None])[0, 0]  # rows and columns swapped
    assert torch.allclose(base[[4, 3, 8, 7]], turned[[3, 4, 7, 8]], atol=0.02) and base[3] > base[4] + 0.3
    bigger = plane_moments(_ellipse(0.72, 0.48)[None, None])[0, 0]  # 20 % larger
    assert torch.allclose(bigger[1:5] - base[1:5], torch.full((4,), math.log(1.2)), atol=0.04)  # RMS radii
    assert torch.equal(plane_moments(torch.zeros(1, 1, 64, 64)), torch.zeros(1, 1, 9))  # empty plane: zeros


def _heads(n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Ellipsoidal 'heads' of random size and shape: axial (length x width), sagittal (length x height),
    coronal (width x height) outlines, each turned up to 10 degrees and shifted, and their true log RMS radii."""
    planes, radii = [], []
    for _ in range(n):
        s = rng.uniform(0.65, 0.85)
        lw, hh = rng.uniform(0.6, 0.95, 2)
        a = (s, s * lw, s * hh)  # length, width, height
        pose = lambda: dict(angle=rng.uniform(-0.17, 0.17), shift=tuple(rng.integers(-4, 5, 2)))  # noqa: E731
        planes.append(torch.stack([_ellipse(a[0], a[1], **pose()), _ellipse(a[0], a[2], **pose()),
                                   _ellipse(a[1], a[2], **pose())]))
        radii.append(np.log(np.array(a) / math.sqrt(5)))
    return torch.stack(planes), torch.tensor(np.array(radii), dtype=torch.float32)


def test_size_head_learns_each_axis_from_the_views_that_show_it():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    planes, target = _heads(96, rng)
    test_planes, test_target = _heads(48, rng)
    head = SizeHead().train()
    opt = torch.optim.Adam(head.parameters(), lr=3e-2)
    for _ in range(300):
        present = torch.ones(len(planes), 3)
        present[:, 1:] = torch.from_numpy(rng.random((len(planes), 2)) < 0.5).float()
        _, loss = head(planes, present, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    head.eval()
    assert head.err2[2, 0] > 3 * head.err2[0, 0]  # the coronal view does not show the length: it barely counts
    assert head.err2[1, 2] < 0.5 * head.err2[0, 2]  # the sagittal view shows the height the axial one cannot
    err = {}
    for name, subset in {"3v": (1, 1, 1), "2v": (1, 1, 0), "1v": (1, 0, 0)}.items():
        with torch.no_grad():
            pred, _ = head(test_planes, torch.tensor([subset] * len(test_planes), dtype=torch.float32))
        err[name] = (pred - test_target).abs().mean(0)
    assert (err["3v"] < 0.01).all()  # length, width and height within 1 %
    assert err["2v"][2] < 0.5 * err["1v"][2]  # the sagittal view shows the height the axial one cannot
    assert err["1v"][:2].max() < 0.01  # the axial view alone still gives length and width
    # the predictive spread follows the views: height is uncertain with the axial plane alone, and the spread
    # is the size of the error it stands for (RMS within a factor 2 per axis and subset)
    var = {n: head.variance(torch.tensor([s], dtype=torch.float32))[0] for n, s in
           {"3v": (1, 1, 1), "2v": (1, 1, 0), "1v": (1, 0, 0)}.items()}
    assert var["1v"][2] > 3 * var["2v"][2] and (var["3v"] <= var["2v"] + 1e-9).all()
    for name, subset in {"3v": (1, 1, 1), "1v": (1, 0, 0)}.items():
        with torch.no_grad():
            pred, _ = head(test_planes, torch.tensor([subset] * len(test_planes), dtype=torch.float32))
        rms = ((pred - test_target) ** 2).mean(0).sqrt()
        assert ((var[name].sqrt() / rms) > 0.5).all() and ((var[name].sqrt() / rms) < 2).all(), (name, var[name], rms)
    one = test_planes[:1].expand(4000, -1, -1, -1)
    with torch.no_grad():
        draws = head.sample(one, torch.tensor([[1.0, 0.0, 0.0]]).expand(4000, -1))
    assert torch.allclose(draws.var(0), var["1v"], rtol=0.1)  # samples spread as the variance says


def test_size_head_never_reads_a_missing_view():
    head = SizeHead().eval()
    torch.nn.init.normal_(head.weight)
    head.err2.uniform_(0.5, 1.5)
    planes = torch.stack([_ellipse(0.6, 0.5), _ellipse(0.6, 0.45), _ellipse(0.5, 0.45)])[None]
    other = planes.clone()
    other[:, 2] = _ellipse(0.3, 0.2)
    axial_sagittal = torch.tensor([[1.0, 1.0, 0.0]])
    assert torch.equal(head(planes, axial_sagittal)[0], head(other, axial_sagittal)[0])
    assert not torch.equal(head(planes, torch.ones(1, 3))[0], head(other, torch.ones(1, 3))[0])
    assert torch.isfinite(head(planes, torch.zeros(1, 3))[0]).all()  # no view at all: the mean size


@pytest.mark.parametrize("name", ["vae", "lvae"])
def test_size_frame_is_for_the_conditional_models_only(name):
    from shapetune.models.config import ModelConfig

    with pytest.raises(ValueError, match="size_frame is for the conditional models"):
        ModelConfig(name=name, latent_dims=[8], size_frame=True)
