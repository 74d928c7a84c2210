"""Conversions to and from the models MAE users already have.

- Hugging Face transformers `ViTMAEForPreTraining` (both its 4.x and 5.x parameter names): `from_hf`, `to_hf`.
- timm `VisionTransformer` for fine-tuning, with cls-token or global-average pooling: `to_timm_vit`.
"""

from __future__ import annotations

import os
import re
from functools import partial

import torch
import torch.nn as nn

from ..model import MAEConfig, MaskedAutoencoder, check_pool
from ..pos_embed import resize_pos_embed
from ..validate import check_int

# transformers 4.x names -> 5.x names (the 5.x layout is what `to_hf_state_dict` writes).
_HF_V4_TO_V5 = [
    (r"^vit\.encoder\.layer\.", "vit.layers."),
    (r"\.attention\.attention\.query\.", ".attention.q_proj."),
    (r"\.attention\.attention\.key\.", ".attention.k_proj."),
    (r"\.attention\.attention\.value\.", ".attention.v_proj."),
    (r"\.attention\.output\.dense\.", ".attention.o_proj."),
    (r"\.intermediate\.dense\.", ".mlp.fc1."),
    (r"\.output\.dense\.", ".mlp.fc2."),
]
# maelib (official) names <-> Hugging Face names, for everything but the fused qkv.
_RENAMES = [
    ("patch_embed.proj.", "vit.embeddings.patch_embeddings.projection."),
    ("cls_token", "vit.embeddings.cls_token"),
    ("pos_embed", "vit.embeddings.position_embeddings"),
    ("norm.", "vit.layernorm."),
    ("decoder_embed.", "decoder.decoder_embed."),
    ("mask_token", "decoder.mask_token"),
    ("decoder_pos_embed", "decoder.decoder_pos_embed"),
    ("decoder_norm.", "decoder.decoder_norm."),
    ("decoder_pred.", "decoder.decoder_pred."),
]
_BLOCK_RENAMES = [
    ("norm1.", "layernorm_before."),
    ("attn.proj.", "attention.o_proj."),
    ("norm2.", "layernorm_after."),
    ("mlp.fc1.", "mlp.fc1."),
    ("mlp.fc2.", "mlp.fc2."),
]
_STACKS = [("blocks.", "vit.layers."), ("decoder_blocks.", "decoder.decoder_layers.")]


def hf_config_kwargs(config: MAEConfig) -> dict:
    """ViTMAEConfig keyword arguments for the same architecture."""
    return dict(
        image_size=config.img_size,
        patch_size=config.patch_size,
        num_channels=config.in_chans,
        hidden_size=config.embed_dim,
        num_hidden_layers=config.depth,
        num_attention_heads=config.num_heads,
        intermediate_size=int(config.embed_dim * config.mlp_ratio),
        decoder_hidden_size=config.decoder_embed_dim,
        decoder_num_hidden_layers=config.decoder_depth,
        decoder_num_attention_heads=config.decoder_num_heads,
        decoder_intermediate_size=int(config.decoder_embed_dim * config.mlp_ratio),
        qkv_bias=config.qkv_bias,
        layer_norm_eps=config.norm_eps,
        norm_pix_loss=config.norm_pix_loss,
        mask_ratio=config.mask_ratio,
        hidden_act="gelu",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )


def config_from_hf(hf_config) -> MAEConfig:
    """MAEConfig from a transformers ViTMAEConfig (or its dict)."""
    g = hf_config if isinstance(hf_config, dict) else hf_config.to_dict()
    if g.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"only the exact GELU activation is supported, got {g['hidden_act']!r}")
    return MAEConfig(
        img_size=g["image_size"],
        patch_size=g["patch_size"],
        in_chans=g["num_channels"],
        embed_dim=g["hidden_size"],
        depth=g["num_hidden_layers"],
        num_heads=g["num_attention_heads"],
        decoder_embed_dim=g["decoder_hidden_size"],
        decoder_depth=g["decoder_num_hidden_layers"],
        decoder_num_heads=g["decoder_num_attention_heads"],
        mlp_ratio=g["intermediate_size"] / g["hidden_size"],
        qkv_bias=g.get("qkv_bias", True),
        norm_eps=g.get("layer_norm_eps", 1e-12),
        norm_pix_loss=g.get("norm_pix_loss", False),
        mask_ratio=g.get("mask_ratio", 0.75),
    )


def from_hf_state_dict(hf_state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face ViTMAEForPreTraining weights -> maelib (official) names; q, k, v fused into qkv."""
    sd = {}
    for key, value in hf_state_dict.items():
        for pattern, new in _HF_V4_TO_V5:
            key = re.sub(pattern, new, key)
        sd[key] = value
    out: dict[str, torch.Tensor] = {}
    for ours, theirs in _RENAMES:
        for key in [k for k in sd if k.startswith(theirs)]:
            out[ours + key[len(theirs):]] = sd.pop(key)
    for ours_stack, their_stack in _STACKS:
        indices = sorted({int(k[len(their_stack):].split(".")[0]) for k in sd if k.startswith(their_stack)})
        for i in indices:
            src, dst = f"{their_stack}{i}.", f"{ours_stack}{i}."
            for part in ("weight", "bias"):
                qkv = [sd.pop(f"{src}attention.{p}_proj.{part}", None) for p in "qkv"]
                if all(t is not None for t in qkv):
                    out[f"{dst}attn.qkv.{part}"] = torch.cat(qkv, dim=0)
            for ours, theirs in _BLOCK_RENAMES:
                for key in [k for k in sd if k.startswith(src + theirs)]:
                    out[dst + ours + key[len(src + theirs):]] = sd.pop(key)
    if sd:
        raise ValueError(f"unrecognised Hugging Face ViTMAE keys: {sorted(sd)[:8]}")
    return out


def to_hf_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """maelib (official) names -> Hugging Face ViTMAEForPreTraining (transformers 5.x names)."""
    sd = dict(state_dict)
    out: dict[str, torch.Tensor] = {}
    for ours_stack, their_stack in _STACKS:
        for key in [k for k in sd if k.startswith(ours_stack)]:
            i, rest = key[len(ours_stack):].split(".", 1)
            dst = f"{their_stack}{i}."
            value = sd.pop(key)
            if rest.startswith("attn.qkv."):
                part = rest.rsplit(".", 1)[1]
                for name, chunk in zip("qkv", value.chunk(3, dim=0)):
                    out[f"{dst}attention.{name}_proj.{part}"] = chunk.clone()
                continue
            for ours, theirs in _BLOCK_RENAMES:
                if rest.startswith(ours):
                    out[dst + theirs + rest[len(ours):]] = value
                    break
            else:
                raise ValueError(f"no Hugging Face name for {key}")
    for ours, theirs in _RENAMES:
        for key in [k for k in sd if k == ours or (ours.endswith(".") and k.startswith(ours))]:
            out[theirs + key[len(ours):]] = sd.pop(key)
    if sd:
        raise ValueError(f"no Hugging Face name for {sorted(sd)[:8]} (the encoder-with-mask-tokens ablation has none)")
    return out


def from_hf(source) -> MaskedAutoencoder:
    """A MaskedAutoencoder from a transformers ViTMAEForPreTraining, a local directory or a hub id.

        model = from_hf("facebook/vit-mae-base")  # downloads through transformers
    """
    if isinstance(source, (str, os.PathLike)):
        from transformers import ViTMAEForPreTraining

        name = os.fspath(source)
        looks_local = isinstance(source, os.PathLike) or name.startswith((".", "/", "~")) or name.count("/") != 1
        if looks_local and not os.path.isdir(os.path.expanduser(name)):
            raise FileNotFoundError(f"no folder {name}: from_hf takes a folder written by save_pretrained (config.json "
                                    "and the weights), a hub id such as 'facebook/vit-mae-base', or a model object")
        try:
            source = ViTMAEForPreTraining.from_pretrained(os.path.expanduser(name))
        except OSError as e:
            raise OSError(f"could not load {name!r}: it is not a local folder, and the Hugging Face hub did not give "
                          f"it (offline, or no such id: hub ids look like 'facebook/vit-mae-base'). Details: {e}") from e
    model = MaskedAutoencoder(config_from_hf(source.config))
    model.load_state_dict(from_hf_state_dict(source.state_dict()), strict=True)
    return model


def to_hf(model: MaskedAutoencoder):
    """The same model as a transformers ViTMAEForPreTraining (transformers must be installed)."""
    from transformers import ViTMAEConfig, ViTMAEForPreTraining

    if model.config.target != "pixels":
        raise ValueError(f"Hugging Face's ViTMAE predicts pixels; this model predicts {model.config.target!r} "
                         "(maelib.targets), which it has no place for. Its encoder converts: to_timm_vit(model)")
    hf = ViTMAEForPreTraining(ViTMAEConfig(**hf_config_kwargs(model.config)))
    hf.load_state_dict(to_hf_state_dict(model.state_dict()), strict=True)
    return hf


def to_timm_vit(
    model: MaskedAutoencoder,
    num_classes: int = 0,
    global_pool: str = "token",
    img_size: int | None = None,
    drop_path_rate: float = 0.0,
    fc_norm: str = "encoder",
    **kwargs,
):
    """Export the encoder as a timm VisionTransformer (for fine-tuning or as a feature extractor).

    global_pool="token": classify from the normed cls token (the paper's linear probe).
    global_pool="avg": average the patch tokens, then a `fc_norm` LayerNorm (the paper's fine-tuning); with
    fc_norm="encoder" its features are `model.features(imgs, pool="mean")`. ("cls" and "mean" are accepted.) fc_norm
    "encoder" (default): the encoder's final norm moves into fc_norm, so pooled features start as
    LayerNorm(mean of block outputs) with the pretrained scale and shift; "fresh": fc_norm starts as a new
    LayerNorm (weight 1, bias 0) and the pretrained final norm is dropped, as the official fine-tuning code does
    (its checkpoint's `norm` is not loaded into the pooled model).
    The new head (if num_classes > 0) is initialised as in the paper's fine-tuning: N(0, 2e-5), zero bias.
    """
    from timm.models.vision_transformer import VisionTransformer

    c = model.config
    global_pool = {"cls": "token", "mean": "avg"}[check_pool(global_pool)]  # maelib's pool names work too
    num_classes = check_int("num_classes", num_classes, minimum=0, where=" (0: no head, the pooled features)")
    if fc_norm not in ("encoder", "fresh"):
        raise ValueError(f"fc_norm must be 'encoder' (the pretrained final norm) or 'fresh' (a new LayerNorm, as "
                         f"the official fine-tuning), got {fc_norm!r}")
    img_size = img_size or c.img_size
    vit = VisionTransformer(
        img_size=img_size,
        patch_size=c.patch_size,
        in_chans=c.in_chans,
        num_classes=num_classes,
        global_pool=global_pool,
        embed_dim=c.embed_dim,
        depth=c.depth,
        num_heads=c.num_heads,
        mlp_ratio=c.mlp_ratio,
        qkv_bias=c.qkv_bias,
        norm_layer=partial(nn.LayerNorm, eps=c.norm_eps),
        drop_path_rate=drop_path_rate,
        **kwargs,
    )
    sd = {k: v.clone() for k, v in model.state_dict().items() if k.startswith(("patch_embed.", "cls_token", "blocks.", "norm."))}
    sd["pos_embed"] = resize_pos_embed(model.pos_embed.detach().clone(), img_size // c.patch_size)
    if global_pool == "avg":
        sd = {("fc_norm." + k[5:] if k.startswith("norm.") else k): v for k, v in sd.items()
              if fc_norm == "encoder" or not k.startswith("norm.")}
    missing, unexpected = vit.load_state_dict(sd, strict=False)
    new = ("head.", "fc_norm.") if fc_norm == "fresh" and global_pool == "avg" else ("head.",)
    if unexpected or [k for k in missing if not k.startswith(new)]:
        raise RuntimeError(f"timm export mismatch: missing {missing}, unexpected {unexpected}")
    if num_classes:
        nn.init.normal_(vit.head.weight, std=2e-5)
        nn.init.zeros_(vit.head.bias)
    return vit


def encoder_state_from_timm_vit(vit: nn.Module) -> dict[str, torch.Tensor]:
    """The inverse of `to_timm_vit` for the encoder: a timm ViT's weights (e.g. after fine-tuning) under the MAE's
    parameter names, to load into a `MaskedAutoencoder` with `load_state_dict(..., strict=False)` (the decoder is
    left as it was). `fc_norm` (global pooling) goes back to the encoder's final `norm`; the head is dropped."""
    source, state = vit.state_dict(), {}
    pooled = "fc_norm.weight" in source
    for k, v in source.items():
        if k.startswith("head.") or (k.startswith("norm.") and pooled):
            continue  # the classifier, and the unused final norm of a pooled ViT (timm makes it an Identity)
        state["norm." + k[len("fc_norm."):] if k.startswith("fc_norm.") else k] = v
    return state


def mae_from_timm_vit(vit: nn.Module, config: MAEConfig) -> MaskedAutoencoder:
    """A MaskedAutoencoder of `config` whose encoder holds a timm ViT's weights (`encoder_state_from_timm_vit`),
    e.g. a classifier trained from scratch with labels: the supervised encoder, to probe or compare like an MAE's.
    Its decoder is freshly initialised (seeded by the global RNG)."""
    mae = MaskedAutoencoder(config)
    missing, unexpected = mae.load_state_dict(encoder_state_from_timm_vit(vit), strict=False)
    stray = [k for k in missing if not k.startswith(("decoder", "mask_token"))]
    if unexpected or stray:
        raise RuntimeError(f"the ViT does not fit this MAE config: missing {stray}, unexpected {unexpected}")
    return mae
