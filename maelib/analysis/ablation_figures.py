"""Figures of an ablation study, drawn from its summary (`maelib.experiments.verdicts.summarise`, or the committed
benchmarks/results/ablation_study_cpu.json): every score as the mean of its seeds with one standard error, beside
the two references that need no pretraining, the same encoder at random initialisation and the raw pixels.

    fig = factor_figure(summary, "mask_ratio", paper=PAPER["mask_ratio"])    # one panel per score (+ the paper's)
    fig = length_figure(summary)                                            # scores against pretraining epochs
"""

from __future__ import annotations

from typing import Sequence

from matplotlib.figure import Figure

SCORES = {"knn_acc_mean": "k-NN", "probe_acc_mean": "linear probe", "finetune_acc": "fine-tuning",
          "knn_acc": "k-NN (cls)", "probe_acc": "linear probe (cls)"}
PIXELS = {"knn_acc_mean": "knn_acc", "probe_acc_mean": "probe_acc", "knn_acc": "knn_acc", "probe_acc": "probe_acc"}
NAMES = {"encoder_mask_tokens": {False: "w/o [M]", True: "w/ [M]"}}
TITLES = {"mask_ratio": "mask ratio", "decoder_depth": "decoder depth", "decoder_embed_dim": "decoder width",
          "target": "reconstruction target", "encoder_mask_tokens": "[M] tokens in the encoder",
          "masking": "mask sampling", "augmentation": "augmentation", "embed_dim": "encoder width",
          "steps": "pretraining steps"}


def factor_rows(summary: dict, factor: str) -> list[dict]:
    """The factor table's rows of one factor (its baseline row included), numbers in increasing order."""
    rows = [r for r in summary["table"] if r["factor"] == factor]
    if all(isinstance(r["value"], (int, float)) and not isinstance(r["value"], bool) for r in rows):
        rows.sort(key=lambda r: r["value"])
    return rows


def _label(factor: str, value) -> str:
    return NAMES.get(factor, {}).get(value, str(value))


def plot_scores(ax, summary: dict, factor: str, metric: str, *, color: str = "C0", reference_width=None) -> None:
    """One panel: `metric` (in %) per value of `factor`, mean ± s.e. of the seeds (the baseline's value filled
    black), with the random-initialisation reference of the baseline's encoder width (dotted) and the raw pixels
    (dashed, k-NN and probe only)."""
    rows = factor_rows(summary, factor)
    xs = range(len(rows))
    means = [100 * r[metric] if r.get(metric) is not None else float("nan") for r in rows]
    errors = [100 * (r.get(metric + "_se") or 0) if r.get(metric + "_se") == r.get(metric + "_se") else 0 for r in rows]
    ax.errorbar(xs, means, yerr=errors, color=color, marker="o", capsize=3, label="MAE (mean ± s.e. of seeds)")
    for x, r, m in zip(xs, rows, means):
        if r["baseline"]:
            ax.plot([x], [m], "o", color="black", zorder=3, label="the baseline")
    width = reference_width if reference_width is not None else summary["baseline"].get("embed_dim")
    ref = (summary.get("references") or {}).get(str(width))
    if ref and metric in ref:
        ax.axhline(100 * ref[metric], color="grey", ls=":", label="random init")
    if metric in PIXELS and summary.get("pixels"):
        ax.axhline(100 * summary["pixels"][PIXELS[metric]], color="grey", ls="--", label="raw pixels")
    ax.set_xticks(list(xs), [_label(factor, r["value"]) for r in rows], rotation=30, ha="right", fontsize=8)
    ax.set(title=SCORES[metric], xlabel=TITLES.get(factor, factor))


def factor_figure(summary: dict, factor: str, metrics: Sequence[str] = ("knn_acc_mean", "probe_acc_mean", "finetune_acc"),
                  paper: dict | None = None) -> Figure:
    """One panel per score of `factor` (`plot_scores`), and, given the paper's {value: (linear, fine-tune)}, a last
    panel with those on their own axis (ViT-L on ImageNet: a different scale, the same question)."""
    panels = len(metrics) + (paper is not None)
    fig = Figure(figsize=(3.3 * panels, 3.4), layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False)[0]
    for ax, metric, color in zip(axes, metrics, ("C0", "C1", "C2", "C3", "C4")):
        plot_scores(ax, summary, factor, metric, color=color)
    axes[0].set_ylabel("Fashion-MNIST test accuracy (%)")
    if paper is not None:
        ax = axes[-1]
        values = list(paper)
        for i, (name, marker) in enumerate((("linear probe", "^"), ("fine-tuning", "v"))):
            ax.plot(range(len(values)), [paper[v][i] for v in values], ls="--", marker=marker, mfc="none",
                    color=f"C{i + 1}", label=f"paper: {name}")
        ax.set_xticks(range(len(values)), [_label(factor, v) for v in values], rotation=30, ha="right", fontsize=8)
        ax.set(title="the paper (ViT-L, ImageNet)", xlabel=TITLES.get(factor, factor), ylabel="top-1 (%)")
        ax.legend(fontsize=7)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=4, fontsize=8)
    fig.suptitle(f"{TITLES.get(factor, factor)}: {summary.get('seeds', '?')} seeds per setting")
    return fig


def length_figure(summary: dict, metrics: Sequence[str] = ("knn_acc_mean", "probe_acc_mean", "finetune_acc")) -> Figure:
    """Scores (left) and the masked loss over its trivial level (right) against epochs of pretraining: the
    baseline's checkpoints on the way and the runs trained twice as long (`summary["length"]`)."""
    curve = summary["length"]
    epochs = [p["epochs"] for p in curve]
    fig = Figure(figsize=(9, 3.4), layout="constrained")
    left, right = fig.subplots(1, 2)
    for metric, color in zip(metrics, ("C0", "C1", "C2")):
        if any(p[metric] is None for p in curve):
            continue  # e.g. runs without fine-tuning
        left.errorbar(epochs, [100 * p[metric] for p in curve], yerr=[100 * (p[metric + "_se"] or 0) for p in curve],
                      marker="o", capsize=3, color=color, label=SCORES[metric])
    left.set(xscale="log", xlabel="epochs of pretraining (log scale)", ylabel="test accuracy (%)",
             title="what the encoder learned")
    left.set_xticks(epochs, [f"{e:g}" for e in epochs])
    left.legend(fontsize=8)
    right.errorbar(epochs, [p["loss_ratio"] for p in curve], yerr=[p["loss_ratio_se"] or 0 for p in curve],
                   marker="o", capsize=3, color="C3")
    right.axhline(1.0, color="grey", ls=":", label="predict zero (learned nothing)")
    right.axhline(0.8, color="grey", ls="--", label="the study's bar (80%)")
    right.set(xscale="log", xlabel="epochs of pretraining (log scale)", ylabel="masked loss / predict-zero",
              title="how well it fills in hidden patches")
    right.set_xticks(epochs, [f"{e:g}" for e in epochs])
    right.legend(fontsize=8)
    return fig
