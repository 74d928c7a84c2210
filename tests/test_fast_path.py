"""The GPU fast path computes the same model: torch.compile'd against eager, and the pretraining module's
compile switch (on by default on CUDA only) keeps parameter names, checkpoints and exports as they are.

The CUDA cases run where a GPU is present (marked `gpu`); the CPU cases run everywhere and check the same thing.
"""

import lightning as L
import pytest
import torch

import maelib
from maelib.train.modules import MAEPretrainModule

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
TINY = dict(depth=2, decoder_depth=1)


@pytest.mark.parametrize("device", DEVICES)
def test_compiled_model_gives_the_same_loss_and_gradients(device):
    torch.manual_seed(0)
    eager = maelib.create_model("mae_vit_mini_patch4_28", norm_pix_loss=True, **TINY).to(device)
    compiled = maelib.create_model("mae_vit_mini_patch4_28", norm_pix_loss=True, **TINY).to(device)
    compiled.load_state_dict(eager.state_dict())
    compiled.compile()
    imgs = torch.randn(6, 1, 28, 28, device=device)
    noise = torch.rand(6, 49, device=device)
    results = []
    for model in (eager, compiled):
        loss, pred, mask = model(imgs, noise=noise)
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters()])
        results.append((loss.detach(), pred.detach(), mask, grads))
    (l0, p0, m0, g0), (l1, p1, m1, g1) = results
    assert torch.equal(m0, m1)
    assert torch.allclose(l0, l1, rtol=1e-4, atol=1e-6)
    assert (p0 - p1).norm() / p0.norm() < 1e-4
    assert (g0 - g1).norm() / g0.norm() < 1e-3
    assert compiled._compiled_call_impl is not None and eager._compiled_call_impl is None


def tiny_fit(compile_flag) -> MAEPretrainModule:
    imgs = torch.randn(16, 1, 28, 28)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(imgs), batch_size=8)
    module = MAEPretrainModule(arch="mae_vit_mini_patch4_28", arch_overrides=TINY, compile=compile_flag)
    trainer = L.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    module.effective_batch = lambda: 8  # no datamodule here: the lr scale's batch
    trainer.fit(module, train_dataloaders=loader)
    return module


def test_pretrain_module_compiles_on_request_and_keeps_names():
    module = tiny_fit(True)
    # torch keeps no public flag for an in-place nn.Module.compile(): its private attribute is the ground truth
    assert module.compiled and module.model._compiled_call_impl is not None
    names = set(module.state_dict())
    assert "model.blocks.0.attn.qkv.weight" in names and not any("_orig_mod" in n for n in names)
    # the exported model loads into a plain (eager) model as it is
    fresh = maelib.create_model("mae_vit_mini_patch4_28", **TINY)
    fresh.load_state_dict(module.model.state_dict())


def test_pretrain_module_does_not_compile_on_cpu_by_default():
    module = tiny_fit(None)
    assert not module.compiled and module.model._compiled_call_impl is None
