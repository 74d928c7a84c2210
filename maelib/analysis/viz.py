"""Figures for teaching and analysing MAEs. Every function returns a matplotlib Figure and shows nothing.

The figures are plain `matplotlib.figure.Figure` objects, not registered with pyplot: a notebook displays
the returned figure once, a script saves it, and nothing leaks if it is never closed.

    fig = show_reconstruction(model, imgs, mask_ratio=0.75, mean=MEAN, std=STD)
    save_figure(fig, "out/recon")        # -> out/recon.png

Images are passed in model input space (N, C, H, W) (or one image (C, H, W)); `mean`/`std` (per channel)
undo the input normalisation for display. Displayed pixels are clamped to [0, 1]; greyscale uses cmap gray.
Hidden patches are drawn mid-grey, and attention maps leave them blank.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib
import numpy as np
import torch
import torch.nn as nn
from matplotlib import ticker
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..data.transforms import denormalize
from . import attention as At
from . import embedding as E
from . import reconstruction as A

Stats = Sequence[float] | torch.Tensor | None
HEAT = "inferno"  # attention; NaN (hidden patch) cells are transparent over the grey-masked image
ERRORS = matplotlib.colormaps["magma"].with_extremes(bad="0.85")  # NaN (visible patch) cells light grey


# ---------------------------------------------------------------------------------------------- helpers
def to_display(imgs: torch.Tensor, mean: Stats = None, std: Stats = None) -> np.ndarray:
    """(N, C, H, W) or (C, H, W) in model input space -> (N, H, W, C) float array in [0, 1]."""
    x = torch.as_tensor(imgs).detach().cpu().float()
    x = x.unsqueeze(0) if x.ndim == 3 else x
    if mean is not None or std is not None:  # `denormalize`, with the missing statistic as the identity
        x = denormalize(x, (0.0,) if mean is None else mean, (1.0,) if std is None else std)
    return x.clamp(0, 1).permute(0, 2, 3, 1).numpy()


def _batch(img: torch.Tensor) -> torch.Tensor:
    return img.unsqueeze(0) if img.ndim == 3 else img


def _grey_out(display: np.ndarray, mask_map: torch.Tensor, grey: float = 0.5) -> np.ndarray:
    """Paint hidden pixels grey. display (N, H, W, C), mask_map (N, 1, H, W) with 1 = hidden."""
    m = mask_map.detach().cpu().float().permute(0, 2, 3, 1).numpy()
    return display * (1 - m) + grey * m


def _image(ax: Axes, img: np.ndarray, title: str | None = None) -> None:
    """Show one (H, W, C) image in [0, 1], without ticks."""
    if img.shape[-1] == 1:
        ax.imshow(img[..., 0], cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(img)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)


def _heat(ax: Axes, heat: np.ndarray, size: int, vmin: float, vmax: float, background: np.ndarray | None = None,
          alpha: float = 0.7, cmap: str | matplotlib.colors.Colormap = HEAT):
    """A (grid, grid) map stretched over a size x size image (NaN cells stay transparent)."""
    if background is not None:
        _image(ax, background)
    extent = (-0.5, size - 0.5, size - 0.5, -0.5)
    im = ax.imshow(heat, cmap=cmap, vmin=vmin, vmax=vmax, extent=extent, interpolation="nearest",
                   alpha=alpha if background is not None else 1.0)
    ax.set_axis_off()
    return im


def _grid(rows: int, cols: int, cell: float = 1.8) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(cols * cell + 0.6, rows * cell + 0.4), layout="constrained")
    return fig, fig.subplots(rows, cols, squeeze=False)


def _panels(n: int, max_cols: int = 6, cell: float = 1.8) -> tuple[Figure, list[Axes]]:
    """n axes in rows of at most max_cols; unused cells are removed."""
    cols = min(n, max_cols)
    fig, axes = _grid(math.ceil(n / cols), cols, cell)
    flat = list(axes.flat)
    for ax in flat[n:]:
        fig.delaxes(ax)
    return fig, flat[:n]


def _range(*maps: np.ndarray) -> tuple[float, float]:
    values = np.concatenate([np.asarray(m, dtype=float).ravel() for m in maps])
    return float(np.nanmin(values)), float(np.nanmax(values))


def save_figure(fig: Figure, path: str | Path, dpi: int = 120, **savefig_kwargs) -> Path:
    """Save a figure, creating parent folders; PNG when the path has no suffix. Returns the path written."""
    path = Path(path)
    if not path.suffix:
        path = path.with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight", **savefig_kwargs)
    return path


# ---------------------------------------------------------------------------------------------- reconstruction
def borrowed_note(model: nn.Module) -> str:
    """The warning every picture of a norm-pix model carries: its hidden patches are drawn with their true mean
    and std (`MaskedAutoencoder.pred_to_images`), information the model never had. Empty for pixel targets."""
    if getattr(model.config, "norm_pix_loss", False):
        return "\nnorm-pix model: hidden patches drawn with their TRUE mean and std (borrowed, not predicted)"
    return ""


def show_reconstruction(model: nn.Module, imgs: torch.Tensor, mask_ratio: float | None = None,
                        noise: torch.Tensor | None = None, mean: Stats = None, std: Stats = None,
                        max_images: int = 8) -> Figure:
    """Rows = images; columns = original, masked, reconstruction, reconstruction + visible patches."""
    imgs = _batch(imgs)[:max_images]
    noise = None if noise is None else noise[:max_images]
    out = A.reconstruct(model, imgs, mask_ratio, noise)
    original = to_display(imgs, mean, std)
    columns = {
        "original": original,
        "masked": _grey_out(original, out["mask_map"]),
        "reconstruction": to_display(out["reconstruction"], mean, std),
        "reconstruction + visible": to_display(out["pasted"], mean, std),
    }
    fig, axes = _grid(len(imgs), len(columns))
    for j, (name, images) in enumerate(columns.items()):
        for i, img in enumerate(images):
            _image(axes[i, j], img, name if i == 0 else None)
    ratio = out["mask"].float().mean().item()
    fig.suptitle(f"MAE reconstruction: {ratio:.0%} of patches hidden, loss {out['loss'].item():.4f}"
                 + borrowed_note(model), fontsize=10)
    return fig


def show_mask_ratios(model: nn.Module, img: torch.Tensor, ratios: Sequence[float] = (0.25, 0.5, 0.75, 0.9),
                     seed: int = 0, mean: Stats = None, std: Stats = None) -> Figure:
    """One image at several mask ratios: top row masked, bottom row reconstruction + visible.

    The same seed is used at every ratio, so with random masking the hidden sets nest.
    """
    img = _batch(img)[:1]
    fig, axes = _grid(2, len(ratios) + 1)
    original = to_display(img, mean, std)
    _image(axes[0, 0], original[0], "original")
    fig.delaxes(axes[1, 0])
    for j, ratio in enumerate(ratios, start=1):
        out = A.reconstruct(model, img, ratio, A.seeded_noise(model, 1, ratio, seed))
        _image(axes[0, j], _grey_out(original, out["mask_map"])[0], f"{ratio:.0%} masked")
        _image(axes[1, j], to_display(out["pasted"], mean, std)[0], f"reconstruction\nloss {out['loss'].item():.3f}")
    fig.suptitle("reconstruction vs mask ratio" + borrowed_note(model), fontsize=10)
    return fig


def show_patch_errors(model: nn.Module, imgs: torch.Tensor, mask_ratio: float | None = None,
                      noise: torch.Tensor | None = None, space: str = "target", mean: Stats = None,
                      std: Stats = None, max_images: int = 8) -> Figure:
    """Rows = images; columns = original, masked, reconstruction + visible, per-patch MSE of hidden patches."""
    imgs = _batch(imgs)[:max_images]
    ratio = model.config.mask_ratio if mask_ratio is None else mask_ratio
    noise = model.make_noise(len(imgs), ratio, A.model_device(model)) if noise is None else noise[:max_images]
    out = A.reconstruct(model, imgs, ratio, noise)
    err, mask = A.patch_errors(model, imgs, ratio, noise, space=space)
    err = torch.where(mask.bool(), err, torch.nan).cpu().numpy()  # visible patches left blank
    original = to_display(imgs, mean, std)
    masked, pasted = _grey_out(original, out["mask_map"]), to_display(out["pasted"], mean, std)
    vmin, vmax = _range(err)
    fig, axes = _grid(len(imgs), 4)
    for i in range(len(imgs)):
        first = i == 0
        _image(axes[i, 0], original[i], "original" if first else None)
        _image(axes[i, 1], masked[i], "masked" if first else None)
        _image(axes[i, 2], pasted[i], "reconstruction + visible" if first else None)
        im = _heat(axes[i, 3], err[i], original.shape[1], vmin, vmax, cmap=ERRORS)
        if first:
            axes[i, 3].set_title(f"patch MSE ({space})", fontsize=9)
    fig.colorbar(im, ax=list(axes[:, 3]), shrink=0.8, label=f"MSE ({space} space)")
    return fig


def plot_error_vs_mask_ratio(ratios: Sequence[float], errors: Mapping[str, Sequence[float]] | Sequence[float],
                             ylabel: str = "MSE on hidden patches", title: str | None = None,
                             logy: bool | None = None) -> Figure:
    """Error against mask ratio; `errors` is one curve or {label: curve} (e.g. model vs mean-colour baseline).

    logy: a log y axis; None (default) chooses it when the curves span more than a factor of 5 (a random-init
    curve near 3 beside a trained model's 0.1-0.4), so that every curve keeps its shape on the page.
    """
    curves = errors if isinstance(errors, Mapping) else {"model": errors}
    values = {label: np.asarray(torch.as_tensor(v).cpu(), dtype=float) for label, v in curves.items()}
    every = np.concatenate([v.ravel() for v in values.values()]) if values else np.array([1.0])
    if logy is None:
        logy = bool((every > 0).all() and every.max() > 5 * every.min())
    fig = Figure(figsize=(4.5, 3.2), layout="constrained")
    ax = fig.subplots()
    for label, v in values.items():
        ax.plot(np.asarray(ratios) * 100, v, marker="o", label=label)
    ax.set(xlabel="mask ratio (%)", ylabel=ylabel + (" (log scale)" if logy else ""),
           title=title or "error vs mask ratio")
    if logy:
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    ax.grid(alpha=0.3, which="major")
    ax.legend(fontsize=8)
    return fig


def plot_loss_curve(steps: Sequence[float], losses: Sequence[float], smooth: int = 0, label: str = "train loss",
                    logy: bool = False, title: str | None = None) -> Figure:
    """Loss against step; smooth > 1 adds a moving average over that many points on top of the raw curve."""
    steps, losses = np.asarray(steps, dtype=float), np.asarray(losses, dtype=float)
    fig = Figure(figsize=(5, 3.2), layout="constrained")
    ax = fig.subplots()
    ax.plot(steps, losses, alpha=0.35 if smooth > 1 else 1.0, label=label)
    if 1 < smooth <= len(losses):
        averaged = np.convolve(losses, np.ones(smooth) / smooth, mode="valid")
        ax.plot(steps[smooth - 1:], averaged, label=f"{label} (mean of {smooth})")
    ax.set(xlabel="step", ylabel="loss", title=title or "training loss")
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


# ---------------------------------------------------------------------------------------------- attention
def _attention_panels(fig: Figure, axes: list[Axes], background: np.ndarray, maps: np.ndarray, label: str,
                      query: tuple[int, int] | None = None, patch_size: int = 1):
    """Image in axes[0], one heat map per head in axes[1:], a shared colour scale and colorbar."""
    size = background.shape[0]
    _image(axes[0], background, "image")
    vmin, vmax = _range(maps)
    for h, (ax, heat) in enumerate(zip(axes[1:], maps)):
        im = _heat(ax, heat, size, 0.0 if vmin >= 0 else vmin, vmax, background)
        ax.set_title(f"head {h}", fontsize=9)
    if query is not None:
        for ax in axes:
            ax.add_patch(Rectangle((query[1] * patch_size - 0.5, query[0] * patch_size - 0.5), patch_size,
                                   patch_size, fill=False, edgecolor="cyan", linewidth=1.5))
    fig.colorbar(im, ax=axes, shrink=0.8, label=label)


def show_attention(model: nn.Module, img: torch.Tensor, block: int = -1, mask_ratio: float = 0.0,
                   noise: torch.Tensor | None = None, mean: Stats = None, std: Stats = None) -> Figure:
    """The image, then the cls token's attention to every patch for each head of an encoder block.

    With mask_ratio > 0 the masked encoder pass is shown: hidden patches are grey and have no attention.
    """
    img = _batch(img)[:1]
    attn, ids_keep = At.attention_maps(model, img, [block], mask_ratio, noise)
    c = model.config
    index = block % c.depth
    maps = At.cls_attention_map(attn[index], ids_keep, c.grid_size)[0].numpy()  # (heads, grid, grid)
    background = to_display(img, mean, std)
    if ids_keep is not None:
        mask = torch.ones(1, c.num_patches).scatter(1, ids_keep, 0.0)
        background = _grey_out(background, A.mask_to_image(mask, c.patch_size))
    fig, axes = _panels(1 + len(maps))
    _attention_panels(fig, axes, background[0], maps, "cls attention")
    fig.suptitle(f"cls attention, encoder block {index}" + (f", {mask_ratio:.0%} masked" if ids_keep is not None else ""),
                 fontsize=10)
    return fig


def show_query_attention(model: nn.Module, img: torch.Tensor, query: tuple[int, int] = (0, 0), block: int = -1,
                         mean: Stats = None, std: Stats = None) -> Figure:
    """Where patch `query` = (row, col) looks, per head of an encoder block (unmasked image; query outlined)."""
    img = _batch(img)[:1]
    attn, _ = At.attention_maps(model, img, [block])
    c = model.config
    index = block % c.depth
    maps = At.query_attention_map(attn[index], query, grid=c.grid_size)[0].numpy()
    fig, axes = _panels(1 + len(maps))
    _attention_panels(fig, axes, to_display(img, mean, std)[0], maps, "attention", query, c.patch_size)
    fig.suptitle(f"attention of patch {tuple(query)}, encoder block {index}", fontsize=10)
    return fig


def show_rollout(model: nn.Module, imgs: torch.Tensor, discard_ratio: float = 0.0, head_fusion: str = "mean",
                 mean: Stats = None, std: Stats = None, max_images: int = 8) -> Figure:
    """Top row images, bottom row the rolled-out cls attention through all encoder blocks (shared scale)."""
    imgs = _batch(imgs)[:max_images]
    attn, _ = At.attention_maps(model, imgs)
    rollout = At.attention_rollout(attn, discard_ratio, head_fusion)  # (N, T, T)
    maps = At.cls_attention_map(rollout[:, None]).squeeze(1).numpy()  # (N, grid, grid)
    display = to_display(imgs, mean, std)
    vmin, vmax = _range(maps)
    fig, axes = _grid(2, len(imgs))
    for i in range(len(imgs)):
        _image(axes[0, i], display[i])
        im = _heat(axes[1, i], maps[i], display.shape[1], vmin, vmax, display[i])
    fig.colorbar(im, ax=list(axes[1]), shrink=0.8, label="rollout")
    fig.suptitle(f"attention rollout ({head_fusion} of heads, discard {discard_ratio:.0%})", fontsize=10)
    return fig


def plot_attention_distance(results: Mapping[str, np.ndarray | torch.Tensor], title: str | None = None) -> Figure:
    """Mean attention distance per head (dots) and per block (line) for each model, as in ViT Fig. 7.

    results: {label: (depth, heads)}, e.g. {"MAE": ..., "random init": ..., "fine-tuned": ...}.
    """
    fig = Figure(figsize=(5.5, 3.6), layout="constrained")
    ax = fig.subplots()
    width = 0.6 / max(1, len(results))
    for m, (label, dist) in enumerate(results.items()):
        d = np.asarray(torch.as_tensor(dist).cpu(), dtype=float)  # (depth, heads)
        blocks = np.arange(d.shape[0]) + (m - (len(results) - 1) / 2) * width
        colour = f"C{m}"
        ax.scatter(np.repeat(blocks, d.shape[1]), d.ravel(), s=14, alpha=0.7, color=colour, label=label)
        ax.plot(blocks, d.mean(axis=1), color=colour, alpha=0.6)
    ax.set(xlabel="encoder block", ylabel="mean attention distance (pixels)", title=title or "mean attention distance")
    ax.set_xticks(range(max(len(d) for d in results.values())))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


# ---------------------------------------------------------------------------------------------- features
def show_pca(model: nn.Module, imgs: torch.Tensor, mean: Stats = None, std: Stats = None,
             max_images: int = 8, remove_position: bool = True) -> Figure:
    """Top row images, bottom row the first 3 PCA components of the encoder's patch features as RGB.

    The PCA is fitted on all patches of all given images (give more than are shown for a steadier fit), so
    colours mean the same across the row. remove_position (default): each position's mean feature over the
    images is removed first (`maelib.analysis.pca_rgb`), so that the colours show content, not where a patch is.
    """
    with A.evaluating(model):
        tokens = model.forward_features(_batch(imgs).to(A.model_device(model)))  # (N, 1+L, D)
    rgb = E.pca_rgb(tokens[:, 1:], model.config.grid_size, remove_position=remove_position)[:max_images]
    display = to_display(_batch(imgs)[:max_images], mean, std)
    fig, axes = _grid(2, len(display))
    for i in range(len(display)):
        _image(axes[0, i], display[i])
        _image(axes[1, i], rgb[i])
    what = "position removed, " if remove_position else ""
    fig.suptitle(f"patch features ({what}PCA over {len(tokens)} images): first 3 components as RGB", fontsize=10)
    return fig


def plot_embedding(features: torch.Tensor | np.ndarray, labels: Sequence[int] | torch.Tensor | np.ndarray,
                   class_names: Sequence[str] | None = None, method: str = "pca", seed: int = 0,
                   title: str | None = None) -> Figure:
    """Image features (N, D) embedded in 2-D (PCA or t-SNE), coloured by label; the legend sits outside the
    axes, beside the points, so it never hides any."""
    xy = E.embed_2d(features, method, seed)
    labels = np.asarray(torch.as_tensor(labels).cpu())
    fig = Figure(figsize=(6.2, 4.2), layout="constrained")
    ax = fig.subplots()
    for k, cls in enumerate(np.unique(labels)):
        name = class_names[int(cls)] if class_names is not None else str(cls)
        pick = labels == cls
        ax.scatter(xy[pick, 0], xy[pick, 1], s=10, alpha=0.8, color=f"C{k % 10}", label=name)
    axis = {"pca": "PC", "tsne": "t-SNE"}.get(method, method)
    ax.set(title=title or f"features ({method})", xticks=[], yticks=[], xlabel=f"{axis} 1", ylabel=f"{axis} 2")
    ax.legend(fontsize=7, markerscale=1.5, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
              frameon=False)
    return fig
