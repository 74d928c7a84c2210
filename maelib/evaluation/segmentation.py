"""Semantic segmentation as a transfer task: a light head on an encoder's patch tokens, trained on scenes the
encoder never saw (`maelib.data.scenes`), scored by mean intersection-over-union (mIoU).

    (train, test) = split_scenes(train=2000, test=500)
    result = segment(model, train, test, frozen=True, epochs=10)
    result["miou"], result["per_class_iou"], result["pixel_acc"]

The head is the honest minimum: one linear layer from each patch token to class logits, upsampled bilinearly to the
pixels, the linear probe of dense prediction. frozen=True trains the head only (the encoder a fixed feature
extractor); frozen=False fine-tunes the encoder with it (at `encoder_lr_scale` of the head's lr), after the head
has first been trained alone (`head_epochs`). The encoder is
first rebuilt for the scenes' size (its position embeddings resized, as the official code's
interpolate_pos_embed).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..model import MaskedAutoencoder
from ..weights.checkpoint import load_weights


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Pixel counts (num_classes, num_classes), rows the true class, columns the predicted one."""
    index = target.flatten().long() * num_classes + pred.flatten().long()
    return torch.bincount(index, minlength=num_classes**2).view(num_classes, num_classes)


def mean_iou(confusion: torch.Tensor) -> tuple[float, list[float]]:
    """-> (mIoU, per-class IoU): IoU = TP / (TP + FP + FN) for each class, the mean over the classes that occur
    in the truth or the prediction (a class absent from both is nan and left out)."""
    c = confusion.double()
    tp = c.diag()
    union = c.sum(0) + c.sum(1) - tp
    iou = torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, math.nan))
    present = ~iou.isnan()
    return (iou[present].mean().item() if present.any() else math.nan), iou.tolist()


def at_size(model: MaskedAutoencoder, img_size: int) -> MaskedAutoencoder:
    """A copy of `model` for img_size x img_size images (position embeddings resized when the size differs)."""
    twin = MaskedAutoencoder(model.config, img_size=img_size)
    return load_weights(twin, {k: v.clone() for k, v in model.state_dict().items()})


class LinearSegmenter(nn.Module):
    """Patch tokens -> a linear layer -> class logits per patch -> bilinear upsampling to the pixels.
    imgs (N, C, H, W) -> logits (N, classes, H, W)."""

    def __init__(self, encoder: MaskedAutoencoder, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.config.embed_dim, num_classes)

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        return self.from_tokens(self.encoder.forward_features(imgs)[:, 1:])  # (N, g*g, D): the normed patch tokens

    def from_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Patch tokens (N, g*g, D) -> logits (N, classes, H, W): the head alone (a frozen encoder's tokens can be
        computed once and cached)."""
        g, p = self.encoder.config.grid_size, self.encoder.config.patch_size
        logits = self.head(tokens).transpose(1, 2).reshape(len(tokens), -1, g, g)  # (N, classes, g, g)
        return F.interpolate(logits, scale_factor=p, mode="bilinear", align_corners=False)


def _fit(net: LinearSegmenter, batches, epochs: int, groups: list[dict], weight_decay: float, batch_size: int,
         n: int, loss_of) -> None:
    """AdamW with a cosine schedule over `epochs` of shuffled batches of `n` examples; loss_of(idx) -> loss."""
    optimizer = torch.optim.AdamW(groups, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, epochs * math.ceil(n / batch_size)))
    for _ in range(epochs):
        for idx in batches(n):
            loss = loss_of(idx)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()


def segment(model: MaskedAutoencoder, train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
            *, num_classes: int = 11, frozen: bool = True, epochs: int = 10, batch_size: int = 64, lr: float = 1e-3,
            head_epochs: int = 0, head_lr: float = 1e-2, encoder_lr_scale: float = 0.1, weight_decay: float = 0.05,
            mean=(0.286,), std=(0.353,), seed: int = 0, examples: int = 0) -> dict:
    """Train a `LinearSegmenter` on `train` = (images uint8 (N, C, S, S), masks int64 (N, S, S)) with pixel-wise
    cross-entropy (AdamW, cosine schedule), score it on `test`. `model` is copied, never changed.

    frozen=True: the head alone trains, `epochs` at `lr`, on patch tokens the encoder computes once (cheap: many
    epochs cost little). frozen=False: first `head_epochs` of the head alone in the same way at `head_lr`, then
    `epochs` of head and encoder together at `lr` (the encoder at `encoder_lr_scale` of it): "linear probe, then
    fine-tune" (Kumar et al., 2022), so that a random head's first gradients do not wreck the pretrained features.
    -> {"miou", "per_class_iou", "pixel_acc", "frozen"}; seeded. examples=k adds "examples": the predicted masks
    of the first k test scenes (int64 (k, S, S)), to draw beside the truth."""
    (train_x, train_y), (test_x, test_y) = train, test
    device = next(model.parameters()).device
    mean_t = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, -1, 1, 1)
    train_y = train_y.to(device)

    def inputs(x: torch.Tensor) -> torch.Tensor:
        return (x.to(device).float() / 255 - mean_t) / std_t

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = LinearSegmenter(at_size(model, train_x.shape[-1]).to(device), num_classes).to(device)
        batches = lambda n: torch.randperm(n).split(batch_size)  # noqa: E731 (seeded by the fork above)
        head_only = epochs if frozen else head_epochs
        if head_only:  # the encoder is fixed: its patch tokens (N, g*g, D) once, then only the head trains
            net.eval()
            with torch.no_grad():
                tokens = torch.cat([net.encoder.forward_features(inputs(train_x[i:i + 256]))[:, 1:]
                                    for i in range(0, len(train_x), 256)])
            _fit(net, batches, head_only, [{"params": net.head.parameters(), "lr": lr if frozen else head_lr}],
                 weight_decay, batch_size, len(train_x),
                 lambda idx: F.cross_entropy(net.from_tokens(tokens[idx.to(device)]), train_y[idx.to(device)]))
        if not frozen and epochs:
            net.train()
            groups = [{"params": net.head.parameters(), "lr": lr},
                      {"params": net.encoder.parameters(), "lr": lr * encoder_lr_scale}]
            _fit(net, batches, epochs, groups, weight_decay, batch_size, len(train_x),
                 lambda idx: F.cross_entropy(net(inputs(train_x[idx])), train_y[idx.to(device)]))
    net.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    predictions = []
    with torch.no_grad():
        for i in range(0, len(test_x), 256):
            pred = net(inputs(test_x[i : i + 256])).argmax(1).cpu()
            confusion += confusion_matrix(pred, test_y[i : i + 256], num_classes)
            predictions.append(pred[: max(0, examples - i)])
    miou, per_class = mean_iou(confusion)
    result = dict(miou=miou, per_class_iou=per_class, pixel_acc=(confusion.diag().sum() / confusion.sum()).item(),
                  frozen=frozen)
    if examples:
        result["examples"] = torch.cat(predictions)
    return result
