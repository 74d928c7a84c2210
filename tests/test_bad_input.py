"""Bad input (issue 18): every mistake a careless user makes gets an error raised by maelib that names the problem
and the fix, or is converted correctly (then the converted values are checked); no run ends or lies because of
one file."""

from __future__ import annotations

import json
import os
import stat
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import maelib
from maelib.data import MAEDataModule
from maelib.data.datasets import to_8bit
from maelib.files import run_dir_lock
from maelib.train.cli import main
from maelib.train.modules import FineTuneModule, MAEPretrainModule
from maelib.validate import check_loss
from maelib.weights.checkpoint import file_format

TINY = "{depth: 1, embed_dim: 64, num_heads: 2, decoder_embed_dim: 32, decoder_num_heads: 2}"
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false", "--trainer.logger", "false"]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return maelib.create_model("mae_vit_mini_patch4_28", depth=1).eval()


def grey_folder(root: Path, classes: int, per_class: int = 4, dtype=np.uint8, size: int = 28) -> Path:
    """root/class<c>/<i>.png: random grey 8- or 16-bit PNGs."""
    rng = np.random.default_rng(0)
    top = np.iinfo(dtype).max
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = (rng.random((size, size)) * top).astype(dtype)
            Image.fromarray(img).save(root / f"class{c}" / f"{i}.png")
    return root


# ------------------------------------------------------------------------------------------ wrong results
@pytest.mark.parametrize("dtype, suffix", [(np.uint16, "png"), (np.int32, "tif"), (np.float32, "tif")])
def test_high_bit_depth_images_are_scaled_not_clipped(tmp_path, dtype, suffix):
    ramp = np.linspace(0, 1, 64 * 64).reshape(64, 64)  # 0 .. 1 of the type's range
    top = 65535 if dtype != np.float32 else 1.0  # a 16-bit PNG opens as "I;16", an int32 TIFF of 16-bit data as "I"
    path = tmp_path / f"ramp.{suffix}"
    Image.fromarray((ramp * top).astype(dtype)).save(path)
    with Image.open(path) as im:
        grey = np.asarray(to_8bit(im, "L"), dtype=np.float64)
        rgb = np.asarray(to_8bit(im, "RGB"))
    assert np.abs(grey - ramp * 255).max() <= 1.0  # PIL's convert("L") made 99.6% of a 16-bit ramp 255
    assert (grey == 255).mean() < 0.01 and rgb.shape == (64, 64, 3) and (rgb[..., 0] == grey).all()


@pytest.mark.parametrize("in_memory", [True, False])
def test_a_folder_of_16_bit_pngs_trains_on_the_right_pixels(tmp_path, in_memory):
    root = grey_folder(tmp_path / "f", classes=2, dtype=np.uint16)
    dm = MAEDataModule(dataset="imagefolder", root=str(root), img_size=28, in_chans=1, augment="none",
                       in_memory=in_memory, batch_size=2)
    dm.setup()
    imgs, _ = next(iter(dm.labelled_train_dataloader()))
    pixels = imgs * torch.tensor(dm.std).view(1, -1, 1, 1) + torch.tensor(dm.mean).view(1, -1, 1, 1)
    path = dm.labelled_train_set.samples[0][0] if not in_memory else sorted(root.glob("class0/*.png"))[0]
    want = np.asarray(Image.open(path), dtype=np.float64) / 65535
    assert np.abs(pixels[0, 0].numpy() - want).max() < 1 / 255 + 1e-3


@pytest.mark.parametrize("command", ["linprobe", "finetune"])
def test_one_class_is_refused_before_training(tmp_path, command):
    root = grey_folder(tmp_path / "one", classes=1)
    data = (["--data.dataset", "imagefolder", "--data.root", str(root), "--data.batch_size", "2"])
    source = (["--data.arch", "mae_vit_mini_patch4_28"] if command == "linprobe" else
              ["--model.arch", "mae_vit_mini_patch4_28", "--model.arch_overrides", TINY])
    run = tmp_path / "run"
    with pytest.raises(ValueError, match="1 class: classification needs 2 or more.*one sub-folder per class"):
        main([command, *source, *data, "--trainer.default_root_dir", str(run), "--trainer.max_epochs", "1", *QUIET])
    assert not (run / "classifier.safetensors").exists() and not (run / "metrics.json").exists()


def test_the_knn_monitor_is_off_for_one_class(tmp_path):
    dm = MAEDataModule(dataset="imagefolder", root=str(grey_folder(tmp_path / "one", classes=1)), img_size=28,
                       in_chans=1, batch_size=2)
    dm.setup()
    two = MAEDataModule(dataset="imagefolder", root=str(grey_folder(tmp_path / "two", classes=2)), img_size=28,
                        in_chans=1, batch_size=2)
    assert not dm.has_class_labels and two.has_class_labels


def test_a_model_without_patches_is_refused():
    with pytest.raises(ValueError, match="img_size must be 1 or more in the MAE config, got 0: set img_size"):
        maelib.create_model("mae_vit_mini_patch4_28", img_size=0)


# ------------------------------------------------------------------------------------------ config values
@pytest.mark.parametrize("overrides, error, message", [
    ({"patch_size": 0}, ValueError, "patch_size must be 1 or more"),
    ({"num_heads": 0}, ValueError, "num_heads must be 1 or more"),
    ({"embed_dim": -8}, ValueError, "embed_dim must be 1 or more"),
    ({"decoder_embed_dim": -4}, ValueError, "decoder_embed_dim must be 1 or more"),
    ({"mlp_ratio": -1.0}, ValueError, "mlp_ratio must be positive"),
    ({"patch_size": 2.5}, TypeError, "patch_size must be an integer.*got 2.5 \\(float\\).*whole numbers"),
    ({"img_size": "28"}, TypeError, "img_size must be an integer.*write img_size=28, a number, not the text '28'"),
    ({"mlp_ratio": "4"}, TypeError, "mlp_ratio must be a number.*write mlp_ratio=4.0"),
    ({"norm_pix_loss": "false"}, TypeError, "norm_pix_loss must be True or False"),
    ({"patch_size": 32}, ValueError, "patch size 32 is larger than the 28-pixel image.*divides 28 \\(e.g. 2, 4, 7, 14\\)"),
    ({"in_chans": 0}, ValueError, "in_chans must be 1 or more"),
])
def test_config_mistakes_are_named_with_their_fix(overrides, error, message):
    with pytest.raises(error, match=message):
        maelib.create_model("mae_vit_mini_patch4_28", **overrides)


def test_numpy_sizes_are_accepted_as_the_integers_they_are():
    model = maelib.create_model("mae_vit_mini_patch4_28", depth=np.int64(1), mlp_ratio=np.float32(2.0))
    assert type(model.config.depth) is int and model.config.to_dict()["mlp_ratio"] == 2.0
    json.dumps(model.config.to_dict())  # what checkpoints store stays plain JSON


def test_a_string_in_a_files_config_is_named_with_the_file(tmp_path, tiny):
    path = maelib.save_model(tiny, tmp_path / "m.safetensors")
    tensors, metadata = maelib.read_state_dict(path)
    config = json.loads(metadata["config"])
    save_file(tensors, str(path), metadata={**metadata, "config": json.dumps({**config, "img_size": "28"})})
    with pytest.raises(TypeError, match="config stored in .*m.safetensors is not valid: img_size must be an integer"):
        maelib.load_model(path)
    save_file(tensors, str(path), metadata={**metadata, "config": "{img_size: 28"})
    with pytest.raises(ValueError, match="config stored in .*m.safetensors is not valid JSON"):
        maelib.load_model(path)


# ------------------------------------------------------------------------------------------ images
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64, torch.bool])
def test_integer_images_are_refused_with_the_conversion(tiny, dtype):
    with pytest.raises(TypeError, match=f"images are {str(dtype)[6:]} tensors.*imgs.float\\(\\) / 255.*mean and std"):
        tiny(torch.zeros(2, 1, 28, 28, dtype=dtype))


def test_float64_and_numpy_images_are_converted(tiny):
    imgs = torch.randn(2, 1, 28, 28)
    noise = torch.rand(2, 49)
    want = tiny(imgs, noise=noise)[0]
    assert torch.allclose(tiny(imgs.double(), noise=noise)[0], want)
    assert torch.allclose(tiny(imgs.numpy(), noise=noise)[0], want)
    assert torch.allclose(tiny.features(imgs.double().numpy()), tiny.features(imgs))
    with pytest.raises(TypeError, match="images must be a torch tensor.*got list"):
        tiny([imgs[0]])


def test_an_empty_batch_is_refused(tiny):
    with pytest.raises(ValueError, match="an empty batch of images \\(0, 1, 28, 28\\)"):
        tiny(torch.zeros(0, 1, 28, 28))


@pytest.mark.parametrize("ratio", [np.float32(0.5), np.float64(0.5), torch.tensor(0.5), np.array(0.5), 0.5])
def test_mask_ratio_takes_any_real_number(tiny, ratio):
    imgs, noise = torch.randn(2, 1, 28, 28), torch.rand(2, 49)
    loss, _, mask = tiny(imgs, mask_ratio=ratio, noise=noise)
    assert mask.sum().item() == 2 * (49 - maelib.masking.num_kept(49, 0.5))
    assert torch.equal(loss, tiny(imgs, mask_ratio=0.5, noise=noise)[0])
    with pytest.raises(TypeError, match="mask_ratio must be a number, got '0.5' \\(str\\): write mask_ratio=0.5"):
        tiny(imgs, mask_ratio="0.5")


def test_non_finite_pixels_are_named_as_the_cause():
    module = MAEPretrainModule(arch_overrides={"depth": 1})
    imgs = torch.randn(4, 1, 28, 28)
    imgs[2, 0, 3, 3] = float("nan")
    with pytest.raises(FloatingPointError, match="batch 5 of epoch 0 holds NaN or inf values in 1 of its 4 samples"):
        module.training_step([imgs, torch.zeros(4)], 5)
    with pytest.raises(FloatingPointError, match="Lower the learning rate"):  # finite inputs: the training's fault
        check_loss(torch.tensor(float("inf")), 7, inputs=torch.ones(3, 2))


# ------------------------------------------------------------------------------------------ checkpoints
def test_a_text_file_named_pth_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "weights.pth"
    path.write_text("<html>404 Not Found</html>\n")
    assert file_format(path) is None
    with pytest.raises(ValueError, match="weights.pth is not a checkpoint: it is neither safetensors nor a PyTorch"):
        maelib.load_model(path, arch="mae_vit_mini_patch4_28")


def test_a_safetensors_file_named_pth_is_read_by_its_content(tmp_path, tiny):
    path = tmp_path / "renamed.pth"
    maelib.save_model(tiny, tmp_path / "m.safetensors").rename(path)
    assert file_format(path) == "safetensors"
    back = maelib.load_model(path)
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), tiny.state_dict().values()))


def test_a_truncated_torch_file_says_so(tmp_path, tiny):
    path = tmp_path / "cut.pth"
    torch.save({"model": tiny.state_dict()}, path)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ValueError, match="could not read .*cut.pth as a PyTorch checkpoint.*truncated or damaged"):
        maelib.load_model(path, arch="mae_vit_mini_patch4_28")


def test_finetune_from_a_text_file_says_it_is_not_a_checkpoint(tmp_path):
    bad = tmp_path / "mae.safetensors"
    bad.write_text("not weights")
    with pytest.raises(ValueError, match="mae.safetensors is not a checkpoint"):
        main(["finetune", "--model.checkpoint", str(bad), "--trainer.default_root_dir", str(tmp_path / "ft"), *QUIET])


PRETRAIN = ["--data.train_subset", "128", "--data.test_subset", "64", "--data.batch_size", "64", *QUIET,
            "--trainer.limit_val_batches", "0"]


def test_resume_from_a_truncated_or_foreign_checkpoint_is_refused_clearly(tmp_path):
    run = tmp_path / "run"
    args = ["pretrain", "--trainer.default_root_dir", str(run), "--model.arch_overrides", TINY, *PRETRAIN]
    main([*args, "--trainer.max_epochs", "1"])
    last = run / "checkpoints" / "last.ckpt"
    other = "{depth: 2, embed_dim: 64, num_heads: 2, decoder_embed_dim: 32, decoder_num_heads: 2}"
    with pytest.raises(ValueError, match="that checkpoint is of another model than this run builds.*--model settings"):
        main(["pretrain", "--trainer.default_root_dir", str(run), "--model.arch_overrides", other, *PRETRAIN,
              "--trainer.max_epochs", "2", "--resume", "last"])
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    with pytest.raises(ValueError, match="--resume .*cut.ckpt: it is not a whole checkpoint \\(truncated or damaged\\)"):
        main([*args, "--trainer.max_epochs", "2", "--resume", str(cut)])
    assert last.stat().st_size > cut.stat().st_size  # nothing already written is lost


def test_a_run_directory_takes_one_run_at_a_time(tmp_path):
    run = tmp_path / "run"
    with run_dir_lock(run):  # as another process would: flock conflicts between two opens of the lock file
        with pytest.raises(RuntimeError, match=f"{run} is in use by another maelib run \\(pid {os.getpid()}\\).*"
                                               "--trainer.default_root_dir"):
            main(["pretrain", "--trainer.default_root_dir", str(run), "--model.arch_overrides", TINY, *PRETRAIN,
                  "--trainer.max_epochs", "1"])
    assert not (run / "model.safetensors").exists()
    with run_dir_lock(run):  # released: the next run may take it
        pass


def test_the_lock_of_a_run_that_just_died_is_waited_for_not_refused(tmp_path):
    """A killed run's lock can outlive it for a moment while the system tears the process down: when the pid in
    the lock file is gone, the next run waits for the lock (a few seconds at most) instead of refusing."""
    import fcntl
    import threading

    run = tmp_path / "run"
    run.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that existed and is gone
    held = open(run / ".maelib.lock", "a+")
    fcntl.flock(held.fileno(), fcntl.LOCK_EX)
    held.write(f"pid {dead.pid}")
    held.flush()
    threading.Timer(0.5, held.close).start()  # the dead run's lock goes away half a second later
    with run_dir_lock(run) as lock:
        assert lock.read_text() == f"pid {os.getpid()}"


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_weights_keep_the_users_permissions(tmp_path, tiny, umask):
    old = os.umask(umask)
    try:
        path = maelib.save_model(tiny, tmp_path / "m.safetensors")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


# ------------------------------------------------------------------------------------------ other calls
def test_export_and_hub_mistakes(tiny, tmp_path):
    with pytest.raises(ValueError, match="num_classes must be 0 or more"):
        maelib.to_timm_vit(tiny, num_classes=-1)
    with pytest.raises(FileNotFoundError, match="no folder .*missing/model: from_hf takes a folder"):
        maelib.from_hf(str(tmp_path / "missing" / "model"))


def test_a_head_that_does_not_fit_the_classes_names_the_real_fix(tmp_path):
    root = grey_folder(tmp_path / "two", classes=2)
    with pytest.raises(ValueError, match="sizes the head to the data.*--model.num_classes is not a flag here") as info:
        main(["finetune", "--model.arch", "mae_vit_mini_patch4_28", "--model.arch_overrides", TINY,
              "--model.num_classes", "5", "--data.dataset", "imagefolder", "--data.root", str(root),
              "--data.batch_size", "2", "--trainer.default_root_dir", str(tmp_path / "ft"), *QUIET])
    assert "--data.num_classes" not in str(info.value)
    dm = MAEDataModule(dataset="imagefolder", root=str(root), img_size=28, in_chans=1, batch_size=2)
    dm.setup()
    module = FineTuneModule(arch="mae_vit_mini_patch4_28", arch_overrides={"depth": 1}, num_classes=5)
    with pytest.raises(ValueError, match="num_classes=5 outputs but the dataset has 2 classes: build "
                                         r"FineTuneModule\(num_classes=2\)"):
        module.check_data(dm, "fit")
    small = FineTuneModule(arch="mae_vit_mini_patch4_28", arch_overrides={"depth": 1}, num_classes=1)
    with pytest.raises(ValueError, match="num_classes=1: the head has 1 class: classification needs 2 or more"):
        small.check_data(dm, "fit")


def test_file_format_reads_the_first_bytes(tmp_path):
    assert file_format(Path(maelib.weights.zoo.WEIGHTS_DIR) / "mae_vit_mini_patch4_28.fmnist_pixel.safetensors") == "safetensors"
    (tmp_path / "a.pth").write_bytes(b"\x80\x02" + b"0" * 20)
    assert file_format(tmp_path / "a.pth") == "torch"
    (tmp_path / "b.bin").write_bytes(struct.pack("<Q", 10**9) + b"{")  # a header longer than the file
    assert file_format(tmp_path / "b.bin") is None


def test_the_command_line_shows_the_message_not_a_traceback(tmp_path, monkeypatch, capsys):
    """`maelib` (the console script, maelib.train.cli:console) prints maelib's message and exits 1."""
    from maelib.train.cli import console

    monkeypatch.delenv("MAELIB_TRACEBACK", raising=False)
    monkeypatch.setattr("sys.argv", ["maelib", "pretrain", "--model.arch_overrides", "{patch_size: 0}",
                                     "--trainer.default_root_dir", str(tmp_path / "run")])
    assert console() == 1
    err = capsys.readouterr().err
    assert err.startswith("maelib: error: patch_size must be 1 or more in the MAE config, got 0")
    assert "Traceback" not in err and "MAELIB_TRACEBACK=1" in err
    monkeypatch.setenv("MAELIB_TRACEBACK", "1")
    with pytest.raises(ValueError, match="patch_size must be 1 or more"):
        console()


def test_knn_refuses_augmented_features(tmp_path):
    with pytest.raises(ValueError, match="maelib knn scores cached features of unaugmented images"):
        main(["knn", "--data.arch", "mae_vit_mini_patch4_28", "--data.augment", "mae", "--run_dir", str(tmp_path)])


@pytest.mark.parametrize("command", ["pretrain", "linprobe", "finetune"])
@pytest.mark.parametrize("lr", ["0", "-1"])
def test_a_learning_rate_of_zero_or_less_is_refused_naming_the_flag(command, lr, tmp_path):
    source = {"pretrain": [], "linprobe": ["--data.arch", "mae_vit_mini_patch4_28"],
              "finetune": ["--model.arch", "mae_vit_mini_patch4_28"]}[command]
    with pytest.raises(ValueError, match=r"--model.base_lr must be greater than 0, got -?[01].0.*set --model.base_lr"):
        main([command, *source, "--model.base_lr", lr, "--trainer.default_root_dir", str(tmp_path), *QUIET])


def test_python_dash_m_maelib_is_the_maelib_command():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "maelib", "pretrain", "--model.base_lr", "-1"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "maelib: error: --model.base_lr must be greater than 0" in result.stderr
    listing = subprocess.run([sys.executable, "-m", "maelib", "presets"], capture_output=True, text=True, timeout=120)
    assert listing.returncode == 0 and "maelib pretrain --config fmnist" in listing.stdout
