"""The Masked Autoencoder (He et al., 2021): a ViT encoder on the visible patches, a light decoder on all.

The forward pass is split as in the paper's code, each step readable on its own:

    imgs (N, C, H, W)
      -> forward_encoder: patch embed + fixed sin-cos positions, mask, keep visible, ViT blocks
         -> latent (N, 1 + L_keep, D), mask (N, L), ids_restore (N, L)
      -> forward_decoder: project, append mask tokens, unshuffle, positions, blocks, predict pixels
         -> pred (N, L, p*p*C)
      -> forward_loss: MSE against (optionally per-patch normalised) pixels, on masked patches only
         (or against PCA coefficients, or cross-entropy on k-means tokens: `maelib.targets`)

Parameter names are the official ones (`patch_embed.proj`, `blocks.N.attn.qkv`, `decoder_pred`, ...), so the
official checkpoints load as they are.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.vision_transformer import Block

from .masking import MASKING, check_mask_ratio, random_masking
from .patches import (
    LinearPatchEmbed,
    check_image_size,
    mask_to_image,
    normalize_patches,
    patch_stats,
    patchify,
    unpatchify,
)
from .pos_embed import sincos_2d
from .targets import check_target, fit_kmeans, fit_pca, nearest_centre, pca_coordinates, pca_patches, sample_patches
from .validate import as_image_batch, as_real, check_bool, check_int

POOLS = {"cls": "cls", "token": "cls", "mean": "mean", "avg": "mean"}  # maelib's names, timm's names


def check_pool(pool: str) -> str:
    """One vector per image, two ways: "cls" (the cls token; timm's "token") or "mean" (global average pooling of
    the patch tokens, then the final norm; timm's "avg"). Returns maelib's name."""
    if pool not in POOLS:
        raise ValueError(f"pool must be 'cls' (the cls token) or 'mean' (global average pooling; 'avg' and 'token' "
                         f"are timm's names for the same two), got {pool!r}")
    return POOLS[pool]


SIZE_FIELDS = {"img_size": 1, "patch_size": 1, "in_chans": 1, "embed_dim": 1, "depth": 1, "num_heads": 1,
               "decoder_embed_dim": 1, "decoder_depth": 0, "decoder_num_heads": 1, "target_dim": 0}  # the smallest each may be


@dataclass
class MAEConfig:
    """Everything needed to rebuild a model; stored in maelib checkpoints."""

    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    decoder_embed_dim: int = 512
    decoder_depth: int = 8
    decoder_num_heads: int = 16
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    norm_eps: float = 1e-6  # the paper's code; Hugging Face configs default to 1e-12
    norm_pix_loss: bool = False  # predict per-patch normalised pixels (the paper's best setting)
    mask_ratio: float = 0.75  # default for forward(); can be overridden per call
    masking: str = "random"  # "random" (paper), "block" (BEiT-style) or "grid"
    encoder_mask_tokens: bool = False  # ablation: encoder sees mask tokens in place of removed patches
    target: str = "pixels"  # "pixels" (paper), "pca" (leading components) or "tokens" (k-means): maelib.targets
    target_dim: int = 0  # PCA components kept, or k-means tokens; 0 for pixels

    def __post_init__(self) -> None:
        # types and ranges first (a value read from a file's metadata may be text), each named with its fix
        for name, minimum in SIZE_FIELDS.items():
            setattr(self, name, check_int(name, getattr(self, name), minimum=minimum, where=" in the MAE config"))
        for name in ("mlp_ratio", "norm_eps"):
            value = as_real(name, getattr(self, name), where=" in the MAE config")
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value} (the paper's: mlp_ratio 4.0, norm_eps 1e-6)")
            setattr(self, name, value)
        for name in ("qkv_bias", "norm_pix_loss", "encoder_mask_tokens"):
            setattr(self, name, check_bool(name, getattr(self, name), where=" in the MAE config"))
        check_image_size(self.img_size, self.patch_size)
        self.mask_ratio = check_mask_ratio(self.mask_ratio)
        if self.norm_pix_loss and self.patch_size**2 * self.in_chans < 2:
            raise ValueError("norm_pix_loss normalises each patch by its own std, which one pixel of one channel does "
                             "not have: use patch_size >= 2 or norm_pix_loss=False")
        check_target(self.target, self.target_dim, self.patch_dim)
        if self.masking not in MASKING:
            raise ValueError(f"masking must be one of {sorted(MASKING)}, got {self.masking!r}")
        for dim, heads, what in [
            (self.embed_dim, self.num_heads, "embed_dim/num_heads"),
            (self.decoder_embed_dim, self.decoder_num_heads, "decoder_embed_dim/decoder_num_heads"),
        ]:
            if dim % heads:
                raise ValueError(f"{what}: {dim} is not divisible by {heads} heads")
            if dim % 4:
                raise ValueError(f"{what}: width {dim} must be a multiple of 4 for 2-D sin-cos positions")

    @property
    def grid_size(self) -> int:
        return self.img_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2

    @property
    def patch_dim(self) -> int:
        return self.patch_size**2 * self.in_chans

    @property
    def pred_dim(self) -> int:
        """What the decoder outputs per patch: p*p*C pixels, target_dim PCA coefficients or target_dim logits."""
        return self.patch_dim if self.target == "pixels" else self.target_dim

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "MAEConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown MAEConfig fields {unknown}; valid fields are {sorted(known)}")
        return cls(**d)


class MaskedAutoencoder(nn.Module):
    """MAE with a ViT encoder (timm Blocks, fused attention) and a lightweight Transformer decoder."""

    def __init__(self, config: MAEConfig | None = None, **overrides) -> None:
        super().__init__()
        config = MAEConfig.from_dict({**(config.to_dict() if config else {}), **overrides})
        self.config = c = config
        norm_layer = partial(nn.LayerNorm, eps=c.norm_eps)

        # --- encoder ---
        self.patch_embed = LinearPatchEmbed(c.img_size, c.patch_size, c.in_chans, c.embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim))
        self.register_buffer("pos_embed", sincos_2d(c.embed_dim, c.grid_size), persistent=True)  # (1, 1+L, D)
        if c.encoder_mask_tokens:
            self.encoder_mask_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim))
        self.blocks = nn.ModuleList(
            Block(c.embed_dim, c.num_heads, c.mlp_ratio, qkv_bias=c.qkv_bias, norm_layer=norm_layer) for _ in range(c.depth)
        )
        self.norm = norm_layer(c.embed_dim)

        # --- decoder ---
        self.decoder_embed = nn.Linear(c.embed_dim, c.decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, c.decoder_embed_dim))
        if c.encoder_mask_tokens:  # the encoder fills the holes itself: the decoder's [M] is never used, so it is
            self.mask_token.requires_grad_(False)  # frozen (data-parallel training then need not wait for its grad)
        self.register_buffer("decoder_pos_embed", sincos_2d(c.decoder_embed_dim, c.grid_size), persistent=True)
        self.decoder_blocks = nn.ModuleList(
            Block(c.decoder_embed_dim, c.decoder_num_heads, c.mlp_ratio, qkv_bias=c.qkv_bias, norm_layer=norm_layer)
            for _ in range(c.decoder_depth)
        )
        self.decoder_norm = norm_layer(c.decoder_embed_dim)
        self.decoder_pred = nn.Linear(c.decoder_embed_dim, c.pred_dim)

        # --- a fitted target (maelib.targets): buffers, so that checkpoints carry them ---
        k, d = c.target_dim, c.patch_dim
        if c.target == "pca":
            self.register_buffer("target_mean", torch.zeros(d))
            self.register_buffer("target_components", torch.zeros(k, d))
        elif c.target == "tokens":
            self.register_buffer("target_centres", torch.zeros(k, d))
            self.register_buffer("target_prior", torch.full((k,), 1.0 / max(k, 1)))
        if c.target != "pixels":  # pixel models keep exactly the official (and Hugging Face) state dict
            self.register_buffer("target_fitted", torch.tensor(False))

        self.initialize_weights()

    # ------------------------------------------------------------------ init
    def initialize_weights(self) -> None:
        """The paper's initialisation: xavier-uniform linears (and patch projection), N(0, 0.02) tokens."""
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        if self.config.encoder_mask_tokens:
            nn.init.normal_(self.encoder_mask_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def no_weight_decay(self) -> set[str]:
        """Parameters that AdamW should not decay (norms and biases are excluded by shape elsewhere)."""
        return {"cls_token", "mask_token", "encoder_mask_token", "pos_embed", "decoder_pos_embed"}

    # ------------------------------------------------------------------ helpers
    def check_images(self, imgs: torch.Tensor) -> torch.Tensor:
        """The images as the model takes them (a float tensor of the weights' dtype; numpy arrays and float64
        converted), or an error that names what does not fit and how to fix it."""
        c = self.config
        imgs = as_image_batch(imgs, self.cls_token.dtype)
        if imgs.ndim != 4:
            raise ValueError(f"expected a batch of images (N, C, H, W), got shape {tuple(imgs.shape)}")
        if imgs.shape[1] != c.in_chans:
            raise ValueError(
                f"images have {imgs.shape[1]} channels but the model expects {c.in_chans}: convert them "
                f"(e.g. repeat a greyscale channel 3 times) or build the model with in_chans={imgs.shape[1]}"
            )
        if tuple(imgs.shape[2:]) != (c.img_size, c.img_size):
            raise ValueError(
                f"images are {imgs.shape[2]}x{imgs.shape[3]} but the model expects {c.img_size}x{c.img_size}: "
                f"resize them, or build/load the model with img_size={imgs.shape[2]} (position embeddings are resized)"
            )
        return imgs

    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """imgs: (N, C, H, W) -> (N, L, p*p*C)"""
        return patchify(imgs, self.config.patch_size)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, L, p*p*C) -> imgs: (N, C, H, W)"""
        return unpatchify(x, self.config.patch_size, self.config.in_chans)

    def make_noise(
        self, batch: int, mask_ratio: float, device=None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Per-patch noise from the configured masking strategy; lowest noise is kept. -> (N, L)"""
        return MASKING[self.config.masking](batch, self.config.grid_size, mask_ratio, device=device, generator=generator)

    def noise_draw(self, mask_ratio: float):
        """`make_noise` as draw(rows, generator) -> (rows, L) on the CPU, for the keyed helpers of `maelib.rng`."""
        return lambda rows, generator: self.make_noise(rows, mask_ratio, generator=generator)

    def _blocks(self, x: torch.Tensor) -> torch.Tensor:
        """Prepend the cls token and run the encoder blocks (no final norm). x: (N, T, D) -> (N, 1+T, D)"""
        cls_tokens = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)  # (N, 1, D)
        x = torch.cat([cls_tokens, x], dim=1)
        for blk in self.blocks:
            x = blk(x)
        return x

    def _blocks_and_norm(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder blocks, then the final LayerNorm on every token. x: (N, T, D) -> (N, 1+T, D)"""
        return self.norm(self._blocks(x))

    # ------------------------------------------------------------------ the MAE
    def forward_encoder(
        self, imgs: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """imgs: (N, C, H, W) -> latent (N, 1+L_keep, D), mask (N, L) 1 = removed, ids_restore (N, L)"""
        x = self.patch_embed(imgs) + self.pos_embed[:, 1:]  # (N, L, D)
        if noise is None:
            noise = self.make_noise(x.shape[0], mask_ratio, x.device)
        if self.config.encoder_mask_tokens:
            # Ablation "encoder with [M]": every position goes through the encoder, removed ones as a token.
            _, mask, ids_restore = random_masking(x, mask_ratio, noise)
            m = mask.unsqueeze(-1)  # (N, L, 1)
            x = x * (1 - m) + (self.encoder_mask_token + self.pos_embed[:, 1:]) * m  # (N, L, D)
        else:
            x, mask, ids_restore = random_masking(x, mask_ratio, noise)  # (N, L_keep, D)
        return self._blocks_and_norm(x), mask, ids_restore

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """latent: (N, 1+L_keep, D), ids_restore: (N, L) -> pred (N, L, p*p*C) for every patch."""
        x = self.decoder_embed(latent)  # (N, 1+L_keep, Dd)
        if not self.config.encoder_mask_tokens:
            n, num_patches, dim = x.shape[0], ids_restore.shape[1], x.shape[2]
            mask_tokens = self.mask_token.expand(n, num_patches + 1 - x.shape[1], -1)  # (N, L - L_keep, Dd)
            x_ = torch.cat([x[:, 1:], mask_tokens], dim=1)  # (N, L, Dd) in shuffled order
            x_ = torch.gather(x_, 1, ids_restore.unsqueeze(-1).expand(-1, -1, dim))  # unshuffle
            x = torch.cat([x[:, :1], x_], dim=1)  # (N, 1+L, Dd)
        x = x + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        x = self.decoder_norm(x)
        return self.decoder_pred(x)[:, 1:]  # drop the cls token -> (N, L, p*p*C)

    def pixel_target(self, imgs: torch.Tensor) -> torch.Tensor:
        """imgs (N, C, H, W) -> (N, L, p*p*C) the patches, each normalised by its own mean and std for
        norm_pix_loss models (the paper's default): what the pixel target predicts, and what the others encode."""
        target = self.patchify(imgs)
        return normalize_patches(target) if self.config.norm_pix_loss else target

    @torch.no_grad()
    def fit_target(self, imgs: torch.Tensor, max_patches: int = 200_000, seed: int = 0) -> "MaskedAutoencoder":
        """Fit the PCA or the k-means codebook on a seeded `max_patches` of the patches of `imgs` (N, C, H, W),
        training images (MAEPretrainModule does it before training). Nothing to fit for pixels. -> self"""
        c = self.config
        if c.target == "pixels":
            return self
        patches = sample_patches(self.pixel_target(self.check_images(imgs)), max_patches, seed)  # (M, p*p*C)
        if c.target == "pca":
            fitted = fit_pca(patches, c.target_dim)[:2]  # the mean and the leading components
            names = ("target_mean", "target_components")
        else:
            fitted = fit_kmeans(patches, c.target_dim, seed=seed)
            names = ("target_centres", "target_prior")
        for name, value in zip(names, fitted):
            getattr(self, name).copy_(value)
        self.target_fitted.fill_(True)
        return self

    @property
    def target_is_fitted(self) -> bool:
        """False for a PCA or token target before `fit_target` (or a checkpoint that holds it) has run."""
        return self.config.target == "pixels" or bool(self.target_fitted)

    def loss_target(self, imgs: torch.Tensor) -> torch.Tensor:
        """What the decoder is trained to predict, for imgs (N, C, H, W): pixels (N, L, p*p*C), PCA
        coefficients (N, L, k), or the index of the nearest k-means token (N, L), long."""
        if not self.target_is_fitted:
            raise ValueError(f"this model's {self.config.target!r} target is not fitted yet: call "
                             "model.fit_target(training_images) first (MAEPretrainModule does it before training)")
        pixels = self.pixel_target(imgs)
        if self.config.target == "pca":
            return pca_coordinates(pixels, self.target_mean, self.target_components)
        if self.config.target == "tokens":
            return nearest_centre(pixels, self.target_centres)
        return pixels

    def patch_loss(self, imgs: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        """imgs: (N, C, H, W), pred: (N, L, pred_dim) -> (N, L) the loss of every patch: mean squared error
        (pixels, PCA) or cross-entropy of the token logits."""
        target = self.loss_target(imgs)
        if self.config.target == "tokens":
            return F.cross_entropy(pred.float().flatten(0, 1), target.flatten(), reduction="none").view(target.shape)
        return (pred.float() - target.float()).pow(2).mean(dim=-1)

    @torch.no_grad()
    def trivial_patch_loss(self, imgs: torch.Tensor) -> torch.Tensor:
        """imgs (N, C, H, W) -> (N, L) the loss of a decoder that learned nothing about the image: predicting
        zeros (the dataset's mean pixel, each patch's own mean for norm-pix, the mean PCA coefficients), or for
        tokens, the training tokens' frequencies (the class prior). A model must beat this to have learned."""
        target = self.loss_target(imgs)
        if self.config.target == "tokens":
            return -self.target_prior.clamp_min(1e-12).log()[target]
        return target.float().pow(2).mean(dim=-1)

    def forward_loss(self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """imgs: (N, C, H, W), pred: (N, L, pred_dim), mask: (N, L) -> the mean `patch_loss` over masked patches.

        With no masked patch at all (mask ratio 0) there is nothing to score and the loss is 0.
        """
        loss = self.patch_loss(imgs, pred)  # (N, L)
        return (loss * mask).sum() / mask.sum().clamp_min(1)

    def forward(
        self, imgs: torch.Tensor, mask_ratio: float | None = None, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """imgs: (N, C, H, W) -> loss (scalar), pred (N, L, p*p*C), mask (N, L) with 1 = removed.

        mask_ratio defaults to the config's (0.75); `noise` (N, L) fixes the mask (lowest noise kept).
        """
        mask_ratio = check_mask_ratio(self.config.mask_ratio if mask_ratio is None else mask_ratio)
        imgs = self.check_images(imgs)
        latent, mask, ids_restore = self.forward_encoder(imgs, mask_ratio, noise)
        pred = self.forward_decoder(latent, ids_restore)
        loss = self.forward_loss(imgs, pred, mask)
        return loss, pred, mask

    # ------------------------------------------------------------------ for teaching and analysis
    def forward_features(self, imgs: torch.Tensor, norm: bool = True) -> torch.Tensor:
        """Encoder on the whole image, no masking, patches in order. imgs -> (N, 1+L, D), cls token first.
        norm=False returns the last block's outputs before the final LayerNorm (what global pooling averages)."""
        imgs = self.check_images(imgs)
        tokens = self._blocks(self.patch_embed(imgs) + self.pos_embed[:, 1:])  # (N, 1+L, D)
        return self.norm(tokens) if norm else tokens

    def features(self, imgs: torch.Tensor, pool: str = "cls") -> torch.Tensor:
        """One vector per image from the unmasked encoder. -> (N, D)

        pool="cls": the normed cls token (the paper's linear probe; timm's global_pool="token").
        pool="mean" (or "avg"): the final LayerNorm of the average of the patch tokens, the paper's global pooling
        for fine-tuning: the same vector as `to_timm_vit(model, global_pool="avg")` feeds its head.
        """
        tokens = self.forward_features(imgs, norm=False)  # (N, 1+L, D)
        if check_pool(pool) == "cls":
            return self.norm(tokens[:, 0])  # LayerNorm acts per token: the same as norming all, then taking one
        return self.norm(tokens[:, 1:].mean(dim=1))  # average the patches, then normalise

    def pred_to_images(self, pred: torch.Tensor, imgs: torch.Tensor | None = None) -> torch.Tensor:
        """Predictions (N, L, pred_dim) -> images (N, C, H, W), in the same pixel space as `imgs` (PCA coefficients
        and token logits are first turned into patches: the rank-k patch, the most likely token's centre).

        A norm_pix_loss model predicts each patch with mean 0 and variance 1. To show it as an image, pass
        the original `imgs`: the predictions are scaled back with each true patch's mean and std. Note this
        leaks the hidden patches' mean colour and contrast into the picture; the shapes and texture are the
        model's own. Without `imgs` a norm_pix prediction is returned as it is (normalised).
        """
        c = self.config
        if c.target == "pca":  # back from the coefficients: the best rank-k patch
            pred = pca_patches(pred, self.target_mean, self.target_components)
        elif c.target == "tokens":  # the most likely token's centre
            pred = self.target_centres[pred.argmax(-1)]
        if c.norm_pix_loss and imgs is not None:
            mean, std = patch_stats(self.patchify(imgs))
            pred = pred * std + mean
        return self.unpatchify(pred)

    def paste_visible(self, imgs: torch.Tensor, recon: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Reconstruction with the visible patches replaced by the input's. All images (N, C, H, W); mask (N, L)."""
        m = mask_to_image(mask.to(imgs.dtype), self.config.patch_size, self.config.in_chans)  # 1 = hidden
        return imgs * (1 - m) + recon * m

    def num_params(self, part: str = "all") -> int:
        """Parameter count of "encoder", "decoder" or "all"."""
        enc = ("patch_embed", "cls_token", "encoder_mask_token", "blocks", "norm")
        counts = {"encoder": 0, "decoder": 0}
        for name, p in self.named_parameters():
            counts["encoder" if name.split(".")[0] in enc else "decoder"] += p.numel()
        return sum(counts.values()) if part == "all" else counts[part]
