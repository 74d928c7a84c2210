"""maelib.experiments.ablation (one run), maelib.experiments.ablation_design (presets, claims) and `maelib ablate`, at tiny budgets."""

import json

import pytest
import torch

from maelib.evaluation.masked_loss import masked_loss_levels
from maelib.experiments.ablation import run_ablation
from maelib.experiments.ablation_design import CLAIMS, FACTORS, PAPER, PRESETS, check_claims, settings_for
from maelib.experiments.stats import factor_table
from maelib.registry import create_model

TINY = dict(steps=2, batch_size=16, train_images=64, eval_train_images=50, eval_test_images=30)


def test_a_run_trains_evaluates_and_reports_its_levels():
    r = run_ablation(mask_ratio=0.5, masking="block", augmentation="crop+jitter", seed=1, finetune_epochs=1,
                     finetune_images=64, **TINY)
    assert r["steps"] == 2 and r["encoder_tokens"] == 1 + 24 and r["num_patches"] == 49
    assert 0 <= r["finetune_acc"] <= 1 and r["finetune_acc"] * 30 == round(r["finetune_acc"] * 30)  # of 30 images
    assert 0 <= r["knn_acc"] <= 1 and 0 <= r["probe_acc_mean"] <= 1 and r["train_loss"] > 0
    assert r["target_predict_zero"] == pytest.approx(r["target_patch_mean"], rel=1e-4)  # norm-pix: zero is each patch's mean
    assert r["learned"] is False  # two steps learn nothing: flagged, not ranked
    reference = run_ablation(steps=0, **{k: v for k, v in TINY.items() if k != "steps"})
    assert reference["learned"] is None and reference["images_per_second"] is None and reference["finetune_acc"] is None
    with pytest.raises(ValueError, match="augmentation must be one of"):
        run_ablation(augmentation="jitter", **TINY)


def test_predict_zero_level_by_hand():
    """For a pixel target the predict-zero level is the mean squared target over the hidden patches."""
    model = create_model("mae_vit_mini_patch4_28", norm_pix_loss=False, depth=1).eval()
    imgs = torch.randn(6, 1, 28, 28)
    levels = masked_loss_levels(model, [(imgs, torch.zeros(6))], 0.75, seed=3)
    from maelib.analysis import seeded_noise

    _, _, mask = model(imgs, mask_ratio=0.75, noise=seeded_noise(model, 6, 0.75, 3))
    target = model.patchify(imgs)
    by_hand = ((target**2).mean(-1) * mask).sum().item() / mask.sum().item()
    assert levels["target_predict_zero"] == pytest.approx(by_hand, rel=1e-5)
    assert levels["target_patch_mean"] < levels["target_predict_zero"]  # each patch's own mean is borrowed information


def test_presets_and_the_papers_claims_are_consistent():
    for preset in PRESETS.values():
        assert set(preset["factors"]) <= set(FACTORS) and preset["seeds"] >= 3
    assert set(PRESETS["full"]["factors"]) == set(FACTORS) == set(PAPER)
    for factor, better, worse, _ in CLAIMS:
        assert better in FACTORS[factor] and worse in FACTORS[factor]
    quick = settings_for("quick")
    assert len(quick) == 3 * (1 + 3 + 1) and {s.factor for s in quick} == {"baseline", "mask_ratio", "norm_pix_loss",
                                                                          "encoder_mask_tokens", "reference"}
    assert all(s.params["steps"] == 0 for s in quick if s.factor == "reference")
    with pytest.raises(ValueError, match="unknown factor"):
        settings_for("quick", factors=["patch_size"])


def test_check_claims_verdicts():
    rows = [dict(factor="baseline", value=None, seed=s, probe_acc=0.80 + 0.002 * s) for s in range(3)]
    rows += [dict(factor="mask_ratio", value=0.25, seed=s, probe_acc=0.70 + 0.002 * s) for s in range(3)]
    rows += [dict(factor="norm_pix_loss", value=False, seed=s, probe_acc=0.85 + 0.002 * s) for s in range(3)]
    rows += [dict(factor="encoder_mask_tokens", value=True, seed=s, probe_acc=0.79 + 0.03 * s) for s in range(3)]
    table = factor_table(rows, ["probe_acc"], PRESETS["quick"]["baseline"])
    verdicts = {c["factor"]: c["verdict"] for c in check_claims(table, "probe_acc")}
    assert verdicts == {"mask_ratio": "holds", "norm_pix_loss": "reversed", "encoder_mask_tokens": "not resolved"}


def test_maelib_ablate_runs_a_preset_and_exports_its_summary(tmp_path, capsys):
    from maelib.train.cli import main

    out, export = tmp_path / "sweep", tmp_path / "results" / "summary.json"
    args = ["ablate", "--preset", "quick", "--out", str(out), "--executor", "inline", "--seeds", "2",
            "--factors", "encoder_mask_tokens", "--export", str(export)] + [f"--{k}={v}" for k, v in TINY.items()]
    assert main(args) == 0
    summary = json.loads(export.read_text())
    assert summary["settings"] == 6 and not summary["failed"] and summary["command"].startswith("maelib ablate")
    names = {f"{factor}/seed{s}" for factor in ("baseline", "encoder_mask_tokens=True", "reference") for s in (0, 1)}
    assert {r["name"] for r in summary["rows"]} == names
    assert any(c["factor"] == "encoder_mask_tokens" for c in summary["claims"])
    printed = capsys.readouterr().out
    assert "encoder_mask_tokens" in printed and "did not learn" in printed
    again = main(args) == 0 and json.loads(export.read_text())
    assert again["skipped"] == 6 and again["sweep_seconds"] < summary["runs_span_seconds"]  # nothing ran again
    assert again["runs_span_seconds"] == summary["runs_span_seconds"] > 0  # the sweep's own time is kept
