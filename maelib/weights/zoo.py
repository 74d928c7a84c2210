"""The model zoo: trained models that make each lesson visible in seconds, and the released MAE weights by name.

    maelib.list_pretrained()                                    # every name; list_pretrained("shipped") etc.
    model = maelib.load_pretrained("mae_vit_mini_patch4_28.fmnist_pixel")   # shipped: no download
    card = maelib.pretrained_card("mae_vit_mini_patch4_28.fmnist_pixel")    # data, recipe, measured metrics
    model = maelib.load_pretrained("official:mae_visualize_vit_large")     # downloaded once (internet)
    model = maelib.load_pretrained("hf:facebook/vit-mae-base")             # Hugging Face hub

Names follow timm's `architecture.tag`. Three sources:
- "shipped": trained by this project's recorded recipes (`scripts/zoo_train.sh`), measured and written with
  their cards by `scripts/zoo_export.py` into maelib/weights/ (maelib safetensors, a few MB each);
- "official": facebookresearch/mae's released `.pth` files (CC-BY-NC 4.0), fetched into torch's hub cache and
  checked against the md5 prefixes that the official README and FINETUNE.md publish, read with weights_only;
- "huggingface": transformers' ViTMAE checkpoints, converted with `maelib.from_hf`.
An MAE loads as a `MaskedAutoencoder`; an encoder trained another way (kind "encoder": contrastive or supervised
pretraining of the same ViT) as a `MaskedAutoencoder` with a fresh decoder; a classifier as a timm
`VisionTransformer`.

More models: `register_pretrained(card, path)` in Python, or folders of card files (`NAME.json`, a `ModelCard` as
JSON, with its weights file named in `file` beside it, or a `url`) listed in ``$MAELIB_ZOO_PATH`` (separated like
PATH), which every process that imports maelib reads: a course's own models, or a test's.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..model import MaskedAutoencoder
from ..registry import create_model
from .checkpoint import load_classifier, load_model_file, load_official, read_state_dict
from .convert import from_hf, to_timm_vit
from .download import download_checkpoint

WEIGHTS_DIR = Path(__file__).parent  # the shipped .safetensors and their .json cards sit beside this file
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
OFFICIAL_LICENCE = "CC-BY-NC 4.0 (facebookresearch/mae): non-commercial use"
OFFICIAL_URL = "https://dl.fbaipublicfiles.com/mae"
KINDS = ("mae", "encoder", "classifier")  # what a card's weights load as (see ModelCard)


@dataclass(frozen=True)
class ModelCard:
    """What a zoo model is, how it was made and what it measured.

    kind: "mae" (a MaskedAutoencoder), "encoder" (a MaskedAutoencoder whose decoder was never trained: an encoder
        pretrained without one, for features and fine-tuning only) or "classifier" (a timm VisionTransformer).
    arch: the maelib registry name its weights fit; arch_overrides: config fields that differ from it.
    target: "norm_pix" or "pixel" for MAEs: only pixel-target models draw reconstructions without borrowing
        each hidden patch's true mean and std.
    mean, std: the input normalisation the model was trained with (per channel, pixels in [0, 1]).
    metrics: measured numbers (shipped: by `scripts/zoo_export.py` with `recipe`, on `machine`, `date`), or the
        published ones (official), named so.
    check: a quick re-measurement that tests/test_zoo.py repeats (its protocol and the value it gave).
    """

    name: str
    kind: str
    arch: str
    source: str
    data: str
    licence: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    target: str = ""
    arch_overrides: dict = field(default_factory=dict)
    recipe: str = ""
    wall_seconds: float | None = None
    machine: str = ""
    date: str = ""
    metrics: dict = field(default_factory=dict)
    check: dict = field(default_factory=dict)
    file: str = ""
    url: str = ""
    md5: str = ""
    hf_id: str = ""
    notes: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelCard":
        d = {**d, "mean": tuple(d["mean"]), "std": tuple(d["std"])}
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown model card fields {sorted(unknown)}")
        return cls(**d)


def _official_cards() -> list[ModelCard]:
    sizes = {"base": "mae_vit_base_patch16", "large": "mae_vit_large_patch16", "huge": "mae_vit_huge_patch14"}
    pretrain_md5 = {"base": "8cad7c", "large": "b8b06e", "huge": "9bdbb0"}  # the official README
    finetuned_md5 = {"base": "1b25e9", "large": "51f550", "huge": "2541f2"}  # FINETUNE.md
    finetuned_top1 = {"base": 83.664, "large": 85.952, "huge": 86.928}  # FINETUNE.md, ImageNet val
    common = dict(source="official", data="ImageNet-1k train (1.28M images), 224 px", licence=OFFICIAL_LICENCE,
                  mean=IMAGENET_MEAN, std=IMAGENET_STD)
    cards = []
    for size, arch in sizes.items():
        cards += [
            ModelCard(name=f"official:mae_visualize_vit_{size}", kind="mae", arch=arch, target="pixel",
                      arch_overrides={"norm_pix_loss": False}, url=f"{OFFICIAL_URL}/visualize/mae_visualize_vit_{size}.pth",
                      notes="trained with the pixel target for the official visualisation demo, decoder included; "
                            "no checksum is published for it", **common),
            ModelCard(name=f"official:mae_pretrain_vit_{size}", kind="mae", arch=arch, target="norm_pix",
                      url=f"{OFFICIAL_URL}/pretrain/mae_pretrain_vit_{size}.pth", md5=pretrain_md5[size],
                      notes="the paper's 1600-epoch encoder (norm-pix target), without the decoder: the decoder is "
                            "freshly initialised, so its reconstructions mean nothing; for probing and fine-tuning",
                      **common),
            ModelCard(name=f"official:mae_pretrain_vit_{size}_full", kind="mae", arch=arch, target="norm_pix",
                      url=f"{OFFICIAL_URL}/pretrain/mae_pretrain_vit_{size}_full.pth",
                      notes="the same pretraining with its decoder (norm-pix target); no checksum is published for "
                            "it", **common),
            ModelCard(name=f"official:mae_finetuned_vit_{size}", kind="classifier", arch=arch,
                      url=f"{OFFICIAL_URL}/finetune/mae_finetuned_vit_{size}.pth", md5=finetuned_md5[size],
                      metrics={"imagenet_val_top1_published": finetuned_top1[size]},
                      notes="fine-tuned on ImageNet-1k (1000 classes, global average pooling with fc_norm); "
                            "the accuracy is the published one, not measured here", **common),
            ModelCard(name=f"hf:facebook/vit-mae-{size}", kind="mae", arch=arch, source="huggingface",
                      data="ImageNet-1k train, 224 px", hf_id=f"facebook/vit-mae-{size}", mean=IMAGENET_MEAN,
                      std=IMAGENET_STD, licence="as stated on the Hugging Face model page; converted from the "
                      "official weights, which are CC-BY-NC 4.0", notes="loaded with maelib.from_hf (transformers)"),
        ]
    return cards


_REGISTRY: dict[str, tuple[ModelCard, Path | None]] = {}


def register_pretrained(card: ModelCard, path: str | Path | None = None, *, overwrite: bool = False) -> ModelCard:
    """Add a model to the zoo: a card, and for a local model the file its weights are in."""
    if card.name in _REGISTRY and not overwrite:
        raise ValueError(f"a zoo model named {card.name!r} exists already; pass overwrite=True to replace it")
    if card.kind not in KINDS:
        raise ValueError(f"card {card.name!r}: kind must be one of {KINDS}, got {card.kind!r}")
    _REGISTRY[card.name] = (card, None if path is None else Path(path))
    return card


def unregister_pretrained(name: str) -> None:
    _REGISTRY.pop(name, None)


def register_folder(folder: str | Path) -> list[str]:
    """Register every card file (NAME.json) in `folder`; a card's `file` is relative to the folder."""
    names = []
    for card_file in sorted(Path(folder).glob("*.json")):
        try:
            card = ModelCard.from_dict(json.loads(card_file.read_text()))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{card_file} is not a readable model card ({e})") from e
        register_pretrained(card, Path(folder) / card.file if card.file else None, overwrite=True)
        names.append(card.name)
    return names


def _register_builtin() -> None:
    for card in _official_cards():
        register_pretrained(card, overwrite=True)
    register_folder(WEIGHTS_DIR)
    for folder in filter(None, os.environ.get("MAELIB_ZOO_PATH", "").split(os.pathsep)):
        register_folder(folder)


def list_pretrained(source: str | None = None) -> list[str]:
    """Names of the zoo's models, optionally of one source ("shipped", "official", "huggingface")."""
    return sorted(name for name, (card, _) in _REGISTRY.items() if source is None or card.source == source)


def is_pretrained_name(name) -> bool:
    """Whether `name` (a string or path) names a zoo model rather than a file."""
    return isinstance(name, str) and name in _REGISTRY


def pretrained_card(name: str) -> ModelCard:
    if name not in _REGISTRY:
        raise ValueError(f"no zoo model named {name!r}. Shipped (no download): {', '.join(list_pretrained('shipped')) or 'none'}; "
                         f"all names: maelib.list_pretrained()")
    return _REGISTRY[name][0]


def pretrained_path(name: str, *, progress: bool = True) -> Path:
    """The local file of a shipped or official model (an official one is downloaded the first time)."""
    card = pretrained_card(name)
    path = _REGISTRY[name][1]
    if path is not None:
        if not path.is_file():
            raise FileNotFoundError(f"zoo model {name!r}: its weights file {path} is missing; reinstall maelib")
        return path
    if card.url:
        return download_checkpoint(card.url, card.md5 or None, progress=progress)
    raise ValueError(f"zoo model {name!r} has no file: it is loaded from the Hugging Face hub ({card.hf_id})")


def load_pretrained(name: str, *, progress: bool = True, **overrides):
    """A zoo model by name: a MaskedAutoencoder (kinds "mae" and "encoder") or a timm VisionTransformer classifier
    in eval mode.

    overrides: config fields for an MAE, e.g. img_size=448 (position embeddings are resized), mask_ratio=0.5.
    The card stays reachable as `maelib.pretrained_card(name)`."""
    card = pretrained_card(name)
    if card.source == "huggingface":
        if overrides:
            raise ValueError("Hugging Face models take no config overrides here; convert, then save and reload")
        return from_hf(card.hf_id)
    path = pretrained_path(name, progress=progress)
    if card.source == "official":
        if card.kind == "classifier":
            state_dict, _ = read_state_dict(path)
            net = to_timm_vit(create_model(card.arch, **{**card.arch_overrides, **overrides}), num_classes=1000,
                              global_pool="avg")
            net.load_state_dict(state_dict)
            return net.eval()
        return load_official(path, card.arch, **{**card.arch_overrides, **overrides})
    if card.kind == "classifier":
        if overrides:
            raise ValueError(f"{name} is a classifier: it takes no config overrides")
        return load_classifier(path)
    return load_model_file(path, **overrides)


def weights_file(source: str | os.PathLike, *, progress: bool = True) -> Path:
    """The local file behind `source`: a zoo name's file (an official one downloaded the first time), or
    `source` itself as a path. Every loader that accepts "a zoo name or a file" resolves through here."""
    return pretrained_path(str(source), progress=progress) if is_pretrained_name(source) else Path(source)


def load_model(source: str | os.PathLike, arch: str | None = None, **overrides) -> MaskedAutoencoder:
    """A MaskedAutoencoder from a zoo name (`maelib.list_pretrained()`, e.g. "official:mae_visualize_vit_large")
    or a file: maelib's .safetensors and Lightning .ckpt carry their config; for other files (official .pth,
    bare state dicts) name the architecture with `arch`. Config fields can be overridden, e.g. img_size=56
    (position embeddings are resized)."""
    if is_pretrained_name(source):
        if pretrained_card(str(source)).kind == "classifier":
            raise ValueError(f"{source} is a classifier, not an MAE: load it with maelib.load_pretrained({str(source)!r})")
        return load_pretrained(str(source), **overrides)
    return load_model_file(source, arch, **overrides)


_register_builtin()
