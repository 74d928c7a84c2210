"""maelib: Masked Autoencoders to learn, teach and analyse.

    import maelib
    model = maelib.create_model("mae_vit_mini_patch4_28")
    loss, pred, mask = model(images)             # images: (N, 1, 28, 28)
    trained = maelib.load_pretrained("mae_vit_mini_patch4_28.fmnist_pixel")   # the zoo: maelib.list_pretrained()
"""

from .analysis.attention import attention_weights, capture_attention
from .masking import MASKING, block_noise, grid_noise, random_masking, random_noise
from .model import MAEConfig, MaskedAutoencoder
from .patches import normalize_patches, patch_stats, patchify, unpatchify
from .pos_embed import resize_pos_embed, sincos_2d
from .registry import create_model, list_models, model_config
from .weights.checkpoint import load_classifier, load_official, load_weights, read_state_dict, save_model
from .weights.convert import from_hf, to_hf, to_timm_vit
from .weights.zoo import (
    ModelCard,
    list_pretrained,
    load_model,
    load_pretrained,
    pretrained_card,
    pretrained_path,
    register_pretrained,
)

__version__ = "0.1.0"

__all__ = [
    "MAEConfig",
    "MASKING",
    "MaskedAutoencoder",
    "ModelCard",
    "attention_weights",
    "block_noise",
    "capture_attention",
    "create_model",
    "from_hf",
    "grid_noise",
    "list_models",
    "list_pretrained",
    "load_classifier",
    "load_model",
    "load_official",
    "load_pretrained",
    "load_weights",
    "model_config",
    "normalize_patches",
    "patch_stats",
    "patchify",
    "pretrained_card",
    "pretrained_path",
    "random_masking",
    "random_noise",
    "read_state_dict",
    "register_pretrained",
    "resize_pos_embed",
    "save_model",
    "sincos_2d",
    "to_hf",
    "to_timm_vit",
    "unpatchify",
]
