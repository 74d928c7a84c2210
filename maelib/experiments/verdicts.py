"""From a sweep's runs to findings a student can trust: how far each run is from learning nothing, whether the
baseline clearly learned, each of the paper's directions judged after correcting for the number of comparisons,
and where the linear probe and fine-tuning disagree.

    summary = summarise(rows, baseline=PRESETS["study"]["baseline"])   # rows: maelib.experiments.sweep.collect
    summary["claims"]           # one per (paper direction, metric): diff, 95% interval, p, Holm p, verdict
    summary["bars"]             # the baseline, seed by seed: k-NN above random init, masked loss / trivial level
    summary["disagreements"]    # settings where the probe and fine-tuning point different ways
    summary["length"]           # the pretraining-length curve, from the baseline runs' scores along the way

Every run is measured against two things that need no learning: the same encoder at random initialisation (the
"reference" runs of the same width, `*_vs_random`) and its own target's trivial level (`loss_ratio`: the masked
loss over predict-zero, or over the class prior for tokens). A run that learned less is flagged, never dropped.
"""

from __future__ import annotations

import datetime as dt
import math

from .ablation_design import BASE, BASELINE, CLAIMS, LARGEST, PAPER
from .stats import compare, factor_table, holm, mean_se

# The bars of a baseline that has clearly learned (issue 29), on the primary readout (mean pooling, chosen on
# held-out images: scripts/ablation_budget.py)
BARS = {"knn_acc_mean_vs_random": 0.10, "loss_ratio": 0.80}
SCORES = ("knn_acc", "probe_acc", "knn_acc_mean", "probe_acc_mean", "finetune_acc")
METRICS = SCORES + ("val_loss", "target_predict_zero", "loss_ratio", "train_seconds") + tuple(
    f"{m}_vs_random" for m in SCORES)
CLAIM_METRICS = ("knn_acc_mean", "probe_acc_mean", "finetune_acc", "knn_acc", "probe_acc")
ALPHA = 0.05


def references(rows: list[dict]) -> dict[str, dict[str, float]]:
    """The random-initialisation runs (factor "reference"), by encoder width: {"64": {score: mean}} (text keys,
    as in the exported JSON)."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        if r["factor"] == "reference":
            groups.setdefault(str(r.get("embed_dim")), []).append(r)
    return {width: {m: mean_se([r[m] for r in runs if r.get(m) is not None])[0] for m in SCORES
                    if any(r.get(m) is not None for r in runs)} for width, runs in groups.items()}


def with_distances(rows: list[dict]) -> list[dict]:
    """Each row with `loss_ratio` (masked loss / its target's trivial level) and, where a random-initialisation
    reference of the same width ran, `<score>_vs_random` (the run's score minus that reference's mean)."""
    refs = references(rows)
    out = []
    for r in rows:
        r = dict(r)
        if r.get("val_loss") is not None and r.get("target_predict_zero"):
            r["loss_ratio"] = r["val_loss"] / r["target_predict_zero"]
        ref = refs.get(str(r.get("embed_dim")))
        if ref and r["factor"] != "reference":
            for m in SCORES:
                if r.get(m) is not None and m in ref:
                    r[f"{m}_vs_random"] = r[m] - ref[m]
        out.append(r)
    return out


def bars(rows: list[dict]) -> dict:
    """The baseline runs against `BARS`, seed by seed, and whether every seed clears both."""
    seeds = [dict(seed=r["seed"], knn_acc_mean_vs_random=r.get("knn_acc_mean_vs_random"),
                  loss_ratio=r.get("loss_ratio"),
                  meets=(r.get("knn_acc_mean_vs_random") or -1) >= BARS["knn_acc_mean_vs_random"]
                  and (r.get("loss_ratio") or math.inf) <= BARS["loss_ratio"])
             for r in rows if r["factor"] == "baseline"]
    return dict(bars=BARS, seeds=seeds, all_meet=bool(seeds) and all(s["meets"] for s in seeds))


def _value(table: list[dict], factor: str, value):
    """A claim's value: `LARGEST` is the largest value of the factor in the table, `BASE` the baseline's."""
    values = [row["value"] for row in table if row["factor"] == factor]
    if value == LARGEST:
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        return max(numbers) if numbers else None
    if value == BASE:
        return next((row["value"] for row in table if row["factor"] == factor and row["baseline"]), None)
    return value


def check_claims(table: list[dict], metric: str = "probe_acc_mean") -> list[dict]:
    """Each of the paper's directions (`CLAIMS`) the table can test, on `metric`: our difference (better - worse),
    its pooled s.e. and 95% interval, its p-value, the p-value after Holm's correction over every direction
    tested on this metric (`stats.holm`), and a verdict: "holds" (Holm p < 0.05, the paper's sign), "reversed"
    (Holm p < 0.05, the other sign) or "not resolved". Only "holds" counts as holding; "not resolved" is no
    evidence either way. Also the paper's own difference (linear probe, fine-tuning) where it has one."""
    rows = {(row["factor"], repr(row["value"])): row for row in table}
    found = []
    for factor, better, worse, text in CLAIMS:
        hi_value, lo_value = _value(table, factor, better), _value(table, factor, worse)
        hi, lo = rows.get((factor, repr(hi_value))), rows.get((factor, repr(lo_value)))
        if hi is None or lo is None or hi is lo or not hi.get(metric + "_values") or not lo.get(metric + "_values"):
            continue
        if len(hi[metric + "_values"]) + len(lo[metric + "_values"]) < 3:
            continue
        c = compare(hi[metric + "_values"], lo[metric + "_values"])
        paper = PAPER.get(factor, {})
        paper_diff = ([round(a - b, 1) for a, b in zip(paper[better], paper[worse])]
                      if better in paper and worse in paper else None)
        found.append(dict(factor=factor, text=text, better=hi_value, worse=lo_value, metric=metric, diff=c.diff,
                          se=c.se, low=c.low, high=c.high, p=c.p, paper_diff_linear_finetune=paper_diff,
                          n=[len(hi[metric + "_values"]), len(lo[metric + "_values"])]))
    for claim, p_holm in zip(found, holm([c["p"] for c in found])):
        claim["p_holm"] = p_holm
        claim["verdict"] = ("not resolved" if p_holm >= ALPHA else "holds" if claim["diff"] > 0 else "reversed")
    return found


def disagreements(table: list[dict], a: str = "probe_acc_mean", b: str = "finetune_acc") -> list[dict]:
    """Settings whose difference from the baseline points one way on `a` and the other on `b` (the paper's Table 1:
    a deeper decoder lifts the probe by 8 points and fine-tuning by 0.1), or where one is resolved and the other is
    not: each with both differences and whether each is resolved (95% interval, uncorrected)."""
    out = []
    for row in table:
        ca, cb = row.get(a + "_vs_baseline"), row.get(b + "_vs_baseline")
        if ca is None or cb is None:
            continue
        opposite = ca.diff * cb.diff < 0
        if (opposite and (ca.resolved or cb.resolved)) or ca.resolved != cb.resolved:
            out.append(dict(factor=row["factor"], value=row["value"], **{a: ca.diff, b: cb.diff,
                            a + "_resolved": ca.resolved, b + "_resolved": cb.resolved}))
    return out


def length_curve(rows: list[dict], epoch_images: int) -> list[dict]:
    """The pretraining-length curve: the baseline runs' scores along the way (`by_step`) and at the end, and the
    "steps" factor's longer runs, as mean ± s.e. per number of epochs (`epoch_images` images make one epoch)."""
    points: dict[float, list[dict]] = {}
    for r in rows:
        if r["factor"] not in ("baseline", "steps"):
            continue
        batch = r["batch_size"]
        for scores in [*r.get("by_step", []), dict(r, step=r["steps"])]:
            points.setdefault(round(scores["step"] * batch / epoch_images, 2), []).append(scores)
    curve = []
    for epochs in sorted(points):
        row = dict(epochs=epochs, n=len(points[epochs]))
        for m in SCORES + ("loss_ratio",):
            values = [p["val_loss"] / p["target_predict_zero"] if m == "loss_ratio" else p[m]
                      for p in points[epochs] if m == "loss_ratio" or p.get(m) is not None]
            row[m], row[m + "_se"] = mean_se(values) if values else (None, None)
        curve.append(row)
    return curve


def summarise(rows: list[dict], failed: list[dict] | None = None, baseline: dict = BASELINE,
              metrics=METRICS, epoch_images: int = 60000) -> dict:
    """A sweep's rows -> a JSON-ready summary: the rows with their distances, the factor table (mean ± s.e., vs
    baseline), the claims on every metric that has values, the baseline's bars, the probe-vs-fine-tuning
    disagreements and the pretraining-length curve. What `maelib ablate` prints and exports."""
    rows = with_distances(rows)
    table = factor_table(rows, list(metrics), baseline)
    claims = [c for metric in CLAIM_METRICS for c in check_claims(table, metric)]
    return dict(table=[_plain(r) for r in table], claims=claims, rows=rows, failed=failed or [],
                references=references(rows), bars=bars(rows), disagreements=disagreements(table),
                length=length_curve(rows, epoch_images),
                unlearned=[r["name"] for r in rows if r.get("learned") is False], runs_span_seconds=_span(rows))


def _plain(row: dict) -> dict:
    return {k: (dict(diff=v.diff, se=v.se, low=v.low, high=v.high, p=v.p, resolved=v.resolved)
                if hasattr(v, "resolved") else v) for k, v in row.items()}


def _span(rows: list[dict]) -> float | None:
    """Wall seconds from the first run's start to the last run's end (the sweep's own time, even when the
    summary is made later by a resumed sweep that had nothing left to run)."""
    times = [(dt.datetime.strptime(r["started"], "%Y-%m-%d %H:%M:%S"), r["seconds"]) for r in rows
             if r.get("started") and r.get("seconds") is not None]
    if not times:
        return None
    end = max(start + dt.timedelta(seconds=s) for start, s in times)
    return round((end - min(start for start, _ in times)).total_seconds(), 1)
