"""Named model sizes: the paper's three, and teaching sizes that train in minutes on a laptop CPU.

    model = maelib.create_model("mae_vit_mini_patch4_28", norm_pix_loss=True)
"""

from __future__ import annotations

from .model import MAEConfig, MaskedAutoencoder

_PAPER_DECODER = dict(decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16)

MODEL_CONFIGS: dict[str, dict] = {
    # The paper's models (ImageNet, 224 px), each with the 512-wide, 8-block decoder.
    "mae_vit_base_patch16": dict(embed_dim=768, depth=12, num_heads=12, **_PAPER_DECODER),
    "mae_vit_large_patch16": dict(embed_dim=1024, depth=24, num_heads=16, **_PAPER_DECODER),
    "mae_vit_huge_patch14": dict(patch_size=14, embed_dim=1280, depth=32, num_heads=16, **_PAPER_DECODER),
    # Teaching sizes. 28 px greyscale (Fashion-MNIST): ~900 img/s training on 2 CPU cores.
    "mae_vit_mini_patch4_28": dict(
        img_size=28, patch_size=4, in_chans=1, embed_dim=128, depth=4, num_heads=4,
        decoder_embed_dim=96, decoder_depth=1, decoder_num_heads=3, norm_pix_loss=True,
    ),
    # 32 px colour (CIFAR-10 sized) and 64 px colour (STL-10 / photos, resized).
    "mae_vit_tiny_patch4_32": dict(
        img_size=32, patch_size=4, in_chans=3, embed_dim=192, depth=6, num_heads=3,
        decoder_embed_dim=128, decoder_depth=2, decoder_num_heads=4, norm_pix_loss=True,
    ),
    "mae_vit_tiny_patch8_64": dict(
        img_size=64, patch_size=8, in_chans=3, embed_dim=192, depth=6, num_heads=3,
        decoder_embed_dim=128, decoder_depth=2, decoder_num_heads=4, norm_pix_loss=True,
    ),
}


def list_models() -> list[str]:
    """The architectures `create_model` builds, by timm-style name (mae_vit_base_patch16; the image size last when
    it is not 224, as in mae_vit_mini_patch4_28)."""
    return sorted(MODEL_CONFIGS)


def model_config(name: str, **overrides) -> MAEConfig:
    """The config of a named model, with any field overridden (e.g. img_size=32, norm_pix_loss=True)."""
    if name not in MODEL_CONFIGS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return MAEConfig.from_dict({**MODEL_CONFIGS[name], **overrides})


def create_model(name: str, **overrides) -> MaskedAutoencoder:
    """A freshly initialised MaskedAutoencoder of a named size."""
    return MaskedAutoencoder(model_config(name, **overrides))
