"""maelib.experiments.ablation (one run), maelib.experiments.ablation_design (presets, claims) and `maelib ablate`, at tiny budgets."""

import json

import pytest
import torch

from maelib.evaluation.masked_loss import masked_loss_levels
from maelib.experiments.ablation import run_ablation
from maelib.experiments.ablation_design import BASE, CLAIMS, FACTORS, LARGEST, PAPER, PRESETS, settings_for
from maelib.experiments.stats import factor_table
from maelib.experiments.verdicts import bars, check_claims, disagreements, length_curve, with_distances
from maelib.registry import create_model

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent
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
    model = create_model("mae_vit_mini_patch4_28", norm_pix_loss=False, depth=1).eval()  # the "pixel" target
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
        assert better in FACTORS[factor] + [LARGEST] and worse in FACTORS[factor] + [BASE]
    quick = settings_for("quick")
    assert len(quick) == 3 * (1 + 3 + 1) and {s.factor for s in quick} == {"baseline", "mask_ratio", "target",
                                                                          "encoder_mask_tokens", "reference"}
    study = settings_for("study")
    widths = {s.params["embed_dim"] for s in study if s.factor == "reference"}
    assert widths == set(PRESETS["study"]["factors"]["embed_dim"])  # a random-init reference for every width
    assert all(bool(s.params.get("score_at_steps")) == (s.factor == "baseline") for s in study)
    assert len({s.name for s in study}) == len(study) and all(s.params["finetune_epochs"] > 0 for s in study)
    assert all(s.params["steps"] == 0 for s in quick if s.factor == "reference")
    with pytest.raises(ValueError, match="unknown factor"):
        settings_for("quick", factors=["patch_size"])


def test_check_claims_verdicts_after_holms_correction():
    rows = [dict(factor="baseline", value=None, seed=s, probe_acc=0.80 + 0.002 * s) for s in range(3)]
    rows += [dict(factor="mask_ratio", value=0.25, seed=s, probe_acc=0.70 + 0.002 * s) for s in range(3)]
    rows += [dict(factor="target", value="pixel", seed=s, probe_acc=0.85 + 0.002 * s) for s in range(3)]
    rows += [dict(factor="encoder_mask_tokens", value=True, seed=s, probe_acc=0.79 + 0.03 * s) for s in range(3)]
    # resolved on its own (p = 0.028) but not among four comparisons: Holm doubles the third smallest p-value
    rows += [dict(factor="masking", value="block", seed=s, probe_acc=0.792 + 0.003 * s) for s in range(3)]
    table = factor_table(rows, ["probe_acc"], PRESETS["quick"]["baseline"])
    claims = {c["factor"]: c for c in check_claims(table, "probe_acc")}
    verdicts = {f: c["verdict"] for f, c in claims.items()}
    assert verdicts == {"mask_ratio": "holds", "target": "reversed", "encoder_mask_tokens": "not resolved",
                        "masking": "not resolved"}
    assert claims["masking"]["p"] < 0.05 <= claims["masking"]["p_holm"]  # the correction changed this one
    assert claims["target"]["paper_diff_linear_finetune"] == [0.4, 0.5]  # the paper's norm-pix over pixels


def test_distances_bars_disagreements_and_the_length_curve():
    def run(factor, value, seed, knn, probe, ft, loss, width=64, steps=936, **extra):
        return dict(factor=factor, value=value, seed=seed, embed_dim=width, knn_acc_mean=knn, probe_acc_mean=probe,
                    finetune_acc=ft, val_loss=loss, target_predict_zero=0.65, batch_size=128, steps=steps, **extra)
    rows = [run("reference", None, s, 0.60, 0.74, 0.62, 2.2) for s in range(3)]
    rows += [run("baseline", None, s, 0.77 + 0.001 * s, 0.80, 0.75 + 0.001 * s, 0.49 if s < 2 else 0.55,
                 by_step=[dict(step=468, knn_acc_mean=0.70, probe_acc_mean=0.78, finetune_acc=0.72, val_loss=0.58,
                               target_predict_zero=0.65)]) for s in range(3)]
    rows += [run("decoder_depth", 4, s, 0.78, 0.84 + 0.001 * s, 0.75 - 0.001 * s, 0.48) for s in range(3)]
    rows += [run("steps", 1872, s, 0.79, 0.81, 0.77, 0.45, steps=1872) for s in range(2)]  # twice as long
    rows = with_distances(rows)
    assert rows[3]["knn_acc_mean_vs_random"] == pytest.approx(0.17) and rows[3]["loss_ratio"] == pytest.approx(0.49 / 0.65)
    b = bars(rows)
    assert [s["meets"] for s in b["seeds"]] == [True, True, False] and not b["all_meet"]  # 0.55 / 0.65 > 80%
    table = factor_table(rows, ["probe_acc_mean", "finetune_acc"], {"decoder_depth": 1})
    (d,) = disagreements(table)
    assert d["factor"] == "decoder_depth" and d["probe_acc_mean_resolved"] and not d["finetune_acc_resolved"]
    curve = length_curve(rows, epoch_images=128 * 468)
    assert [(p["epochs"], p["n"]) for p in curve] == [(1.0, 3), (2.0, 3), (4.0, 2)]  # along the way, end, longer
    assert curve[0]["knn_acc_mean"] == pytest.approx(0.70) and curve[2]["finetune_acc"] == pytest.approx(0.77)


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
    assert any(c["factor"] == "encoder_mask_tokens" and "p_holm" in c for c in summary["claims"])
    assert summary["bars"]["seeds"] and "knn_acc_vs_random" in summary["rows"][0]  # distances to the reference
    printed = capsys.readouterr().out
    assert "encoder_mask_tokens" in printed and "did not learn" in printed
    again = main(args) == 0 and json.loads(export.read_text())
    assert again["skipped"] == 6 and again["sweep_seconds"] < summary["runs_span_seconds"]  # nothing ran again
    assert again["runs_span_seconds"] == summary["runs_span_seconds"] > 0  # the sweep's own time is kept


def test_the_committed_study_is_whole_with_three_seeds_and_a_baseline_that_learned_in_every_one():
    """Every setting and reference of the study preset has its 3 seeds committed, every baseline seed clears both
    bars (k-NN 10 points over random init, masked loss at most 80% of predict-zero), and no run failed."""
    study = json.loads((ROOT / "benchmarks/results/ablation_study_cpu.json").read_text())
    runs = {(r["factor"], json.dumps(r["value"]), r["seed"]) for r in study["rows"]}
    expected = {(s.factor, json.dumps(s.value), s.seed) for s in settings_for("study")}
    assert runs == expected, sorted(expected - runs)
    assert {seed for _, _, seed in expected} == {0, 1, 2} and len(expected) == 3 * len({k[:2] for k in expected})
    assert not study["failed"]
    bars = study["bars"]
    assert [b["seed"] for b in bars["seeds"]] == [0, 1, 2] and bars["all_meet"]
    assert all(b["knn_acc_mean_vs_random"] >= 0.10 and b["loss_ratio"] <= 0.80 for b in bars["seeds"])


def test_the_committed_study_is_made_from_its_committed_runs():
    """benchmarks/results/ablation_study_cpu.json is the summary of the run records committed beside it (the sweep
    directory its command names): summarising them again gives the same rows, claims and bars, and the raw-pixel
    reference measures the same on the same images."""
    from maelib.experiments.ablation import score_pixels
    from maelib.experiments.ablation_design import STUDY_EPOCH
    from maelib.experiments.sweep import collect
    from maelib.experiments.verdicts import summarise

    study = json.loads((ROOT / "benchmarks/results/ablation_study_cpu.json").read_text())
    assert study["command"].startswith("maelib ablate --preset study")
    assert "--out benchmarks/results/ablation_study_cpu" in study["command"]
    result = collect(settings_for("study"), ROOT / "benchmarks/results/ablation_study_cpu")
    again = json.loads(json.dumps(summarise(result.rows, result.failed, PRESETS["study"]["baseline"],
                                            epoch_images=128 * STUDY_EPOCH), default=str))
    assert [r["name"] for r in again["rows"]] == [r["name"] for r in study["rows"]]
    assert again["claims"] == study["claims"] and again["bars"] == study["bars"]
    for r in study["rows"]:
        assert {"knn_acc", "probe_acc", "finetune_acc", "val_loss", "target_predict_zero", "train_seconds",
                "loss_ratio"} <= set(r) and r["finetune_acc"] is not None
    pixels = score_pixels(eval_train_images=5000, eval_test_images=2000)
    assert pixels == pytest.approx(study["pixels"], abs=1e-3)
