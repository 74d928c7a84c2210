"""The linear probe: the paper's head (BatchNorm without affine, then linear) trained on frozen features.

There is one probe in maelib. `LinearProbeModule` (maelib.train.modules) trains it, under `maelib linprobe` on any
number of GPUs, and `linear_probe` below runs that same module on features already in memory, as notebooks 5 and
8 and the ablation study do:

    acc = linear_probe((train_x, train_y), (test_x, test_y), epochs=20)      # -> test accuracy, 0-1

The recipe is the paper's (official main_linprobe.py) at a course's batch size: SGD with momentum 0.9 (LARS is
for the paper's batch of 16384), no weight decay, lr = base_lr x batch / 256, warm-up over the first tenth of
the epochs, then cosine to zero.
"""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from ..train.modules import LinearProbeModule, linear_probe_head
from ..train.trainer import quiet_trainer

__all__ = [
    "PIXELS_PROBE_BASE_LR", "PROBE_BASE_LR", "PROBE_EPOCHS",
    "linear_probe", "linear_probe_head", "CachedFeatures",
]

PROBE_EPOCHS = 20
PROBE_BASE_LR = 1.0  # chosen on held-out training images of Fashion-MNIST features (notebook 5)
PIXELS_PROBE_BASE_LR = 0.01  # for raw pixels (thousands of inputs, not an encoder's 128): the rate they train at


class CachedFeatures(L.LightningDataModule):
    """Features and labels already in memory, as training batches for `LinearProbeModule`."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, batch_size: int = 256, seed: int = 0) -> None:
        super().__init__()
        self.dataset, self.batch_size, self.seed = TensorDataset(features, labels), batch_size, seed

    def train_dataloader(self) -> DataLoader:
        # the last incomplete batch is dropped: the probe's BatchNorm cannot train on a batch of one
        return DataLoader(self.dataset, batch_size=self.batch_size, shuffle=True,
                          drop_last=len(self.dataset) > self.batch_size,
                          generator=torch.Generator().manual_seed(self.seed))


def linear_probe(train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor], *,
                 epochs: int = PROBE_EPOCHS, base_lr: float = PROBE_BASE_LR, batch_size: int = 256,
                 num_classes: int | None = None, seed: int = 0, return_head: bool = False):
    """Test accuracy (0-1) of the linear probe trained on `train` = (features (N, D), labels (N,)) and scored on
    `test`, both cached features (maelib.evaluation.extract_features). Seeded: the same call gives the same
    number. A few seconds on a CPU for 10k features of width 128. return_head=True: (accuracy, the trained head
    (BatchNorm, Linear) in eval mode), e.g. to start fine-tuning from it (`finetune_accuracy(head=...)`)."""
    (train_x, train_y), (test_x, test_y) = train, test
    if len(train_x) < 2:
        raise ValueError(f"{len(train_x)} training feature: the probe's BatchNorm needs at least 2 to train")
    num_classes = num_classes or int(max(train_y.max(), test_y.max())) + 1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the head's initialisation
        module = LinearProbeModule(feature_dim=train_x.shape[1], num_classes=num_classes, optimizer="sgd",
                                   base_lr=base_lr, warmup_epochs=epochs / 10)
        quiet_trainer(max_epochs=epochs, accelerator="cpu").fit(
            module, datamodule=CachedFeatures(train_x.float(), train_y, min(batch_size, len(train_x)), seed))
    with torch.no_grad():
        acc = (module.eval()(test_x.float()).argmax(dim=1) == test_y).float().mean().item()
    return (acc, module.net) if return_head else acc
