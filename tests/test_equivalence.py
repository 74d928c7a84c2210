"""maelib against Hugging Face transformers' ViTMAE and timm's VisionTransformer, in numbers (float32)."""

import re

import pytest
import torch

import maelib
from maelib.weights.convert import from_hf_state_dict, hf_config_kwargs, to_hf_state_dict

transformers = pytest.importorskip("transformers")
modeling = pytest.importorskip("transformers.models.vit_mae.modeling_vit_mae")

TOL = 1e-5
SIZES = {
    "tiny": dict(name="mae_vit_mini_patch4_28", overrides={}),
    "vit_b": dict(name="mae_vit_base_patch16", overrides={}),  # the real ViT-B/16 shape, 224 px
}


def random_hf_model(config: maelib.MAEConfig):
    """A randomly initialised ViTMAEForPreTraining with its real sin-cos positions and non-zero tokens."""
    torch.manual_seed(0)
    hf = transformers.ViTMAEForPreTraining(transformers.ViTMAEConfig(**hf_config_kwargs(config))).eval()
    # transformers 5.x leaves the position embeddings and tokens at zero in a fresh model: fill them with
    # transformers' own sin-cos (so the comparison covers position embeddings) and random tokens.
    for pos, dim in [(hf.vit.embeddings.position_embeddings, config.embed_dim),
                     (hf.decoder.decoder_pos_embed, config.decoder_embed_dim)]:
        ref = modeling.build_2d_sinusoidal_position_embedding(
            height=config.grid_size, width=config.grid_size, embed_dim=dim, cls_token=True)
        pos.data.copy_(torch.cat([ref[..., dim // 2:], ref[..., :dim // 2]], dim=-1))
    with torch.no_grad():
        for p in (hf.vit.embeddings.cls_token, hf.decoder.mask_token):
            p.normal_(std=0.02)
        for name, p in hf.named_parameters():
            if name.endswith("bias") or "layernorm" in name or "norm" in name:
                p.normal_(std=0.05)  # non-trivial biases and norms so a mis-mapped one shows
    return hf


@pytest.mark.parametrize("size", sorted(SIZES))
@pytest.mark.parametrize("norm_pix", [False, True])
def test_same_mask_prediction_and_loss_as_transformers(size, norm_pix):
    spec = SIZES[size]
    config = maelib.model_config(spec["name"], norm_pix_loss=norm_pix, **spec["overrides"])
    hf = random_hf_model(config)
    ours = maelib.from_hf(hf).eval()
    assert torch.equal(ours.pos_embed, maelib.sincos_2d(config.embed_dim, config.grid_size))
    torch.manual_seed(1)
    imgs = torch.randn(2, config.in_chans, config.img_size, config.img_size)
    noise = torch.rand(2, config.num_patches)
    with torch.no_grad():
        loss, pred, mask = ours(imgs, noise=noise)
        out = hf(pixel_values=imgs, noise=noise)
    assert torch.equal(mask, out.mask)
    assert torch.equal(ours.forward_encoder(imgs, 0.75, noise)[2], out.ids_restore)
    assert (pred - out.logits).abs().max() <= TOL
    assert (loss - out.loss).abs() <= TOL


def test_round_trip_to_transformers_is_exact():
    torch.manual_seed(0)
    ours = maelib.create_model("mae_vit_mini_patch4_28", depth=2)
    hf = maelib.to_hf(ours).eval()
    back = maelib.from_hf(hf)
    for k, v in ours.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k
    imgs, noise = torch.randn(2, 1, 28, 28), torch.rand(2, 49)
    with torch.no_grad():
        assert (ours(imgs, noise=noise)[1] - hf(pixel_values=imgs, noise=noise).logits).abs().max() <= TOL


def test_transformers_4x_names_are_read():
    hf = random_hf_model(maelib.model_config("mae_vit_mini_patch4_28", depth=2))
    v5 = hf.state_dict()
    to_v4 = [(r"^vit\.layers\.", "vit.encoder.layer."), (r"attention\.q_proj", "attention.attention.query"),
             (r"attention\.k_proj", "attention.attention.key"), (r"attention\.v_proj", "attention.attention.value"),
             (r"attention\.o_proj", "attention.output.dense"), (r"mlp\.fc1", "intermediate.dense"),
             (r"mlp\.fc2", "output.dense")]
    v4 = {}
    for k, v in v5.items():
        for a, b in to_v4:
            k = re.sub(a, b, k)
        v4[k] = v
    assert "vit.encoder.layer.0.attention.attention.query.weight" in v4
    a, b = from_hf_state_dict(v5), from_hf_state_dict(v4)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert to_hf_state_dict(a).keys() == v5.keys()


def test_hf_directory_loads(tmp_path):
    hf = random_hf_model(maelib.model_config("mae_vit_mini_patch4_28", depth=1))
    hf.save_pretrained(tmp_path)  # what a hub download leaves on disk
    ours = maelib.from_hf(str(tmp_path))
    assert ours.config.norm_eps == 1e-6 and ours.config.depth == 1
    assert torch.equal(ours.blocks[0].attn.qkv.weight[:128], hf.vit.layers[0].attention.q_proj.weight)


@pytest.mark.parametrize("pool", ["token", "avg"])
def test_timm_export_gives_the_same_encoder_features(pool):
    torch.manual_seed(0)
    ours = maelib.create_model("mae_vit_tiny_patch4_32", depth=3).eval()
    vit = maelib.to_timm_vit(ours, global_pool=pool).eval()
    imgs = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        tokens = ours.forward_features(imgs)  # (N, 1+L, D), normed
        pooled = vit.forward_head(vit.forward_features(imgs), pre_logits=True)
        if pool == "token":
            assert (vit.forward_features(imgs) - tokens).abs().max() <= TOL
            assert (pooled - tokens[:, 0]).abs().max() <= TOL
        else:  # timm averages the pre-norm patch tokens, then applies fc_norm (= our final norm's weights)
            raw = vit.forward_features(imgs)  # norm is Identity under avg pooling
            expected = ours.norm(raw[:, 1:].mean(1))
            assert torch.allclose(ours.norm(raw), tokens, atol=TOL)
            assert (pooled - expected).abs().max() <= TOL
        assert (pooled - ours.features(imgs, pool=pool)).abs().max() <= TOL  # one meaning for each pooling name


def test_timm_export_with_head_and_new_size():
    ours = maelib.create_model("mae_vit_tiny_patch4_32", depth=2)
    vit = maelib.to_timm_vit(ours, num_classes=10, img_size=64)
    assert vit(torch.randn(2, 3, 64, 64)).shape == (2, 10)
    assert vit.pos_embed.shape == (1, 1 + 256, 192)
