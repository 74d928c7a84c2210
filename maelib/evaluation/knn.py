"""Weighted k-NN on frozen features (Wu et al., 2018; DINO's protocol): the cheapest measure of what an encoder
learned, with no training at all."""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def knn_predict(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk: int = 1024,
) -> torch.Tensor:
    """Weighted k-NN (Wu et al., 2018; DINO): cosine similarity, the k nearest vote with weight exp(sim / T).

    train_feats: (N, D), train_labels: (N,), test_feats: (M, D) -> predicted labels (M,), on the device of
    `train_feats` (the features' own: a bank on the GPU stays there). Any float dtype; scored in float32.
    """
    device = train_feats.device
    num_classes = num_classes or int(train_labels.max()) + 1
    k = min(k, len(train_feats))
    train = F.normalize(train_feats.float(), dim=1)
    train_labels = train_labels.to(device)
    preds = []
    for start in range(0, len(test_feats), chunk):
        sims = F.normalize(test_feats[start : start + chunk].to(device).float(), dim=1) @ train.T  # (m, N)
        top_sims, top_idx = sims.topk(k, dim=1)  # (m, k)
        votes = torch.zeros(len(sims), num_classes, device=device)
        votes.scatter_add_(1, train_labels[top_idx], (top_sims / temperature).exp())
        preds.append(votes.argmax(1))
    return torch.cat(preds)


def knn_accuracy(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
) -> float:
    """Top-1 accuracy (0-1) of `knn_predict` on labelled test features."""
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    preds = knn_predict(train_feats, train_labels, test_feats, k, temperature, num_classes)
    return (preds == test_labels.to(preds.device)).float().mean().item()
