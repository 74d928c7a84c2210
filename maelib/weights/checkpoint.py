"""Reading and writing weights, never unpickling code.

- maelib's own format: safetensors with the model's config in the metadata (`save_model` / `load_model`).
- The official facebookresearch/mae `.pth` files (`load_official`): full, or encoder only.
- Lightning checkpoints written by maelib's training modules (weights under "state_dict", prefix "model.").
- Hugging Face and timm conversions live in `convert.py`.

Every `.pth`/`.ckpt` goes through `torch.load(weights_only=True)`; a file that needs arbitrary code to
unpickle is refused with an explanation.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..files import atomic_write
from ..model import MAEConfig, MaskedAutoencoder
from ..pos_embed import resize_pos_embed
from ..registry import create_model
from .convert import to_timm_vit

ENCODER_PREFIXES = ("patch_embed.", "cls_token", "pos_embed", "encoder_mask_token", "blocks.", "norm.")
POS_EMBED_KEYS = ("pos_embed", "decoder_pos_embed")


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load tensors (and safetensors metadata) from .safetensors, .pth or .ckpt without running code.

    Unwraps the usual containers: {"model": ...} (official MAE), {"state_dict": ...} (Lightning, whose
    "model." prefix is removed). For a zoo name, resolve it first: `maelib.weights.weights_file(name)` (maelib.weights.zoo).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    kind = file_format(path)  # by content, whatever the name says
    if kind is None:
        raise ValueError(
            f"{path} is not a checkpoint: it is neither safetensors nor a PyTorch file (.pth/.ckpt, a zip or pickle "
            "archive). Is it text, or the HTML page of a failed download? Download or save the weights again")
    if kind == "safetensors":
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
            return load_file(str(path)), metadata
        except SafetensorError as e:
            raise ValueError(f"{path} is not a readable safetensors file ({e}); was it truncated?") from e
    try:
        # Checkpoints written by the official training script also pickle its argparse Namespace ("args"):
        # a plain attribute container, allowed here; anything else that is not a tensor or container is refused.
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"refused to load {path}: it holds Python objects beyond tensors, and unpickling them could run "
            f"arbitrary code. maelib loads weights only. If you trust the file's source, re-save just its "
            f"state dict (torch.save(state_dict, ...)) or convert it to safetensors. Details: {e}"
        ) from e
    except (RuntimeError, EOFError, OSError, IndexError, KeyError) as e:
        raise ValueError(f"could not read {path} as a PyTorch checkpoint ({type(e).__name__}: {e}): it looks "
                         "truncated or damaged; save or download it again") from e
    metadata = {}
    if isinstance(obj, dict) and isinstance(obj.get("maelib_config"), dict):  # written by maelib's Lightning modules
        metadata["config"] = json.dumps(obj["maelib_config"])
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    elif isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = {k.removeprefix("model."): v for k, v in obj["state_dict"].items()}
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} does not contain a state dict of tensors")
    return obj, metadata


def file_format(path: str | os.PathLike) -> str | None:
    """What a weights file is, from its first bytes: "safetensors" (an 8-byte header length, then JSON), "torch"
    (a zip archive, torch.save's format, or a legacy pickle), or None (text, HTML, anything else)."""
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < 2**27:
        return "safetensors"  # a plausible header length (text would read as an enormous one); maybe cut short.
        # First: a header length whose low byte is 0x80 (1 file in 256) starts like a pickle's protocol opcode
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        return "torch"
    return None


def stored_config(path, text: str, **overrides) -> MAEConfig:
    """The MAEConfig in a file's metadata (JSON), with `overrides`; errors name the file."""
    try:
        fields = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"the model config stored in {path} is not valid JSON ({e}): the file was edited or "
                         "damaged; save the model again (maelib.save_model), or load its weights with an arch") from e
    if not isinstance(fields, dict):
        raise ValueError(f"the model config stored in {path} is {type(fields).__name__}, not a mapping of fields")
    try:
        return MAEConfig.from_dict({**fields, **overrides})
    except (TypeError, ValueError) as e:
        raise type(e)(f"the model config stored in {path} is not valid: {e}") from e


def checkpoint_config(path: str | os.PathLike) -> MAEConfig | None:
    """The MAEConfig stored in a maelib .safetensors file, read from its header alone (no tensors are loaded);
    None when the file carries none (a state dict from elsewhere)."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            text = (f.metadata() or {}).get("config")
    except SafetensorError as e:
        raise ValueError(f"{path} is not a readable safetensors file ({e}); was it truncated?") from e
    return None if text is None else stored_config(path, text)


def load_weights(
    model: MaskedAutoencoder,
    state_dict: dict[str, torch.Tensor],
    *,
    resize_pos: bool = True,
    ignore: tuple[str, ...] = (),
) -> MaskedAutoencoder:
    """Strictly load official-named weights into `model`, with one error naming every problem.

    - an encoder-only state dict (no decoder keys) leaves the decoder as initialised, with a warning;
    - position embeddings of another grid are resized bicubically when `resize_pos` (else an error);
    - keys starting with any prefix in `ignore` are dropped (e.g. ("head.", "fc_norm.") of fine-tuned files).
    """
    state_dict = {k: v for k, v in state_dict.items() if not k.startswith(tuple(ignore))}
    expected = model.state_dict()
    for key in POS_EMBED_KEYS:
        if key in state_dict and key in expected and state_dict[key].shape != expected[key].shape:
            src, dst = state_dict[key].shape, expected[key].shape
            if resize_pos and src[-1] == dst[-1]:
                state_dict[key] = resize_pos_embed(state_dict[key], model.config.grid_size)
            elif src[-1] == dst[-1]:
                raise ValueError(f"{key} is {tuple(src)} but the model needs {tuple(dst)}; pass resize_pos=True")

    encoder_only = not any(not k.startswith(ENCODER_PREFIXES) for k in state_dict)
    missing = [k for k in expected if k not in state_dict and not (encoder_only and not k.startswith(ENCODER_PREFIXES))]
    unexpected = [k for k in state_dict if k not in expected]
    mis_shaped = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in state_dict
        if k in expected and state_dict[k].shape != expected[k].shape
    ]
    if missing or unexpected or mis_shaped:
        lines = [f"the checkpoint does not fit this model ({_describe(model.config)}):"]
        for title, keys in [("missing", missing), ("unexpected", unexpected), ("mis-shaped", mis_shaped)]:
            if keys:
                shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")
                lines.append(f"  {title} keys: {shown}")
        lines.append(
            "  Build the model that matches the file (another name in maelib.list_models(), or overrides such as "
            "img_size/in_chans/depth); drop extra keys with ignore=('head.', 'fc_norm.')."
        )
        raise ValueError("\n".join(lines))
    if encoder_only:
        warnings.warn("encoder-only checkpoint: the decoder keeps its fresh initialisation", stacklevel=2)
    model.load_state_dict(state_dict, strict=not encoder_only)
    return model


def _describe(c: MAEConfig) -> str:
    return (
        f"img_size={c.img_size}, patch_size={c.patch_size}, in_chans={c.in_chans}, "
        f"encoder {c.embed_dim}x{c.depth}, decoder {c.decoder_embed_dim}x{c.decoder_depth}"
    )


def load_official(
    path: str | os.PathLike, model: str | MaskedAutoencoder = "mae_vit_large_patch16", **overrides
) -> MaskedAutoencoder:
    """Load an official facebookresearch/mae checkpoint (`{"model": state_dict}`) into a named or given model.

        model = load_official("mae_visualize_vit_large.pth", "mae_vit_large_patch16")
        model = load_official("mae_pretrain_vit_base.pth", "mae_vit_base_patch16")  # encoder only
    """
    state_dict, _ = read_state_dict(path)
    if isinstance(model, str):
        model = create_model(model, **overrides)
    return load_weights(model, state_dict, resize_pos=True)


def save_state_dict(module: torch.nn.Module, path: str | os.PathLike, metadata: dict[str, str]) -> Path:
    """A module's weights and string metadata as one .safetensors file, written atomically."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def save_model(model: MaskedAutoencoder, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
    """Write weights and config to one .safetensors file (atomically); `load_model` rebuilds the model from it."""
    return save_state_dict(model, path, {"format": "maelib", "config": json.dumps(model.config.to_dict()),
                                         **(metadata or {})})


def save_encoder(model: MaskedAutoencoder, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
    """Write only the encoder's weights, with the config, to one .safetensors file (atomically): for encoders
    trained without a decoder (contrastive, supervised). `load_model` rebuilds a MaskedAutoencoder from it whose
    decoder is freshly initialised: its reconstructions mean nothing, its features are the trained ones."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k.startswith(ENCODER_PREFIXES)}
    meta = {"format": "maelib", "contents": "encoder", "config": json.dumps(model.config.to_dict()), **(metadata or {})}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def save_classifier(net: torch.nn.Module, config: MAEConfig, path: str | os.PathLike, *, num_classes: int,
                    global_pool: str) -> Path:
    """A fine-tuned classifier (the timm VisionTransformer of `to_timm_vit`) with what rebuilds it."""
    return save_state_dict(net, path, {"format": "maelib-classifier", "config": json.dumps(config.to_dict()),
                                       "num_classes": str(num_classes), "global_pool": global_pool})


def load_classifier(path: str | os.PathLike):
    """The timm VisionTransformer that `maelib finetune` saved (classifier.safetensors), in eval mode."""
    state_dict, metadata = read_state_dict(path)
    if metadata.get("format") != "maelib-classifier":
        raise ValueError(f"{path} is not a classifier saved by maelib finetune (its format is "
                         f"{metadata.get('format')!r}); for MAE weights use load_model")
    mae = MaskedAutoencoder(stored_config(path, metadata["config"]))
    net = to_timm_vit(mae, num_classes=int(metadata["num_classes"]), global_pool=metadata["global_pool"])
    net.load_state_dict(state_dict)
    return net.eval()


def load_model_file(path: str | os.PathLike, arch: str | None = None, **overrides) -> MaskedAutoencoder:
    """Rebuild a MaskedAutoencoder from a file: maelib's .safetensors or a maelib Lightning .ckpt carry their
    config; for other files (official .pth, bare state dicts) name the architecture with `arch`.
    Config fields can be overridden, e.g. img_size=56 (position embeddings are resized). A zoo name
    (`maelib.list_pretrained()`) is resolved one layer up, by `maelib.load_model` (`maelib.weights.zoo`)."""
    state_dict, metadata = read_state_dict(path)
    if "config" in metadata:
        model = MaskedAutoencoder(stored_config(path, metadata["config"], **overrides))
    elif arch is not None:
        model = create_model(arch, **overrides)
    else:
        raise ValueError(
            f"{path} has no maelib config in it: name its architecture, e.g. load_model(path, arch="
            "'mae_vit_base_patch16') or load_official(path, 'mae_vit_base_patch16')"
        )
    with warnings.catch_warnings():
        if metadata.get("contents") == "encoder":  # written by save_encoder: decoder-less on purpose, no warning
            warnings.filterwarnings("ignore", message="encoder-only checkpoint")
        return load_weights(model, state_dict)
