"""Optimisation recipes from the paper: lr scaling, warm-up + cosine schedule, weight-decay groups, LARS."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from timm.optim import param_groups_layer_decay, param_groups_weight_decay


def scaled_lr(base_lr: float, effective_batch: int) -> float:
    """The paper's linear scaling rule: lr = base_lr * effective batch / 256."""
    return base_lr * effective_batch / 256


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> float:
    """Multiplier of the peak lr at `step`: linear warm-up, then a half-cycle cosine down to `min_ratio`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def warmup_steps(warmup_epochs: float, steps_per_epoch: float, total_steps: int) -> int:
    """Steps of linear warm-up for `warmup_epochs` epochs, capped at half the run (a short run still decays)."""
    return min(int(warmup_epochs * steps_per_epoch), int(total_steps) // 2)


def warmup_cosine_scheduler(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_ratio: float = 0.0
) -> dict:
    """A Lightning scheduler config stepping `warmup_cosine` every optimisation step."""
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, warmup_steps, total_steps, min_ratio)
    )
    return {"scheduler": schedule, "interval": "step"}


def weight_decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: decay for weight matrices; none for norms, biases, tokens and position embeddings."""
    skip = model.no_weight_decay() if hasattr(model, "no_weight_decay") else set()
    return param_groups_weight_decay(model, weight_decay, no_weight_decay_list=skip)


def layer_decay_groups(model: nn.Module, lr: float, weight_decay: float, layer_decay: float) -> list[dict]:
    """timm's layer-wise lr decay for a VisionTransformer: block i of d trains at lr * layer_decay ** (d + 1 - i),
    the head at lr. Each group's "lr" is set, so any torch scheduler (e.g. LambdaLR) scales them together."""
    skip = model.no_weight_decay() if hasattr(model, "no_weight_decay") else set()
    groups = param_groups_layer_decay(model, weight_decay, no_weight_decay_list=skip, layer_decay=layer_decay)
    for group in groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    return groups


class LARS(torch.optim.Optimizer):
    """LARS (You et al., 2017), the paper's linear-probe optimiser: SGD with momentum whose update of each
    weight matrix is rescaled by trust * ||w|| / ||g + wd * w||. Vectors (biases, norm weights) skip the rescale
    and the weight decay, as in the paper's code."""

    def __init__(self, params, lr: float = 0.1, weight_decay: float = 0.0, momentum: float = 0.9, trust: float = 0.001):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, trust=trust))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                update = p.grad
                if p.ndim > 1:
                    update = update.add(p, alpha=group["weight_decay"])
                    w_norm, u_norm = torch.norm(p), torch.norm(update)
                    ratio = torch.where((w_norm > 0) & (u_norm > 0), group["trust"] * w_norm / u_norm, torch.ones_like(w_norm))
                    update = update.mul(ratio)
                state = self.state[p]
                if "momentum" not in state:
                    state["momentum"] = torch.zeros_like(p)
                buf = state["momentum"].mul_(group["momentum"]).add_(update)
                p.add_(buf, alpha=-group["lr"])
        return loss
