"""Statistics for seeded runs: mean ± standard error, and whether a variant really differs from the baseline.

    mean, se = mean_se([0.71, 0.73, 0.70])
    c = compare([0.74, 0.75, 0.73], baseline=[0.71, 0.73, 0.70])
    c.diff, c.se, c.low, c.high, c.resolved     # difference of means, its pooled s.e., 95% interval, |t| > t_crit
    c.p                                          # its two-sided p-value (Student's t, pooled)
    holm([0.01, 0.04, 0.03])                     # -> [0.03, 0.06, 0.06]: p-values adjusted for 3 comparisons

A difference is *resolved* when its 95% confidence interval (Student's t on the pooled seed spread of the two
groups, n1 + n2 - 2 degrees of freedom) excludes zero. A min-max band over two seeds is no test: with few
seeds it is narrow by chance and flags noise as a finding.

A study that makes many comparisons finds some "resolved" by chance (12 comparisons at 5% each: a 46% chance of at
least one false finding). `holm` adjusts a family's p-values (Holm, 1979) so that the chance of any false finding
in the family stays at most 5%; a direction counts as resolved only when its adjusted p-value is below 0.05.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

# Two-sided 95% critical values of Student's t for 1..30 degrees of freedom; beyond, the normal 1.96 (+ 2.5/df).
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_critical(df: int) -> float:
    """The two-sided 95% critical value of Student's t with `df` degrees of freedom (df >= 1)."""
    if df < 1:
        raise ValueError(f"a t interval needs at least 1 degree of freedom, got {df}: run more seeds")
    return _T95[df - 1] if df <= len(_T95) else 1.96 + 2.5 / df


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (sample s.d. / sqrt(n)); the s.e. is nan for a single value."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_se needs at least one value")
    mean = sum(values) / n
    if n == 1:
        return mean, math.nan
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def accuracy_gap(a: float, b: float, n: int) -> tuple[float, float]:
    """Two accuracies (0-1), each measured on n test images -> (a - b, half-width of its 95% interval), each
    accuracy's binomial s.e. sqrt(p (1 - p) / n) combined as if independent (on the same images the paired
    interval is narrower: this one errs on the side of "not resolved")."""
    if n < 1:
        raise ValueError(f"an accuracy needs at least one test image, got n={n}")
    return a - b, 1.96 * math.sqrt((a * (1 - a) + b * (1 - b)) / n)


def t_pvalue(t: float, df: int) -> float:
    """Two-sided p-value of Student's t statistic with `df` degrees of freedom: P(|T| >= |t|)."""
    if df < 1:
        raise ValueError(f"a t test needs at least 1 degree of freedom, got {df}: run more seeds")
    from scipy.stats import t as student_t  # scipy comes with scikit-learn, a dependency

    return 1.0 if math.isnan(t) else float(2 * student_t.sf(abs(t), df))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values, in their order: the i-th smallest is multiplied by
    (m - i + 1), made no smaller than the ones before it, and capped at 1. Rejecting where the adjusted value is
    below alpha keeps the chance of any false rejection in the family at most alpha."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted, running = [1.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


@dataclass(frozen=True)
class Comparison:
    """A variant's mean minus the baseline's, with the pooled standard error and a 95% t interval."""

    diff: float
    se: float
    df: int
    low: float
    high: float

    @property
    def p(self) -> float:
        """Two-sided p-value of the pooled t test (1.0 when both groups are constant and equal)."""
        if self.se == 0:
            return 1.0 if self.diff == 0 else 0.0
        return t_pvalue(self.diff / self.se, self.df)

    @property
    def resolved(self) -> bool:
        """True when the 95% interval excludes zero: the difference is larger than the seeds' noise."""
        return self.low > 0 or self.high < 0

    def __str__(self) -> str:
        verdict = "resolved" if self.resolved else "within noise"
        return f"{self.diff:+.4f} ± {self.se:.4f} (95% [{self.low:+.4f}, {self.high:+.4f}], {verdict})"


def compare(values: Sequence[float], baseline: Sequence[float]) -> Comparison:
    """Difference of means `values - baseline` against the pooled seed spread of both groups.

    Pooled variance s² = ((n1 - 1) s1² + (n2 - 1) s2²) / (n1 + n2 - 2); s.e. of the difference s sqrt(1/n1 + 1/n2);
    95% interval diff ± t_critical(n1 + n2 - 2) s.e. Needs at least three runs in all (one degree of freedom).
    """
    n1, n2 = len(values), len(baseline)
    df = n1 + n2 - 2
    if n1 == 0 or n2 == 0 or df < 1:
        raise ValueError(f"compare needs runs on both sides and at least 3 in all, got {n1} and {n2}: run more seeds")
    m1, m2 = sum(values) / n1, sum(baseline) / n2
    ss = sum((v - m1) ** 2 for v in values) + sum((v - m2) ** 2 for v in baseline)
    se = math.sqrt(ss / df * (1 / n1 + 1 / n2))
    half = t_critical(df) * se
    return Comparison(diff=m1 - m2, se=se, df=df, low=m1 - m2 - half, high=m1 - m2 + half)


def factor_table(rows: Sequence[dict], metrics: Sequence[str], baseline: dict) -> list[dict]:
    """Per factor and value: the seeds' mean ± s.e. of each metric and its `compare` with the baseline's seeds.

    rows: a sweep's rows (`maelib.experiments.sweep.collect`), each with "factor" ("baseline", "reference" or a factor
    name), "value" and the metrics; baseline: the baseline's settings, for the value each factor's baseline row
    shows. -> one dict per (factor, value), the baseline's row first in each factor, the reference last:
    {"factor", "value", "baseline": bool, "n", metric: mean, metric + "_se": s.e., metric + "_values": the
    seeds' values, metric + "_vs_baseline": Comparison or None}, and "learned": how many runs learned (if the
    rows say).
    """
    base = [r for r in rows if r["factor"] == "baseline"]
    groups: dict[str, dict] = {}
    for r in rows:
        if r["factor"] not in ("baseline", "reference"):
            groups.setdefault(r["factor"], {}).setdefault(_key(r["value"]), []).append(r)
    reference = [r for r in rows if r["factor"] == "reference" and r.get("value") is None]  # the baseline's own

    def summary(factor: str, value, runs: list[dict], is_baseline: bool) -> dict:
        row = dict(factor=factor, value=value, baseline=is_baseline, n=len(runs))
        for m in metrics:
            values = [r[m] for r in runs if r.get(m) is not None]
            if not values:
                row.update({m: None, m + "_se": None, m + "_values": [], m + "_vs_baseline": None})
                continue
            row[m], row[m + "_se"] = mean_se(values)
            row[m + "_values"] = values  # one per seed, for later comparisons
            base_values = [r[m] for r in base if r.get(m) is not None]
            row[m + "_vs_baseline"] = (None if is_baseline or len(values) + len(base_values) < 3 or not base_values
                                       else compare(values, base_values))
        if any(r.get("learned") is not None for r in runs):  # trained runs say; a reference does not
            row["learned"] = sum(bool(r.get("learned")) for r in runs)
        return row

    table = []
    for factor, by_value in groups.items():
        if base:
            table.append(summary(factor, baseline.get(factor), base, True))
        table += [summary(factor, runs[0]["value"], runs, False) for runs in by_value.values()]
    if not groups and base:
        table.append(summary("baseline", None, base, True))
    if reference:
        table.append(summary("reference", None, reference, False))
    return table


def _key(value) -> str:
    return repr(value)  # lists and dicts are not hashable; their repr is


def format_table(table: Sequence[dict], metrics: Sequence[str], digits: int = 3) -> str:
    """The `factor_table` as aligned text: mean ± s.e. per metric, then the difference with the baseline and
    whether it is resolved (95% interval excludes zero) or within noise."""
    header = ["factor", "value", "n"] + [h for m in metrics for h in (m, "vs baseline")] + ["learned"]
    lines = [header]
    for row in table:
        cells = [row["factor"], f"{row['value']}" + (" (baseline)" if row["baseline"] else ""), str(row["n"])]
        for m in metrics:
            mean, se, c = row[m], row[m + "_se"], row[m + "_vs_baseline"]
            cells.append("-" if mean is None else f"{mean:.{digits}f}" + ("" if se != se else f" ± {se:.{digits}f}"))
            cells.append("" if c is None else f"{c.diff:+.{digits}f} ± {c.se:.{digits}f} "
                                              f"{'resolved' if c.resolved else 'noise'}")
        cells.append(f"{row['learned']}/{row['n']}" if "learned" in row else "")
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)


def seeds_needed(sd: float, difference: float, max_seeds: int = 1000) -> int:
    """The fewest seeds per group for which a true `difference` between two settings whose runs spread with
    standard deviation `sd` would, if observed exactly, be resolved: t_critical(2n - 2) * sd * sqrt(2 / n) <
    |difference|. (It is resolved only about half of the time then: power is another lesson.)"""
    if sd <= 0 or difference == 0:
        raise ValueError(f"need a positive spread and a non-zero difference, got sd={sd}, difference={difference}")
    for n in range(2, max_seeds + 1):
        if t_critical(2 * n - 2) * sd * math.sqrt(2 / n) < abs(difference):
            return n
    raise ValueError(f"more than {max_seeds} seeds per group would be needed: the difference is lost in the noise")
