"""The MaskedAutoencoder's behaviour: shapes, the loss, masking modes, teaching helpers, the registry."""

import pytest
import torch

import maelib
from maelib import MAEConfig, MaskedAutoencoder, create_model


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return create_model("mae_vit_mini_patch4_28", depth=2, norm_pix_loss=False)


def test_forward_shapes(tiny):
    imgs = torch.randn(3, 1, 28, 28)
    loss, pred, mask = tiny(imgs)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert pred.shape == (3, 49, 16) and mask.shape == (3, 49)
    assert torch.all(mask.sum(1) == 49 - 12)  # int(49 * 0.25) = 12 visible
    latent, _, _ = tiny.forward_encoder(imgs, 0.75)
    assert latent.shape == (3, 1 + 12, 128)  # the encoder sees only the visible patches (+ cls)


def test_loss_ignores_visible_patch_predictions(tiny):
    imgs = torch.randn(2, 1, 28, 28)
    _, pred, mask = tiny(imgs)
    pred = pred.detach().requires_grad_(True)
    tiny.forward_loss(imgs, pred, mask).backward()
    grad_per_patch = pred.grad.abs().sum(-1)  # (N, L)
    assert torch.all(grad_per_patch[mask == 0] == 0)
    assert torch.all(grad_per_patch[mask == 1] > 0)


def test_loss_is_masked_mse_by_hand(tiny):
    imgs = torch.randn(2, 1, 28, 28)
    noise = torch.rand(2, 49)
    for norm_pix in (False, True):
        tiny.config.norm_pix_loss = norm_pix
        loss, pred, mask = tiny(imgs, noise=noise)
        target = maelib.patchify(imgs, 4)
        if norm_pix:
            target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
        hidden = mask.bool()
        assert torch.allclose(loss, ((pred - target) ** 2)[hidden].mean(), atol=1e-6)


def test_same_noise_same_output_and_noise_fixes_mask(tiny):
    imgs = torch.randn(2, 1, 28, 28)
    noise = torch.rand(2, 49)
    a = tiny(imgs, noise=noise)
    b = tiny(imgs, noise=noise)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert not torch.equal(tiny(imgs)[2], a[2])  # fresh noise, new mask


def test_ratio_zero_encodes_the_whole_image(tiny):
    imgs = torch.randn(2, 1, 28, 28)
    latent, mask, ids_restore = tiny.forward_encoder(imgs, 0.0)
    assert latent.shape[1] == 50 and mask.sum() == 0
    # same tokens as the unmasked features, up to the order the noise shuffled them in
    feats = tiny.forward_features(imgs)
    unshuffled = torch.gather(latent[:, 1:], 1, ids_restore.unsqueeze(-1).expand(-1, -1, 128))
    assert torch.allclose(unshuffled, feats[:, 1:], atol=1e-5)
    assert torch.allclose(latent[:, 0], feats[:, 0], atol=1e-5)


@pytest.mark.parametrize("bad", [1.0, 1.5, -0.2])
def test_bad_mask_ratio(tiny, bad):
    with pytest.raises(ValueError, match="mask_ratio"):
        tiny(torch.randn(1, 1, 28, 28), mask_ratio=bad)


def test_bad_images_are_named(tiny):
    with pytest.raises(ValueError, match="3 channels but the model expects 1"):
        tiny(torch.randn(2, 3, 28, 28))
    with pytest.raises(ValueError, match="32x32 but the model expects 28x28"):
        tiny(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        tiny(torch.randn(1, 28, 28))
    with pytest.raises(ValueError, match="not a multiple of the patch size"):
        MAEConfig(img_size=30, patch_size=4)


def test_norm_pix_loss_needs_more_than_one_value_per_patch():
    with pytest.raises(ValueError, match="norm_pix_loss.*patch_size >= 2"):
        MAEConfig(img_size=8, patch_size=1, in_chans=1, norm_pix_loss=True, embed_dim=16, num_heads=2,
                  decoder_embed_dim=16, decoder_num_heads=2)
    # one pixel of three channels has a std, and the loss stays finite; plain pixel loss works at patch 1 too
    for chans, norm_pix in [(3, True), (1, False)]:
        m = MaskedAutoencoder(MAEConfig(img_size=8, patch_size=1, in_chans=chans, norm_pix_loss=norm_pix, embed_dim=16,
                                        depth=1, num_heads=2, decoder_embed_dim=16, decoder_depth=1,
                                        decoder_num_heads=2))
        assert torch.isfinite(m(torch.randn(2, chans, 8, 8))[0])


def test_encoder_with_mask_tokens_ablation():
    torch.manual_seed(0)
    m = create_model("mae_vit_mini_patch4_28", depth=2, encoder_mask_tokens=True)
    imgs = torch.randn(2, 1, 28, 28)
    latent, mask, _ = m.forward_encoder(imgs, 0.75)
    assert latent.shape == (2, 50, 128)  # every position goes through the encoder
    loss, pred, _ = m(imgs)
    loss.backward()
    assert m.encoder_mask_token.grad.abs().sum() > 0
    # hidden pixels cannot leak: changing only hidden patches leaves the encoder output unchanged
    noise = torch.rand(2, 49)
    _, _, mask = m(imgs, noise=noise)
    hidden = m.unpatchify(mask.unsqueeze(-1).expand(-1, -1, 16))
    a, _, _ = m.forward_encoder(imgs, 0.75, noise)
    b, _, _ = m.forward_encoder(imgs + 5 * hidden * torch.randn_like(imgs), 0.75, noise)
    assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("masking", ["random", "block", "grid"])
def test_masking_strategies_in_the_model(masking):
    m = create_model("mae_vit_mini_patch4_28", depth=1, masking=masking)
    _, _, mask = m(torch.randn(2, 1, 28, 28))
    assert torch.all(mask.sum(1) == 37)


@pytest.mark.parametrize("in_chans, patch", [(3, 16), (1, 4)])
def test_patch_embedding_as_one_matmul_equals_the_convolution(in_chans, patch):
    """LinearPatchEmbed computes timm's convolutional PatchEmbed as a matrix product: same outputs and gradients."""
    from timm.layers import PatchEmbed

    torch.manual_seed(0)
    ours = maelib.patches.LinearPatchEmbed(patch * 4, patch, in_chans, 32)
    conv = PatchEmbed(patch * 4, patch, in_chans, 32)
    conv.load_state_dict(ours.state_dict())
    imgs = torch.randn(3, in_chans, patch * 4, patch * 4)
    out, ref = ours(imgs), conv(imgs)
    assert out.shape == ref.shape == (3, 16, 32)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(out)
    (out * grad).sum().backward()
    (ref * grad).sum().backward()
    torch.testing.assert_close(ours.proj.weight.grad, conv.proj.weight.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.proj.bias.grad, conv.proj.bias.grad, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match=f"expects {patch * 4}x{patch * 4}"):
        ours(torch.randn(1, in_chans, patch * 5, patch * 5))


def test_features_and_pooling(tiny):
    imgs = torch.randn(2, 1, 28, 28)
    tokens = tiny.forward_features(imgs)
    assert tokens.shape == (2, 50, 128)
    assert torch.equal(tiny.features(imgs, "cls"), tokens[:, 0])
    raw = tiny.forward_features(imgs, norm=False)  # the last block's outputs, before the final LayerNorm
    assert torch.equal(tiny.norm(raw), tokens)
    # "mean" is global average pooling as the paper's fine-tuning computes it: average, then LayerNorm
    assert torch.allclose(tiny.features(imgs, "mean"), tiny.norm(raw[:, 1:].mean(1)))
    assert not torch.allclose(tiny.features(imgs, "mean"), tokens[:, 1:].mean(1), atol=1e-3)
    assert torch.equal(tiny.features(imgs, "avg"), tiny.features(imgs, "mean"))  # timm's names mean the same
    assert torch.equal(tiny.features(imgs, "token"), tiny.features(imgs, "cls"))
    with pytest.raises(ValueError, match="pool must be 'cls'.*'mean'.*got 'max'"):
        tiny.features(imgs, "max")


def test_pred_to_images_unnormalises_norm_pix():
    m = create_model("mae_vit_mini_patch4_28", depth=1, norm_pix_loss=True)
    imgs = torch.rand(2, 1, 28, 28)
    perfect = maelib.normalize_patches(m.patchify(imgs))  # what a perfect norm_pix model predicts
    assert torch.allclose(m.pred_to_images(perfect, imgs), imgs, atol=1e-5)
    assert not torch.allclose(m.pred_to_images(perfect), imgs, atol=1e-2)


def test_paste_visible_equals_input_on_visible(tiny):
    imgs = torch.randn(2, 1, 28, 28)
    _, pred, mask = tiny(imgs)
    recon = tiny.pred_to_images(pred, imgs)
    pasted = tiny.paste_visible(imgs, recon, mask)
    visible = tiny.unpatchify((1 - mask).unsqueeze(-1).expand(-1, -1, 16)).bool()
    assert torch.equal(pasted[visible], imgs[visible])
    assert torch.equal(pasted[~visible], recon[~visible])


def test_no_weight_decay_names_exist(tiny):
    names = {n for n, _ in tiny.named_parameters()} | {n for n, _ in tiny.named_buffers()}
    assert {"cls_token", "mask_token", "pos_embed", "decoder_pos_embed"} <= names
    assert not tiny.pos_embed.requires_grad  # fixed sin-cos, not trained


def test_initialisation_follows_the_paper(tiny):
    assert torch.all(tiny.norm.weight == 1) and torch.all(tiny.blocks[0].attn.qkv.bias == 0)
    w = tiny.blocks[0].mlp.fc1.weight
    bound = (6 / sum(w.shape)) ** 0.5  # xavier uniform
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound
    assert 0.01 < tiny.cls_token.std() < 0.03


@pytest.mark.parametrize("name", maelib.list_models())
def test_registry_models_match_timm_encoder_size(name):
    from timm.models.vision_transformer import VisionTransformer

    with torch.device("meta"):
        m = create_model(name)
        c = m.config
        vit = VisionTransformer(
            img_size=c.img_size, patch_size=c.patch_size, in_chans=c.in_chans, num_classes=0,
            embed_dim=c.embed_dim, depth=c.depth, num_heads=c.num_heads, mlp_ratio=c.mlp_ratio,
        )
    vit_params = sum(p.numel() for p in vit.parameters()) - vit.pos_embed.numel()  # ours is a fixed buffer
    assert m.num_params("encoder") == vit_params
    assert m.num_params("decoder") > 0 and m.num_params() == m.num_params("encoder") + m.num_params("decoder")


def test_paper_model_sizes():
    with torch.device("meta"):
        base = create_model("mae_vit_base_patch16")
        huge = create_model("mae_vit_huge_patch14")
    assert round(base.num_params("encoder") / 1e6, 1) == 85.6  # ViT-B/16 without head, fixed positions
    assert huge.config.patch_size == 14 and huge.config.depth == 32
    assert base.config.decoder_embed_dim == 512 and base.config.decoder_depth == 8


def test_unknown_names_and_fields():
    with pytest.raises(ValueError, match="unknown model"):
        create_model("mae_vit_giant")
    with pytest.raises(ValueError, match="unknown MAEConfig fields"):
        create_model("mae_vit_mini_patch4_28", depthh=3)


def test_trains_a_few_steps():
    torch.manual_seed(0)
    m = create_model("mae_vit_mini_patch4_28", depth=2)
    imgs = torch.rand(16, 1, 28, 28)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    noise = torch.rand(16, 49)
    losses = []
    for _ in range(30):
        loss, _, _ = m(imgs, noise=noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
