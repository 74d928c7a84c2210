"""MoCo v3 on maelib's ViT (maelib.train.contrastive): the loss by hand, the views, and a tiny run that trains the
encoder only and saves it as an MAE checkpoint that loads and evaluates like one."""

import math

import lightning as L
import pytest
import torch

from maelib.data import MAEDataModule
from maelib.train.contrastive import MoCoV3Module, moco_v3_loss, two_views
from maelib.train.trainer import quiet_trainer
from maelib.weights.checkpoint import load_model_file, save_model

HALF = {"embed_dim": 64, "num_heads": 2, "depth": 2, "decoder_embed_dim": 48, "decoder_num_heads": 2}


def test_moco_v3_loss_by_hand():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    qn, kn = q / q.norm(dim=1, keepdim=True), k / k.norm(dim=1, keepdim=True)
    logits = qn @ kn.T / 0.2
    by_hand = sum(-logits[i, i] + torch.logsumexp(logits[i], 0) for i in range(5)) / 5 * 2 * 0.2
    assert moco_v3_loss(q, k, 0.2) == pytest.approx(by_hand.item(), rel=1e-5)
    # each query finding its own key far above the others: a loss near zero; no information: log N (times 2T)
    assert moco_v3_loss(10 * torch.eye(4), 10 * torch.eye(4), 0.05) < 1e-3
    same = torch.ones(4, 3)
    assert moco_v3_loss(same, same, 0.2) == pytest.approx(math.log(4) * 2 * 0.2, rel=1e-5)


def test_two_views_differ_repeat_with_their_generators_and_shard_like_one_batch():
    imgs = torch.randn(6, 1, 28, 28)
    mean, std = torch.tensor(0.3).view(1, 1, 1, 1), torch.tensor(0.35).view(1, 1, 1, 1)
    kw = dict(mean=mean, std=std, crop_scale=(0.2, 1.0), jitter=(0.4, 0.4, 0.0, 0.0))

    def gens():
        return torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)

    v1, v2 = two_views(imgs, generators=gens(), **kw)
    assert v1.shape == v2.shape == imgs.shape and not torch.allclose(v1, v2)
    again = two_views(imgs, generators=gens(), **kw)
    assert torch.equal(again[0], v1) and torch.equal(again[1], v2)
    # process 1 of 2 holds rows 3-5 of the global batch of 6: it draws the same views for them
    half = two_views(imgs[3:], generators=gens(), global_size=6, rows=slice(3, 6), **kw)
    assert torch.allclose(half[0], v1[3:], atol=1e-6) and torch.allclose(half[1], v2[3:], atol=1e-6)


def test_a_tiny_run_trains_the_encoder_only_and_saves_an_mae(tmp_path):
    L.seed_everything(0, verbose=False)
    module = MoCoV3Module(arch_overrides=HALF, hidden_dim=128, out_dim=32, base_lr=1e-3, warmup_epochs=0.1)
    decoder_before = module.model.decoder_pred.weight.clone()
    encoder_before = module.model.blocks[0].attn.qkv.weight.clone()
    losses = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(outputs["loss"].item())

    data = MAEDataModule(train_subset=512, test_subset=64, augment="none", batch_size=64)
    quiet_trainer(max_steps=40, callbacks=[Record()]).fit(module, datamodule=data)
    assert torch.equal(module.model.decoder_pred.weight, decoder_before)  # the decoder is not trained
    assert not torch.equal(module.model.blocks[0].attn.qkv.weight, encoder_before)
    assert not torch.equal(module.momentum_model.blocks[0].attn.qkv.weight, module.model.blocks[0].attn.qkv.weight)
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10  # it learns to pick its own image out of the batch
    path = save_model(module.model, tmp_path / "moco.safetensors")
    again = load_model_file(path).eval()
    x = torch.randn(3, 1, 28, 28)
    assert torch.allclose(again.features(x), module.model.eval().features(x), atol=1e-6)


def test_the_momentum_branch_moves_towards_the_query_branch_by_one_minus_m():
    L.seed_everything(0, verbose=False)
    module = MoCoV3Module(arch_overrides=HALF, hidden_dim=64, out_dim=16, momentum=0.9, warmup_epochs=0.1)
    with torch.no_grad():  # pull the momentum branch away from the query branch
        for p in module.momentum_model.parameters():
            p.add_(torch.randn_like(p))
    query = {k: v.clone() for k, v in module.model.named_parameters()}
    momentum = {k: v.clone() for k, v in module.momentum_model.named_parameters()}
    class StopAfterOneStep(L.Callback):
        def on_train_batch_end(self, trainer, *args):
            trainer.should_stop = True

    data = MAEDataModule(train_subset=640, test_subset=64, augment="none", batch_size=64)
    quiet_trainer(max_steps=10, limit_val_batches=0, callbacks=[StopAfterOneStep()]).fit(module, datamodule=data)
    # step 0 of the cosine schedule (over 10 steps): m = 0.9; the update comes before the query branch's own step
    for k, p in module.momentum_model.named_parameters():
        assert torch.allclose(p, 0.9 * momentum[k] + 0.1 * query[k], atol=1e-6), k


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="momentum must be in"):
        MoCoV3Module(arch_overrides=HALF, momentum=1.5)
    with pytest.raises(ValueError, match="give an `arch`"):
        MoCoV3Module(arch=None)
    with pytest.raises(ValueError, match="pool must be"):
        MoCoV3Module(arch_overrides=HALF, pool="max")
