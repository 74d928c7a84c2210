"""The PCA and k-means token targets (maelib.targets and the model's `target` option): the fits, the shapes, a loss
on hidden patches only, checkpoints that carry the fit, and tiny runs that learn past their trivial level."""

import pytest
import torch

import maelib
from maelib.analysis import seeded_noise
from maelib.evaluation.masked_loss import masked_loss_levels
from maelib.experiments.ablation import run_ablation, target_fields
from maelib.targets import fit_kmeans, fit_pca, nearest_centre, pca_coordinates, pca_patches
from maelib.weights.checkpoint import load_model_file, save_model


def test_pca_finds_the_leading_directions():
    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(6, 6, generator=g))[0]  # orthonormal columns
    stds = torch.tensor([5.0, 3.0, 2.0, 1.0, 0.5, 0.1])
    x = (torch.randn(20000, 6, generator=g) * stds) @ basis.T + 7.0
    mean, components, std = fit_pca(x, 3)
    assert components.shape == (3, 6) and std.shape == (3,)
    assert torch.allclose(mean, torch.full((6,), 7.0), atol=0.1)
    for i in range(3):  # the same directions as the true basis (up to sign), in order of variance
        assert abs(torch.dot(components[i], basis[:, i])) > 0.99
    assert torch.allclose(std, stds[:3], rtol=0.03)
    coords = pca_coordinates(x, mean, components)
    assert torch.allclose(coords.std(0), stds[:3], rtol=0.03)  # the coefficients keep each direction's spread
    mean6, components6, _ = fit_pca(x, 6)  # all components: the inverse gives the patches back
    assert torch.allclose(pca_patches(pca_coordinates(x[:5], mean6, components6), mean6, components6), x[:5], atol=1e-3)
    # and the squared error in coefficients is the squared error in pixels (a rotation)
    other = x[5:10]
    in_coeffs = (pca_coordinates(x[:5], mean6, components6) - pca_coordinates(other, mean6, components6)).pow(2).sum()
    assert torch.allclose(in_coeffs, (x[:5] - other).pow(2).sum(), rtol=1e-4)


def test_kmeans_recovers_separated_clusters():
    g = torch.Generator().manual_seed(1)
    true = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    counts = [400, 300, 200, 100]
    x = torch.cat([c + 0.3 * torch.randn(n, 2, generator=g) for c, n in zip(true, counts)])
    centres, prior = fit_kmeans(x, 4, seed=0)
    order = nearest_centre(true, centres)  # which fitted centre each true one became
    assert sorted(order.tolist()) == [0, 1, 2, 3]
    assert torch.allclose(centres[order], true, atol=0.1)
    assert torch.allclose(prior[order], torch.tensor(counts) / 1000.0)
    brute = torch.cdist(x, centres).argmin(1)
    assert torch.equal(nearest_centre(x, centres), brute)
    with pytest.raises(ValueError, match="at least 5 patches"):
        fit_kmeans(x[:4], 5)


def _images(n=64, seed=0):
    """Fashion-MNIST-like inputs: blobs on a flat background, so patches have structure to fit."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    centres = torch.rand(n, 2, generator=g) * 14 + 7
    d2 = (yy - centres[:, 0, None, None]) ** 2 + (xx - centres[:, 1, None, None]) ** 2
    return torch.exp(-d2 / 30).unsqueeze(1) * 2 - 0.5


@pytest.mark.parametrize("target,k", [("pca", 6), ("tokens", 16)])
def test_shapes_and_loss_on_hidden_patches_only(target, k):
    model = maelib.create_model("mae_vit_mini_patch4_28", depth=1, target=target, target_dim=k)
    imgs = _images()
    with pytest.raises(ValueError, match="not fitted yet: call model.fit_target"):
        model(imgs)
    model.fit_target(imgs)
    assert model.decoder_pred.out_features == k
    target_values = model.loss_target(imgs)
    assert target_values.shape == ((64, 49, k) if target == "pca" else (64, 49))
    assert target_values.dtype == (torch.long if target == "tokens" else torch.float32)
    noise = seeded_noise(model, 64, 0.75, 0)
    loss, pred, mask = model(imgs, noise=noise)
    assert pred.shape == (64, 49, k)
    visible = (1 - mask).bool().unsqueeze(-1).expand_as(pred)
    other = pred + 5.0 * torch.randn(pred.shape, generator=torch.Generator().manual_seed(0))
    changed = model.forward_loss(imgs, torch.where(visible, other, pred), mask)
    assert torch.allclose(changed, loss)  # predictions of visible patches do not count
    hidden = model.forward_loss(imgs, torch.where(visible, pred, other), mask)
    assert not torch.allclose(hidden, loss)
    assert model.pred_to_images(pred, imgs).shape == imgs.shape


def test_the_trivial_levels_by_hand():
    imgs = _images()
    pca = maelib.create_model("mae_vit_mini_patch4_28", depth=1, target="pca", target_dim=6).fit_target(imgs)
    coords = pca.loss_target(imgs)
    assert torch.allclose(pca.trivial_patch_loss(imgs), coords.pow(2).mean(-1))  # predicting the mean coordinates
    tokens = maelib.create_model("mae_vit_mini_patch4_28", depth=1, target="tokens", target_dim=16).fit_target(imgs)
    ids = tokens.loss_target(imgs)
    assert torch.allclose(tokens.trivial_patch_loss(imgs), -tokens.target_prior[ids].log())
    # a decoder whose logits are the log prior scores exactly that level
    prior_logits = tokens.target_prior.log().expand(64, 49, 16)
    mask = torch.ones(64, 49)
    assert torch.allclose(tokens.forward_loss(imgs, prior_logits, mask), tokens.trivial_patch_loss(imgs).mean())
    levels = masked_loss_levels(tokens, [(imgs, torch.zeros(64))], 0.75)
    assert levels["target_patch_mean"] is None and levels["target_predict_zero"] > 0


def test_a_checkpoint_carries_the_fit(tmp_path):
    imgs = _images()
    model = maelib.create_model("mae_vit_mini_patch4_28", depth=1, target="tokens", target_dim=16).fit_target(imgs)
    again = load_model_file(save_model(model, tmp_path / "tokens.safetensors"))
    assert again.target_is_fitted and torch.equal(again.target_centres, model.target_centres)
    noise = seeded_noise(model, 64, 0.75, 0)
    assert torch.allclose(again(imgs, noise=noise)[0], model(imgs, noise=noise)[0])
    with pytest.raises(ValueError, match="ViTMAE predicts pixels"):
        maelib.weights.convert.to_hf(model)
    assert "target_fitted" not in maelib.create_model("mae_vit_mini_patch4_28").state_dict()  # official keys only


def test_bad_target_settings_are_named():
    with pytest.raises(ValueError, match="target must be one of"):
        maelib.create_model("mae_vit_mini_patch4_28", target="dvae")
    with pytest.raises(ValueError, match=r"1 <= target_dim <= 16"):
        maelib.create_model("mae_vit_mini_patch4_28", target="pca", target_dim=40)
    with pytest.raises(ValueError, match="target_dim >= 2"):
        maelib.create_model("mae_vit_mini_patch4_28", target="tokens")
    with pytest.raises(ValueError, match="leave target_dim=0"):
        maelib.create_model("mae_vit_mini_patch4_28", target_dim=8)


@pytest.mark.parametrize("target", ["pca", "tokens"])
def test_a_tiny_run_learns_past_its_trivial_level(target):
    """Pretraining fits the target on the training images itself, then learns: the held-out masked loss ends
    clearly below the level of a decoder that learned nothing (predicting the mean, or the token frequencies)."""
    r = run_ablation(target=target, steps=150, batch_size=64, base_lr=8e-3, train_images=2000, eval_train_images=200,
                     eval_test_images=200, arch_overrides={"embed_dim": 64, "num_heads": 2, "decoder_num_heads": 2},
                     decoder_embed_dim=48, threads=2)
    assert r["target"] == target and r["target_dim"] == target_fields(target)["target_dim"]
    assert r["val_loss"] < 0.96 * r["target_predict_zero"], (r["val_loss"], r["target_predict_zero"])
