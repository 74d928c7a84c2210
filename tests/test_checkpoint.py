"""Loading and saving weights: maelib's safetensors, the official .pth format, safety, clear errors."""

import argparse
import os
import pickle

import pytest
import torch

import maelib
from maelib import create_model, load_model, load_official, load_weights, read_state_dict, save_model


def official_key_names(depth: int, decoder_depth: int) -> set[str]:
    """The parameter names of facebookresearch/mae's MaskedAutoencoderViT, written out by hand."""
    def block(prefix):
        return {f"{prefix}.{m}.{p}" for m in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")
                for p in ("weight", "bias")}
    keys = {"cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight", "norm.bias",
            "decoder_embed.weight", "decoder_embed.bias", "mask_token", "decoder_pos_embed", "decoder_norm.weight",
            "decoder_norm.bias", "decoder_pred.weight", "decoder_pred.bias"}
    for i in range(depth):
        keys |= block(f"blocks.{i}")
    for i in range(decoder_depth):
        keys |= block(f"decoder_blocks.{i}")
    return keys


def test_parameter_names_are_the_official_ones():
    with torch.device("meta"):
        m = create_model("mae_vit_large_patch16")
    assert set(m.state_dict()) == official_key_names(24, 8)


def write_official(path, state_dict, **extra):
    """As the official main_pretrain.py saves: model, optimizer, epoch, args (an argparse Namespace)."""
    torch.save({"model": state_dict, "epoch": 3, "args": argparse.Namespace(model="mae_vit_large_patch16"), **extra}, path)


def test_official_checkpoint_loads(tmp_path):
    torch.manual_seed(0)
    src = create_model("mae_vit_mini_patch4_28")
    write_official(tmp_path / "checkpoint-3.pth", src.state_dict(), optimizer={"state": {}, "param_groups": []})
    model = load_official(tmp_path / "checkpoint-3.pth", "mae_vit_mini_patch4_28")
    imgs, noise = torch.randn(2, 1, 28, 28), torch.rand(2, 49)
    assert torch.equal(model(imgs, noise=noise)[1], src(imgs, noise=noise)[1])


def test_encoder_only_checkpoint_loads_with_a_warning(tmp_path):
    src = create_model("mae_vit_mini_patch4_28")
    encoder = {k: v for k, v in src.state_dict().items() if not k.startswith(("decoder", "mask_token"))}
    torch.save({"model": encoder}, tmp_path / "mae_pretrain.pth")
    with pytest.warns(UserWarning, match="encoder-only"):
        model = load_official(tmp_path / "mae_pretrain.pth", "mae_vit_mini_patch4_28")
    assert torch.equal(model.forward_features(torch.ones(1, 1, 28, 28)), src.forward_features(torch.ones(1, 1, 28, 28)))


def test_mismatched_checkpoint_names_every_problem(tmp_path):
    src = create_model("mae_vit_mini_patch4_28", depth=3, embed_dim=64)
    sd = src.state_dict()
    sd["head.weight"] = torch.zeros(10, 64)
    torch.save({"model": sd}, tmp_path / "other.pth")
    with pytest.raises(ValueError) as err:
        load_official(tmp_path / "other.pth", "mae_vit_mini_patch4_28")
    msg = str(err.value)
    assert "missing keys: blocks.3." in msg
    assert "unexpected keys: head.weight" in msg
    assert "mis-shaped keys: cls_token: checkpoint (1, 1, 64) vs model (1, 1, 128)" in msg
    assert "encoder 128x4" in msg  # describes the model it tried
    # a fine-tuned checkpoint's extra keys can be dropped on purpose
    sd = create_model("mae_vit_mini_patch4_28").state_dict()
    sd["head.weight"] = torch.zeros(10, 128)
    load_weights(create_model("mae_vit_mini_patch4_28"), sd, ignore=("head.",))


def test_position_embeddings_are_resized_for_another_image_size():
    src = create_model("mae_vit_mini_patch4_28")
    bigger = create_model("mae_vit_mini_patch4_28", img_size=56)
    load_weights(bigger, src.state_dict())
    assert bigger.pos_embed.shape == (1, 197, 128)
    assert torch.equal(bigger.blocks[0].attn.qkv.weight, src.blocks[0].attn.qkv.weight)
    with pytest.raises(ValueError, match="resize_pos=True"):
        load_weights(create_model("mae_vit_mini_patch4_28", img_size=56), src.state_dict(), resize_pos=False)


def test_maelib_format_round_trip(tmp_path):
    torch.manual_seed(0)
    src = create_model("mae_vit_tiny_patch4_32", depth=2, norm_pix_loss=True, masking="grid")
    path = save_model(src, tmp_path / "model.safetensors", metadata={"epoch": "7"})
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]  # atomic write left nothing behind
    model = load_model(path)  # rebuilt from the file alone
    assert model.config == src.config
    for k, v in src.state_dict().items():
        assert torch.equal(v, model.state_dict()[k])
    assert read_state_dict(path)[1]["epoch"] == "7"


def test_load_model_explains_foreign_files(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(ValueError, match="no maelib config in it: name its architecture"):
        load_model(tmp_path / "x.safetensors")
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "x.safetensors").read_bytes()[:20])
    with pytest.raises(ValueError, match="truncated"):
        load_model(tmp_path / "cut.safetensors")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_model(tmp_path / "missing.safetensors")


class Exploit:
    """Unpickling this would run a shell command."""

    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_code_carrying_pickle_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open("evil.pth", "wb") as f:
        pickle.dump({"model": Exploit()}, f, protocol=2)
    with pytest.raises(ValueError, match="refused to load .*arbitrary code"):
        load_official("evil.pth", "mae_vit_mini_patch4_28")
    assert not (tmp_path / "pwned").exists()


def test_lightning_checkpoint_state_dict_is_unwrapped(tmp_path):
    src = create_model("mae_vit_mini_patch4_28")
    torch.save({"state_dict": {f"model.{k}": v for k, v in src.state_dict().items()}, "epoch": 1}, tmp_path / "l.ckpt")
    sd, _ = read_state_dict(tmp_path / "l.ckpt")
    assert set(sd) == set(src.state_dict())


def test_checkpoint_config_reads_the_header_only(tmp_path):
    from maelib.weights.checkpoint import checkpoint_config

    model = maelib.create_model("mae_vit_mini_patch4_28", norm_pix_loss=False)
    path = maelib.save_model(model, tmp_path / "m.safetensors")
    assert checkpoint_config(path) == model.config
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
    assert checkpoint_config(tmp_path / "plain.safetensors") is None
    save_file({"w": torch.zeros(1)}, str(tmp_path / "bad.safetensors"), metadata={"config": "{not json"})
    with pytest.raises(ValueError, match="bad.safetensors"):
        checkpoint_config(tmp_path / "bad.safetensors")
    (tmp_path / "text.safetensors").write_text("hello")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        checkpoint_config(tmp_path / "text.safetensors")


@pytest.mark.parametrize("pool", ["avg", "token"])
def test_encoder_weights_go_from_timm_back_to_the_mae(pool):
    from maelib.weights.convert import encoder_state_from_timm_vit, to_timm_vit

    torch.manual_seed(0)
    mae = maelib.create_model("mae_vit_mini_patch4_28")
    vit = to_timm_vit(mae, num_classes=10, global_pool=pool)
    with torch.no_grad():
        vit.blocks[1].mlp.fc1.weight.add_(0.5)  # as if fine-tuned
    back = maelib.create_model("mae_vit_mini_patch4_28")
    missing, unexpected = back.load_state_dict(encoder_state_from_timm_vit(vit), strict=False)
    assert unexpected == [] and all(k.startswith(("decoder", "mask_token")) for k in missing)
    assert torch.equal(back.blocks[1].mlp.fc1.weight, vit.blocks[1].mlp.fc1.weight)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        if pool == "token":  # the normed tokens are the same
            assert torch.allclose(back.forward_features(x), vit.forward_features(x), atol=1e-5)
        else:  # pooled: timm's fc_norm of the mean patch token is the MAE's final norm of the same mean
            tokens = torch.cat([(back.cls_token + back.pos_embed[:, :1]).expand(2, -1, -1),
                                back.patch_embed(x) + back.pos_embed[:, 1:]], dim=1)
            for blk in back.blocks:
                tokens = blk(tokens)
            pooled = vit.forward_head(vit.forward_features(x), pre_logits=True)
            assert torch.allclose(back.norm(tokens[:, 1:].mean(1)), pooled, atol=1e-5)


def test_a_safetensors_header_length_ending_in_0x80_is_not_taken_for_a_pickle(tmp_path):
    """A safetensors file starts with its header's length, little-endian: 1 file in 256 has 0x80 as its first byte,
    which is also how a pickle starts. Such a file (an encoder 32 wide, say) must still load as safetensors."""
    from safetensors.torch import save_file

    from maelib.weights.checkpoint import file_format, read_state_dict

    for pad in range(300):
        path = tmp_path / "m.safetensors"
        save_file({"w": torch.zeros(3)}, str(path), metadata={"note": "x" * pad})
        if path.read_bytes()[0] == 0x80:
            break
    assert path.read_bytes()[0] == 0x80
    assert file_format(path) == "safetensors"
    tensors, metadata = read_state_dict(path)
    assert torch.equal(tensors["w"], torch.zeros(3)) and metadata["note"].startswith("x")
