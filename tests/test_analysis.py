"""Numbers behind the figures: attention capture, rollout, distances, reconstructions, errors, PCA."""

import math

import numpy as np
import pytest
import torch

from maelib import analysis as A
from maelib import capture_attention, create_model, normalize_patches


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("mae_vit_mini_patch4_28", depth=2)  # 7x7 grid, 4 heads, norm_pix_loss


@pytest.fixture(scope="module")
def imgs():
    return torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))


def random_attention(n, h, t, seed=0):
    return torch.rand(n, h, t, t, generator=torch.Generator().manual_seed(seed)).softmax(dim=-1)


# ---------------------------------------------------------------------------------------------- attention
def test_captured_attention_equals_manual_softmax(model, imgs):
    attn, ids_keep = A.attention_maps(model, imgs, blocks=[1])
    assert ids_keep is None and list(attn) == [1]
    with torch.no_grad():  # the input of block 1, by hand
        x = model.patch_embed(imgs) + model.pos_embed[:, 1:]
        x = torch.cat([(model.cls_token + model.pos_embed[:, :1]).expand(len(imgs), -1, -1), x], dim=1)
        x = model.blocks[0](x)
        blk = model.blocks[1]
        w, b = blk.attn.qkv.weight, blk.attn.qkv.bias
        h = blk.norm1(x)
        dim, heads = h.shape[-1], blk.attn.num_heads
        q, k = (h @ w[i * dim:(i + 1) * dim].T + b[i * dim:(i + 1) * dim] for i in range(2))
        split = lambda t: t.reshape(len(imgs), -1, heads, dim // heads).transpose(1, 2)  # noqa: E731
        expected = (split(q) @ split(k).transpose(-2, -1) / math.sqrt(dim // heads)).softmax(dim=-1)
    assert attn[1].shape == (3, 4, 50, 50)
    torch.testing.assert_close(attn[1], expected, atol=1e-5, rtol=1e-4)


def test_capturing_attention_leaves_outputs_unchanged(model, imgs):
    model.eval()
    with torch.no_grad():
        plain = model.forward_features(imgs)
    A.attention_maps(model, imgs)
    with torch.no_grad():
        after = model.forward_features(imgs)
        with capture_attention(model):
            captured = model.forward_features(imgs)
    assert torch.equal(plain, captured) and torch.equal(plain, after)


def test_masked_attention_and_cls_map(model, imgs):
    attn, ids_keep = A.attention_maps(model, imgs, blocks=[-1], mask_ratio=0.75)
    assert list(attn) == [1] and ids_keep.shape == (3, 12)  # int(49 * 0.25) visible
    a = attn[1]
    assert a.shape == (3, 4, 13, 13)
    cls_map = A.cls_attention_map(a, ids_keep, grid=7)
    assert cls_map.shape == (3, 4, 7, 7)
    assert int(torch.isnan(cls_map[0, 0]).sum()) == 49 - 12
    visible = cls_map.flatten(2)[:, 0].gather(1, ids_keep)
    assert not torch.isnan(visible).any()
    torch.testing.assert_close(torch.nansum(cls_map, dim=(2, 3)) + a[:, :, 0, 0], torch.ones(3, 4))


def test_cls_map_rows_sum_to_one_unmasked():
    a = random_attention(2, 3, 1 + 16)
    cls_map = A.cls_attention_map(a)
    assert cls_map.shape == (2, 3, 4, 4)
    torch.testing.assert_close(cls_map.sum(dim=(2, 3)) + a[:, :, 0, 0], torch.ones(2, 3))


def test_query_attention_map():
    a = random_attention(2, 3, 1 + 16)
    q = A.query_attention_map(a, (1, 2))
    torch.testing.assert_close(q.flatten(2), a[:, :, 1 + 6, 1:])
    ids_keep = torch.tensor([[6, 0, 3], [1, 2, 3]])  # patch 6 is visible in image 0 only (token 1)
    qm = A.query_attention_map(a[:, :, :4, :4], 6, ids_keep, grid=4)
    assert qm[0, :, 1, 2].tolist() == a[0, :, 1, 1].tolist() and torch.isnan(qm[1]).all()


def test_rollout_rows_sum_to_one_and_match_two_block_product():
    a1, a2 = random_attention(2, 3, 5, seed=1), random_attention(2, 3, 5, seed=2)
    step = lambda a: (a.mean(1) + torch.eye(5)) / (a.mean(1) + torch.eye(5)).sum(-1, keepdim=True)  # noqa: E731
    rollout = A.attention_rollout([a1, a2])
    torch.testing.assert_close(rollout, step(a2) @ step(a1))
    torch.testing.assert_close(rollout.sum(-1), torch.ones(2, 5))
    assert torch.equal(A.attention_rollout({1: a2, 0: a1}), rollout)  # dicts go in block order
    for fusion in ("max", "min"):
        torch.testing.assert_close(A.attention_rollout([a1, a2], 0.5, fusion).sum(-1), torch.ones(2, 5))


def test_mean_attention_distance_identity_and_2x2():
    eye = torch.eye(5).expand(1, 2, 5, 5)
    assert torch.equal(A.mean_attention_distance(eye, grid=2, patch_size=4), torch.zeros(2))
    # one head, 2x2 grid of 4-px patches: every patch query attends half to itself, half to its right/left
    # neighbour (distance 4), plus some weight to cls which is dropped and renormalised away.
    a = torch.zeros(1, 1, 5, 5)
    a[0, 0, :, 0] = 0.2
    for q, k in [(0, 1), (1, 0), (2, 3), (3, 2)]:
        a[0, 0, 1 + q, 1 + q] = a[0, 0, 1 + q, 1 + k] = 0.4
    assert A.mean_attention_distance(a, grid=2, patch_size=4).tolist() == pytest.approx([2.0])
    a[0, 0, 1, 1:] = torch.tensor([0.0, 0.0, 0.0, 0.8])  # query 0 -> diagonal patch 3: 4*sqrt(2)
    expected = (4 * math.sqrt(2) + 2 + 2 + 2) / 4
    assert A.mean_attention_distance(a, grid=2, patch_size=4).tolist() == pytest.approx([expected])


def test_attention_distances_for_a_model(model, imgs):
    d = A.attention_distances(model, imgs)
    assert d.shape == (2, 4) and (d > 0).all() and (d < 28 * math.sqrt(2)).all()


# ---------------------------------------------------------------------------------------------- reconstruction
def test_reconstruct_pastes_visible_exactly_and_restores_mode(model, imgs):
    model.train()
    out = A.reconstruct(model, imgs, mask_ratio=0.75)
    assert model.training and not out["pred"].requires_grad
    keep = out["mask_map"].expand_as(imgs) == 0
    assert torch.equal(out["pasted"][keep], imgs[keep])
    assert torch.equal(out["masked"][keep], imgs[keep]) and (out["masked"][~keep] == 0).all()
    assert out["mask"].sum(1).tolist() == [49 - 12] * 3
    assert out["mask_map"].shape == (3, 1, 28, 28) and out["reconstruction"].shape == imgs.shape


def test_norm_pix_reconstruction_is_unnormalised(model, imgs, monkeypatch):
    target = normalize_patches(model.patchify(imgs))  # what a perfect norm_pix model predicts
    monkeypatch.setattr(model, "forward_decoder", lambda latent, ids_restore: target)
    out = A.reconstruct(model, imgs, mask_ratio=0.75)
    torch.testing.assert_close(out["reconstruction"], imgs, atol=1e-4, rtol=0)
    assert out["loss"].item() == pytest.approx(0.0, abs=1e-10)


def test_patch_errors_average_to_the_loss(model, imgs):
    noise = A.seeded_noise(model, 3, 0.75, seed=0)
    err, mask = A.patch_errors(model, imgs, 0.75, noise)
    assert err.shape == mask.shape == (3, 7, 7)
    loss = A.reconstruct(model, imgs, 0.75, noise)["loss"]
    torch.testing.assert_close((err * mask).sum() / mask.sum(), loss)
    pixel, _ = A.patch_errors(model, imgs, 0.75, noise, space="pixel")
    assert pixel.shape == (3, 7, 7) and (pixel >= 0).all()


def test_error_vs_mask_ratio_is_reproducible(model, imgs):
    first = A.error_vs_mask_ratio(model, imgs, ratios=(0.5, 0.75), repeats=2, seed=3)
    again = A.error_vs_mask_ratio(model, imgs, ratios=(0.5, 0.75), repeats=2, seed=3)
    assert first.shape == (2,) and torch.equal(first, again) and torch.isfinite(first).all()


def test_mean_colour_baseline():
    imgs = torch.zeros(1, 2, 4, 4)  # 2x2 grid of 2-px patches, two channels
    imgs[:, 0, :2] = 1.0  # top row of patches: channel 0 is 1
    mask = torch.tensor([[0.0, 0.0, 1.0, 1.0]])  # top visible, bottom hidden
    # visible colour (1, 0); hidden pixels are (0, 0): error per pixel (1 + 0) / 2 channels
    assert A.mean_colour_baseline_mse(imgs, mask, 2).item() == pytest.approx(0.5)
    assert A.mean_colour_baseline_mse(torch.full((2, 3, 4, 4), 0.3), mask.expand(2, -1), 2).item() == pytest.approx(0)


# ---------------------------------------------------------------------------------------------- features
def test_pca_rgb_range_and_shape(model, imgs):
    with torch.no_grad():
        tokens = model.forward_features(imgs)
    rgb = A.pca_rgb(tokens[:, 1:], grid=7)
    assert rgb.shape == (3, 7, 7, 3) and rgb.min() >= 0 and rgb.max() <= 1
    assert np.isclose(rgb.reshape(-1, 3).min(0), 0).all() and np.isclose(rgb.reshape(-1, 3).max(0), 1).all()
    assert A.pca_rgb(torch.ones(2, 4, 5)).shape == (2, 2, 2, 3)  # constant features: no division by zero


def test_pca_rgb_can_remove_what_only_the_position_encodes():
    """Features that are the same in every image at each position (pure position) paint a colour ramp across the
    grid; with remove_position nothing is left to paint. Content that differs between images stays."""
    generator = torch.Generator().manual_seed(0)
    position = torch.randn(1, 16, 8, generator=generator).expand(5, -1, -1)  # (N, L, D), the same in every image
    ramp = A.pca_rgb(position, grid=4)
    assert ramp.reshape(5, 16, 3).std(axis=1).max() > 0.1  # colours vary across positions
    assert np.allclose(A.pca_rgb(position, grid=4, remove_position=True), 0)  # position alone: removed
    content = torch.zeros(5, 16, 8)
    content[:, :, 0] = torch.arange(5.0)[:, None]  # differs between images, the same at every position
    kept = A.pca_rgb(position + content, grid=4, remove_position=True)
    assert np.allclose(kept[..., 0].reshape(5, 16).std(axis=1), 0, atol=1e-6)  # one colour per image
    assert kept[..., 0].reshape(5, 16)[:, 0].std() > 0.1  # and different images get different colours
    with pytest.raises(ValueError, match="at least 2 images"):
        A.pca_rgb(position[:1], remove_position=True)


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_embed_2d(method):
    xy = A.embed_2d(torch.randn(20, 8), method=method, seed=0)
    assert xy.shape == (20, 2) and np.isfinite(xy).all()
    with pytest.raises(ValueError):
        A.embed_2d(torch.randn(5, 3), method="umap")


def test_interpolation_fills_smooth_images_and_keeps_the_visible_pixels():
    ramp = torch.linspace(-1, 1, 28).view(1, 1, 1, 28).expand(2, 1, 28, 28).contiguous()  # smooth: easy to interpolate
    mask = torch.zeros(2, 49)
    mask[:, ::3] = 1  # a third of the patches hidden, each with visible neighbours
    filled = A.interpolate_hidden(ramp, mask, 4)
    visible = 1 - A.mask_to_image(mask, 4)
    assert torch.equal(filled * visible, ramp * visible)
    hidden_mse = ((filled - ramp) ** 2).sum() / (1 - visible).sum()
    assert hidden_mse < 0.05 * (ramp**2).mean()  # far below predicting zero on a ramp
    # a hidden patch far from every visible one is filled worse than one next to visible pixels
    sparse = torch.ones(1, 49)
    sparse[0, 0] = 0  # only the top-left patch visible
    far = A.interpolate_hidden(ramp[:1], sparse, 4)
    assert ((far - ramp[:1]) ** 2).mean() > 10 * hidden_mse


def test_reconstruction_baselines_include_interpolation(model, imgs):
    errors = A.reconstruction_baselines(model, imgs, 0.75, A.seeded_noise(model, len(imgs), 0.75, 0))
    assert list(errors) == ["model", "predict_zero", "mean_colour", "interpolate", "flat_true_mean"]
    assert all(np.isfinite(v) and v >= 0 for v in errors.values())


def test_pca_project_keeps_the_main_directions():
    from maelib.evaluation import pca_project

    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(20, 20, generator=g))[0][:, :3]  # 3 orthonormal directions in 20-d
    train = torch.randn(500, 3, generator=g) * torch.tensor([5.0, 3.0, 2.0]) @ basis.T + 7.0
    test = torch.randn(50, 3, generator=g) @ basis.T + 7.0
    a_train, a_test = pca_project(train, test, 3, seed=1)
    assert a_train.shape == (500, 3) and a_test.shape == (50, 3)
    # 3 components of data that lives in 3 directions lose nothing: distances are kept
    dist = lambda x: (x[:, None] - x[None]).norm(dim=-1)  # exact pairwise distances (cdist rounds near 0)
    assert torch.allclose(dist(a_test), dist(test), atol=1e-3)
    assert torch.equal(pca_project(train, test, 3, seed=1)[1], a_test)  # seeded


def test_mean_attention_distance_renormalises_a_query_that_looks_only_at_the_cls_token():
    # 1 image, 1 head, cls + 4 patches (2x2 grid, 4 px): patch 0 puts 1 - 1e-25 on the cls token and the rest
    # evenly on patches 0 and 3 (distance 0 and 4*sqrt(2)); the other queries attend to themselves (distance 0)
    a = torch.zeros(1, 1, 5, 5)
    a[0, 0, 1, 0], a[0, 0, 1, 1], a[0, 0, 1, 4] = 1.0, 5e-26, 5e-26
    for q in (2, 3, 4):
        a[0, 0, q, q] = 1.0
    expected = (0.5 * 0 + 0.5 * 4 * 2**0.5) / 4  # averaged over the 4 queries
    assert A.mean_attention_distance(a, grid=2, patch_size=4).item() == pytest.approx(expected, rel=1e-5)
