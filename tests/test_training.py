"""Training: the optimiser recipe, k-NN, and every CLI sub-command end to end on tiny settings (CPU)."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch

import maelib
from maelib.evaluation import FeatureDataModule, knn_accuracy, knn_predict, linear_probe_head
from maelib.train.cli import main
from maelib.train.modules import MAEPretrainModule
from maelib.train.optim import LARS, layer_decay_groups, scaled_lr, warmup_cosine, weight_decay_groups

TINY = ["--model.arch_overrides", "{depth: 1, embed_dim: 64, num_heads: 2, decoder_embed_dim: 32, decoder_num_heads: 2}"]
DATA = ["--data.train_subset", "512", "--data.test_subset", "256", "--data.batch_size", "64"]
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


# ------------------------------------------------------------------------------------------ recipe pieces
def test_lr_scaling_and_schedule():
    assert scaled_lr(1.5e-4, 4096) == pytest.approx(2.4e-3)
    lrs = [warmup_cosine(s, warmup_steps=10, total_steps=110) for s in range(110)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)  # linear warm-up, per step
    assert all(a < b for a, b in zip(lrs[:9], lrs[1:10]))
    assert lrs[60] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))  # half-way down the cosine
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] < 1e-3


def test_weight_decay_skips_norms_biases_and_tokens():
    model = maelib.create_model("mae_vit_mini_patch4_28", depth=1)
    decay, no_decay = sorted(weight_decay_groups(model, 0.05), key=lambda g: -g["weight_decay"])
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    skipped = {names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert {"cls_token", "mask_token", "norm.weight", "blocks.0.attn.qkv.bias"} <= skipped
    assert {"blocks.0.attn.qkv.weight", "decoder_pred.weight", "patch_embed.proj.weight"} <= decayed
    assert not any(n.endswith(".bias") or "norm" in n for n in decayed)


def test_layer_decay_lowers_the_lr_of_early_blocks():
    vit = maelib.to_timm_vit(maelib.create_model("mae_vit_mini_patch4_28"), num_classes=10)
    groups = layer_decay_groups(vit, lr=1.0, weight_decay=0.05, layer_decay=0.5)
    lr_of = {}
    for g in groups:
        for p in g["params"]:
            lr_of[p] = g["lr"]
    named = dict(vit.named_parameters())
    depth = len(vit.blocks)  # 4: patch embed is layer 0, block i is layer i + 1, head is layer depth + 1
    assert lr_of[named["head.weight"]] == 1.0
    assert lr_of[named["blocks.3.mlp.fc1.weight"]] == 0.5
    assert lr_of[named["blocks.0.mlp.fc1.weight"]] == 0.5**depth
    assert lr_of[named["patch_embed.proj.weight"]] == 0.5 ** (depth + 1)


def test_lars_scales_steps_by_the_weight_norm():
    w = torch.nn.Parameter(torch.full((4, 4), 2.0))
    b = torch.nn.Parameter(torch.zeros(4))
    opt = LARS([w, b], lr=1.0, momentum=0.0, trust=0.01)
    w.grad, b.grad = torch.full((4, 4), 100.0), torch.ones(4)
    opt.step()
    # the matrix moves by trust * ||w|| (in norm), whatever the gradient's size; the vector by plain SGD
    assert torch.allclose(torch.norm(w.detach() - 2.0), torch.tensor(0.01 * 8.0))
    assert torch.allclose(b.detach(), -torch.ones(4))


def test_knn_on_separable_clusters():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 8, generator=g) * 5
    train_y = torch.arange(3).repeat_interleave(30)
    train = centres[train_y] + torch.randn(90, 8, generator=g)
    test_y = torch.tensor([0, 1, 2, 2, 1, 0])
    test = centres[test_y] + torch.randn(6, 8, generator=g)
    assert torch.equal(knn_predict(train, train_y, test, k=5), test_y)
    assert knn_accuracy(train, train_y, test, test_y) == 1.0


def test_knn_weights_votes_by_similarity():
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.1, 1.0]])
    labels = torch.tensor([0, 1, 1])
    # two weak votes for class 1 lose to one very close vote for class 0 at a low temperature
    assert knn_predict(train, labels, torch.tensor([[1.0, 0.3]]), k=3, temperature=0.01).item() == 0
    assert knn_predict(train, labels, torch.tensor([[1.0, 0.3]]), k=3, temperature=10.0).item() == 1


def test_linear_probe_head_is_batchnorm_without_affine():
    head = linear_probe_head(16, 10)
    assert not head[0].affine and head[0].eps == 1e-6 and head[1].out_features == 10


# ------------------------------------------------------------------------------------------ the CLI, end to end
def read_metrics(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """One tiny pretraining run shared by the evaluation tests."""
    run = tmp_path_factory.mktemp("pretrain")
    main(["pretrain", "--trainer.default_root_dir", str(run), "--trainer.max_epochs", "1", *TINY, *DATA, *QUIET])
    return run


def test_pretrain_writes_model_checkpoint_metrics_and_figures(pretrained):
    metrics = read_metrics(pretrained)
    assert metrics["epochs"] == 1 and metrics["steps"] == 8  # 512 images / batch 64
    assert 0.0 <= metrics["knn/acc"] <= 1.0 and math.isfinite(metrics["val/loss"])
    model = maelib.load_model(pretrained / "model.safetensors")
    assert model.config.embed_dim == 64 and model.config.depth == 1
    assert (pretrained / "checkpoints" / "last.ckpt").exists()
    assert (pretrained / "reconstructions" / "epoch_001.png").stat().st_size > 1000
    assert "val/loss" in (pretrained / "logs" / "version_0" / "metrics.csv").read_text()
    # the Lightning checkpoint rebuilds the same model on its own (weights only, config inside)
    from_ckpt = maelib.load_model(pretrained / "checkpoints" / "last.ckpt")
    assert torch.equal(from_ckpt.blocks[0].attn.qkv.weight, model.blocks[0].attn.qkv.weight)


def test_pretrain_resumes_from_last_checkpoint(pretrained, tmp_path):
    import shutil

    run = tmp_path / "resumed"
    shutil.copytree(pretrained, run)
    main(["pretrain", "--trainer.default_root_dir", str(run), "--trainer.max_epochs", "2", "--resume", "last",
          *TINY, *DATA, *QUIET])
    assert read_metrics(run)["steps"] == 16  # continued from step 8, not restarted
    assert (run / "logs" / "version_0" / "metrics.csv").exists()  # the first run's log is kept
    assert (run / "logs" / "version_1" / "metrics.csv").exists()


def test_linprobe_and_knn_tell_a_trained_encoder_from_random_initialisation(tmp_path):
    """The evaluation commands must separate what an encoder learned from what its architecture gives for free:
    the zoo's trained MAE against the same architecture at random initialisation, on the same images (a random
    encoder scores far above chance, so "above chance" would pass a broken pipeline)."""
    scores = {}
    for name, source in (("trained", ["--data.checkpoint", "mae_vit_mini_patch4_28.fmnist_normpix"]),
                         ("random", ["--data.arch", "mae_vit_mini_patch4_28"])):
        main(["knn", *source, "--run_dir", str(tmp_path / f"knn_{name}"), "--data.pool", "mean", *DATA])
        main(["linprobe", *source, "--data.pool", "mean", "--trainer.default_root_dir", str(tmp_path / f"probe_{name}"),
              "--trainer.max_epochs", "5", *DATA, *QUIET])
        scores[name] = (read_metrics(tmp_path / f"knn_{name}")["knn/acc"], read_metrics(tmp_path / f"probe_{name}")["test/acc"])
    (knn_trained, probe_trained), (knn_random, probe_random) = scores["trained"], scores["random"]
    assert knn_trained > knn_random + 0.05, scores
    assert probe_trained > probe_random + 0.03, scores
    # --references: the same two references in one command, on the same images and split
    main(["knn", "--data.checkpoint", "mae_vit_mini_patch4_28.fmnist_normpix", "--run_dir", str(tmp_path / "refs"),
          "--data.pool", "mean", "--references", "true", *DATA])
    refs = read_metrics(tmp_path / "refs")
    assert refs["knn/acc"] == pytest.approx(knn_trained) and refs["knn/random_init_acc"] < knn_trained - 0.05
    assert refs["knn/pixels_acc"] > refs["knn/random_init_acc"]
    main(["linprobe", "--data.checkpoint", "mae_vit_mini_patch4_28.fmnist_normpix", "--data.pool", "mean",
          "--trainer.default_root_dir", str(tmp_path / "probe_refs"), "--trainer.max_epochs", "1", "--references",
          "true", *DATA, *QUIET])
    probes = read_metrics(tmp_path / "probe_refs")  # the quick probe, one recipe for the encoder and both references
    assert probes["probe/quick_acc"] > probes["probe/random_init_acc"] + 0.03, probes
    assert 0.3 < probes["probe/pixels_acc"] <= 1.0


def test_linprobe_runs_on_a_checkpoint_of_maelib_pretrain(pretrained, tmp_path):
    main(["linprobe", "--data.checkpoint", str(pretrained / "model.safetensors"), "--trainer.default_root_dir",
          str(tmp_path / "probe"), "--trainer.max_epochs", "1", *DATA, *QUIET])
    assert 0.0 <= read_metrics(tmp_path / "probe")["test/acc"] <= 1.0


def test_holdout_validates_on_held_out_training_images(pretrained, tmp_path):
    ckpt = str(pretrained / "model.safetensors")
    data = FeatureDataModule(checkpoint=ckpt, train_subset=300, test_subset=100, holdout=60)
    data.setup("fit")
    train, val = data.features["train"][0], data.features["val"][0]
    assert len(train) == 240 and len(val) == 60 and len(data.features["test"][0]) == 100
    every = FeatureDataModule(checkpoint=ckpt, train_subset=300, test_subset=100)
    every.setup("fit")
    rows = {tuple(r.tolist()) for r in every.features["train"][0]}
    assert all(tuple(r.tolist()) in rows for r in val)  # held out of the training images, not the test set
    assert not {tuple(r.tolist()) for r in val} & {tuple(r.tolist()) for r in train}
    assert len(next(iter(data.val_dataloader()))[0]) == 60
    with pytest.raises(ValueError, match="holdout=300 must be between 1"):
        FeatureDataModule(checkpoint=ckpt, train_subset=300, test_subset=100, holdout=300).setup()
    main(["linprobe", "--data.checkpoint", ckpt, "--trainer.default_root_dir", str(tmp_path / "probe"),
          "--trainer.max_epochs", "2", "--data.holdout", "100", *DATA, *QUIET])
    assert {"val/acc", "test/acc"} <= set(read_metrics(tmp_path / "probe"))
    main(["knn", "--data.checkpoint", ckpt, "--run_dir", str(tmp_path / "knn"), "--data.holdout", "100", *DATA])
    assert 0.0 <= read_metrics(tmp_path / "knn")["knn/val_acc"] <= 1.0


def test_finetune_from_mae_and_from_scratch(pretrained, tmp_path):
    ckpt = str(pretrained / "model.safetensors")
    main(["finetune", "--model.checkpoint", ckpt, "--trainer.default_root_dir", str(tmp_path / "ft"),
          "--trainer.max_epochs", "1", "--model.mixup", "0.8", "--model.cutmix", "1.0", *DATA, *QUIET])
    acc = read_metrics(tmp_path / "ft")["test/acc"]
    assert 0.0 <= acc <= 1.0
    # the saved classifier is the fine-tuned network: it scores the same test images the same
    net = maelib.load_classifier(tmp_path / "ft" / "classifier.safetensors")
    from maelib.data import MAEDataModule

    dm = MAEDataModule(test_subset=256, batch_size=64)
    with torch.no_grad():
        hits = sum((net(x).argmax(1) == y).sum().item() for x, y in dm.test_dataloader())
    assert hits / 256 == pytest.approx(acc, abs=1e-6)
    with pytest.raises(ValueError, match="not a classifier saved by maelib finetune"):
        maelib.load_classifier(pretrained / "model.safetensors")
    main(["finetune", "--model.arch", "mae_vit_mini_patch4_28", *TINY, "--trainer.default_root_dir",
          str(tmp_path / "scratch"), "--trainer.max_epochs", "1", "--model.train_last_blocks", "1", *DATA, *QUIET])
    assert "test/acc" in read_metrics(tmp_path / "scratch")
    # its encoder, saved beside it (supervised pretraining's product), gives the classifier's pooled features
    encoder = maelib.load_model(tmp_path / "scratch" / "encoder.safetensors")
    scratch = maelib.load_classifier(tmp_path / "scratch" / "classifier.safetensors")
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        pooled = scratch.forward_head(scratch.forward_features(x), pre_logits=True)
    assert torch.allclose(encoder.features(x, "mean"), pooled, atol=1e-5)


def test_contrastive_trains_and_saves_an_encoder_that_the_evaluations_take(tmp_path):
    run = tmp_path / "moco"
    main(["contrastive", "--config", "contrastive_fmnist", "--trainer.default_root_dir", str(run),
          "--trainer.max_epochs", "1", "--model.hidden_dim", "64", "--model.out_dim", "16", *TINY, *DATA, *QUIET])
    metrics = read_metrics(run)
    assert metrics["steps"] == 512 // 64 and math.isfinite(metrics["val/loss"])
    assert {"summary/knn", "summary/knn_random_init", "summary/knn_pixels"} <= set(metrics)
    assert "summary/val_masked_loss" not in metrics  # its decoder never trained: no reconstruction claim
    stored, meta = maelib.read_state_dict(run / "model.safetensors")
    assert meta["contents"] == "encoder" and not any(k.startswith("decoder") for k in stored)
    main(["knn", "--data.checkpoint", str(run / "model.safetensors"), "--run_dir", str(tmp_path / "knn"), *DATA])
    assert 0.0 <= read_metrics(tmp_path / "knn")["knn/acc"] <= 1.0
    with pytest.raises(ValueError, match="--data.augment none"):
        main(["contrastive", "--config", "contrastive_fmnist", "--data.augment", "mae", "--trainer.default_root_dir",
              str(tmp_path / "bad"), *TINY, *DATA, *QUIET])


def test_partial_finetuning_freezes_early_blocks(pretrained):
    from maelib.train.modules import FineTuneModule

    module = FineTuneModule(checkpoint=str(pretrained / "model.safetensors"), train_last_blocks=0)
    trainable = {n for n, p in module.net.named_parameters() if p.requires_grad}
    assert trainable == {"fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias"}
    with pytest.raises(ValueError, match="train_last_blocks must be between 0 and 1"):
        FineTuneModule(checkpoint=str(pretrained / "model.safetensors"), train_last_blocks=3)


def test_cli_usage_and_bad_flags(capsys):
    assert main([]) == 2
    assert "pretrain" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["pretrain", "--model.mask_ratoi", "0.5"])


def test_ddp_with_two_cpu_processes(tmp_path):
    """Lightning's DDP strategy (gloo) on two CPU processes, launched as a user would."""
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "maelib.train.cli", "pretrain", "--trainer.accelerator", "cpu", "--trainer.devices", "2",
           "--trainer.strategy", "ddp", "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(run),
           *TINY, *DATA, *QUIET]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = read_metrics(run)
    assert metrics["steps"] == 4  # 512 images split over 2 processes, batch 64 each
    assert math.isfinite(metrics["train/loss"])


def test_demo_trains_and_saves_figures(tmp_path):
    from maelib.course.demo import main as demo

    summary = demo(["--steps", "3", "--out", str(tmp_path)])
    assert summary["steps"] == 3 and math.isfinite(summary["val_loss"])
    for name in ("reconstruction_before.png", "reconstruction_after.png", "model.safetensors", "summary.json"):
        assert (tmp_path / name).stat().st_size > 0


@pytest.mark.parametrize("masking", ["grid", "block"])
def test_validation_masks_follow_the_models_masking_strategy(masking):
    """The training module validates with seeded masks of the model's own strategy (not uniform noise), the
    same for image i whatever the batch size."""
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    from maelib.rng import fixed_noise
    from maelib.train.modules import MAEPretrainModule

    torch.manual_seed(0)
    module = MAEPretrainModule("mae_vit_mini_patch4_28", arch_overrides=dict(depth=1, masking=masking)).eval()
    imgs = torch.randn(12, 1, 28, 28)
    losses = {}
    for batch in (12, 5):
        trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
        trainer.validate(module, DataLoader(TensorDataset(imgs), batch_size=batch), verbose=False)
        losses[batch] = trainer.callback_metrics["val/loss"].item()
    model = module.model
    noise = fixed_noise(0, 12, 49, draw=model.noise_draw(0.75))
    with torch.no_grad():
        expected, _, mask = model(imgs, mask_ratio=0.75, noise=noise)
        uniform, _, _ = model(imgs, mask_ratio=0.75, noise=fixed_noise(0, 12, 49))
    assert losses[12] == pytest.approx(expected.item(), rel=1e-5)
    assert losses[5] == pytest.approx(expected.item(), rel=1e-3)  # batch-size weighted mean of the same masks
    assert abs(expected.item() - uniform.item()) > 1e-4
    if masking == "grid":  # the strategy really was used: every kept patch lies on the stride-2 grid
        kept = (mask == 0).reshape(12, 7, 7)
        assert kept.sum() == 12 * 12 and kept[:, ::2, ::2].sum() == 12 * 12


def test_the_cli_prints_no_lightning_tips(tmp_path):
    """Lightning advertises litlogger / litmodels in "💡 Tip" lines at every run; maelib's output has none."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "maelib", "pretrain", "--trainer.max_steps", "2", *TINY, *DATA,
                             "--trainer.default_root_dir", str(tmp_path / "run"), *QUIET],
                            capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "GPU available" in output  # Lightning's own information still shows
    assert "Tip" not in output, output


def test_pretrain_on_an_unlabelled_folder_and_evaluation_asks_for_classes(tmp_path, caplog):
    """A flat folder of images (no class sub-folders) pretrains; the k-NN monitor says once that it is off; k-NN
    and the probe refuse it, naming the layout they need."""
    import logging

    from PIL import Image

    flat = tmp_path / "flat"
    flat.mkdir()
    generator = torch.Generator().manual_seed(0)
    for i in range(96):
        pixels = (torch.rand(16, 16, 3, generator=generator) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(flat / f"{i:03d}.png")
    data = ["--data.dataset", "imagefolder", "--data.root", str(flat), "--data.batch_size", "16"]
    run = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="lightning.pytorch"):  # other tests may have quieted Lightning
        main(["pretrain", *data, "--model.arch", "mae_vit_tiny_patch8_64", "--model.arch_overrides",
              "{img_size: 16, depth: 1, embed_dim: 32, num_heads: 2, decoder_embed_dim: 16, decoder_num_heads: 2}",
              "--trainer.max_epochs", "2", "--trainer.default_root_dir", str(run), *QUIET])
    metrics = read_metrics(run)
    assert metrics["steps"] == 2 * (86 // 16) and math.isfinite(metrics["val/loss"])  # 10% of 96 held out
    assert "knn/acc" not in metrics
    assert sum("the k-NN monitor is off" in r.getMessage() for r in caplog.records) == 1
    model = str(run / "model.safetensors")
    with pytest.raises(ValueError, match=f"maelib knn needs labelled images, and {flat} is an unlabelled folder"):
        main(["knn", "--data.checkpoint", model, *data, "--run_dir", str(tmp_path / "knn")])
    with pytest.raises(ValueError, match="needs labelled images.*root/<class>/<image>"):
        main(["linprobe", "--data.checkpoint", model, *data, "--trainer.default_root_dir", str(tmp_path / "probe"), *QUIET])


def test_the_folder_presets_pretrain_and_fine_tune_on_the_example_folder_with_a_budget_in_steps(tmp_path, capsys):
    """The README's own-images path at a few steps: `--config folder` for pretrain and finetune on the stand-in
    folder (train/ and val/), the end-of-run summary with its references, fine-tuning from the MAE and from
    scratch. The budget is the steps the preset sets (here overridden smaller), whatever the number of epochs."""
    from maelib.data.example_folder import write_example_folder

    root = write_example_folder(tmp_path / "my_images", 8, val_per_class=2)
    folder = ["--data.root", str(root / "train"), "--data.val_root", str(root / "val")]
    small = ["--model.arch_overrides", "{norm_pix_loss: false, depth: 1, decoder_depth: 1}", *QUIET]
    main(["pretrain", "--config", "folder", *folder, "--trainer.max_steps", "5", "--trainer.val_check_interval", "3",
          "--trainer.default_root_dir", str(tmp_path / "pre"), *small])
    pretrained = read_metrics(tmp_path / "pre")
    assert pretrained["steps"] == 5 and pretrained["epochs"] >= 3  # 72 images at batch 64: the steps decide
    assert {"summary/knn", "summary/knn_random_init", "summary/knn_pixels"} <= set(pretrained)
    assert "what this run learned" in capsys.readouterr().out
    mae = str(tmp_path / "pre" / "model.safetensors")
    for start, how in (("mae", ["--model.checkpoint", mae]),
                       ("scratch", ["--model.arch", "mae_vit_tiny_patch8_64", "--model.arch_overrides", "{depth: 1}",
                                    "--model.layer_decay", "1.0"])):
        main(["finetune", "--config", "folder", *folder, *how, "--trainer.max_steps", "3", "--trainer.val_check_interval",
              "3", "--trainer.default_root_dir", str(tmp_path / start), *QUIET])
        tuned = read_metrics(tmp_path / start)
        assert tuned["steps"] == 3 and 0 <= tuned["test/acc"] <= 1


def test_pretraining_continues_from_a_zoo_model_at_another_image_size(tmp_path):
    """`--model.checkpoint NAME` starts from the trained weights (the blocks equal the zoo model's) at the size the
    run asks for, with the position embeddings on the new grid; the run trains and saves that size."""
    zoo = maelib.load_pretrained("mae_vit_tiny_patch8_64.photos_pixel")
    module = MAEPretrainModule(checkpoint="mae_vit_tiny_patch8_64.photos_pixel", arch_overrides={"img_size": 32})
    c = module.model.config
    assert (c.img_size, c.patch_size, c.num_patches) == (32, 8, 16) and module.model.pos_embed.shape[1] == 1 + 16
    for name, tensor in zoo.state_dict().items():
        if "pos_embed" not in name:
            assert torch.equal(module.model.state_dict()[name], tensor), name
    from maelib.evaluation.cards import photo_test_crops

    imgs = photo_test_crops(4, img_size=32, seed=0)  # crops of photos held out of the zoo model's training
    fresh = maelib.create_model("mae_vit_tiny_patch8_64", img_size=32, norm_pix_loss=False)
    noise = torch.rand(4, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # the trained decoder already predicts far better than a random one
        assert module.model(imgs, 0.75, noise)[0] < fresh(imgs, 0.75, noise)[0]
    run = tmp_path / "continued"
    main(["pretrain", "--model.checkpoint", "mae_vit_tiny_patch8_64.photos_pixel", "--model.arch_overrides",
          "{img_size: 32}", "--data.dataset", "photos", "--trainer.max_steps", "2",
          "--trainer.default_root_dir", str(run), *QUIET])
    assert maelib.load_model(run / "model.safetensors").config.img_size == 32


def test_pretrain_ends_with_what_it_learned_beside_the_references(pretrained):
    """The end-of-run summary's numbers are in metrics.json: held-out masked loss and predict-zero on the same
    masks, k-NN of the encoder, of its random twin and of raw pixels on the same images."""
    from maelib.evaluation.summary import summary_text

    metrics = read_metrics(pretrained)
    for key in ("val_masked_loss", "predict_zero", "knn", "knn_random_init", "knn_pixels"):
        assert 0 < metrics[f"summary/{key}"] < 5, key
    assert metrics["summary/knn_pixels"] > 0.5  # Fashion-MNIST's pixels: far above chance
    quiet = summary_text({"val_masked_loss": 0.5, "predict_zero": 1.0, "knn": 0.8, "knn_random_init": 0.6,
                          "knn_pixels": 0.8})
    assert "50% of it" in quiet and "WARNING" not in quiet
    stuck = summary_text({"val_masked_loss": 0.99, "predict_zero": 1.0, "knn": 0.5, "knn_random_init": 0.6,
                          "knn_pixels": 0.8})
    assert stuck.count("WARNING") == 2 and "no better than predicting zero" in stuck and "random encoder" in stuck
    assert "--trainer.max_steps" in stuck and "--model.base_lr" in stuck
    unlabelled = summary_text({"val_masked_loss": 0.5, "predict_zero": 1.0})
    assert "k-NN" not in unlabelled
