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
import secrets
import stat
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .convert import to_timm_vit
from .model import MAEConfig, MaskedAutoencoder
from .pos_embed import resize_pos_embed
from .registry import create_model

ENCODER_PREFIXES = ("patch_embed.", "cls_token", "pos_embed", "encoder_mask_token", "blocks.", "norm.")
POS_EMBED_KEYS = ("pos_embed", "decoder_pos_embed")


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call write(tmp_path) then rename onto `path`, so a crash mid-write never leaves a truncated file.

    The temporary file (".<name>.<random>.tmp") is in the same folder, so the rename is atomic; it is flushed
    to disk first, so the renamed file is whole even after a power cut. A process killed mid-write leaves the
    old `path` untouched and the temporary file behind (`remove_stale_temporaries` clears those).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:  # like tempfile.mkstemp, but with the umask's permissions (mkstemp makes files private, 0600)
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            break
        except FileExistsError:
            continue
    mode = stat.S_IMODE(os.stat(tmp).st_mode)  # 0666 less the umask, as open() would give
    try:
        write(tmp)
        os.chmod(tmp, mode)  # writers that replace the file (safetensors' save_file) leave it private (0600)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that `atomic_write(path, ...)` calls killed mid-write left next to `path`.
    Only call it when no other process is writing `path`."""
    path = Path(path)
    stale = list(path.parent.glob(f".{path.name}.*.tmp"))
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


@contextmanager
def run_dir_lock(run_dir: str | os.PathLike):
    """Hold an exclusive lock on a run directory (`.maelib.lock`, with the holder's pid) while a run writes there,
    so that two runs cannot overwrite each other's checkpoints and logs: a second process is refused, naming the
    first. Released at the end of the block, or when the process dies. POSIX (fcntl.flock)."""
    import fcntl

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = run_dir / ".maelib.lock"
    f = open(lock, "a+")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise RuntimeError(
            f"{run_dir} is in use by another maelib run ({holder}), which is writing its checkpoints and logs there. "
            "Wait for it to finish, or give this run its own directory: --trainer.default_root_dir runs/<new name>"
        ) from None
    try:
        f.seek(0), f.truncate(), f.write(f"pid {os.getpid()}"), f.flush()
        yield lock
    finally:
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        f.close()


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load tensors (and safetensors metadata) from .safetensors, .pth or .ckpt without running code.

    Unwraps the usual containers: {"model": ...} (official MAE), {"state_dict": ...} (Lightning, whose
    "model." prefix is removed). A zoo name (`maelib.list_pretrained()`) stands for its file.
    """
    path = checkpoint_file(path)
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
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        return "torch"
    if len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < 2**27:
        return "safetensors"  # a plausible header length (text would read as an enormous one); maybe cut short
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
    None when the file carries none (a state dict from elsewhere). A zoo name stands for its file."""
    from safetensors import safe_open

    path = checkpoint_file(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            text = (f.metadata() or {}).get("config")
    except SafetensorError as e:
        raise ValueError(f"{path} is not a readable safetensors file ({e}); was it truncated?") from e
    return None if text is None else stored_config(path, text)


def checkpoint_file(path: str | os.PathLike) -> Path:
    """`path`, or the local file of the zoo model so named (an official one is downloaded the first time)."""
    from .zoo import is_pretrained_name, pretrained_path

    return pretrained_path(str(path)) if is_pretrained_name(path) else Path(path)


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


def load_model(path: str | os.PathLike, arch: str | None = None, **overrides) -> MaskedAutoencoder:
    """Rebuild a MaskedAutoencoder from a file: maelib's .safetensors or a maelib Lightning .ckpt carry their
    config; for other files (official .pth, bare state dicts) name the architecture with `arch`.
    Config fields can be overridden, e.g. img_size=56 (position embeddings are resized). A zoo name
    (`maelib.list_pretrained()`, e.g. "official:mae_visualize_vit_large") loads that model."""
    from .zoo import is_pretrained_name, load_pretrained, pretrained_card

    if is_pretrained_name(path):
        if pretrained_card(str(path)).kind != "mae":
            raise ValueError(f"{path} is a classifier, not an MAE: load it with maelib.load_pretrained({str(path)!r})")
        return load_pretrained(str(path), **overrides)
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
    return load_weights(model, state_dict)
