"""maelib.experiments.stats: mean ± s.e., the pooled comparison with the baseline, and the per-factor table."""

import math
import random

import pytest

from maelib.experiments.stats import compare, factor_table, format_table, holm, mean_se, t_critical, t_pvalue


def test_mean_se_by_hand():
    mean, se = mean_se([1.0, 2.0, 3.0, 6.0])
    assert mean == 3.0 and se == pytest.approx(math.sqrt(14 / 3 / 4))
    assert math.isnan(mean_se([5.0])[1])
    with pytest.raises(ValueError, match="at least one"):
        mean_se([])


def test_compare_by_hand_and_t_table():
    c = compare([0.74, 0.75, 0.73], [0.71, 0.73, 0.70])
    pooled = math.sqrt((0.0002 + 0.00046667) / 4)  # sums of squares over n1 + n2 - 2
    assert c.diff == pytest.approx(0.0266667, abs=1e-6) and c.df == 4
    assert c.se == pytest.approx(pooled * math.sqrt(2 / 3), rel=1e-4)
    assert c.low == pytest.approx(c.diff - 2.776 * c.se) and c.low < 0 < c.high and not c.resolved
    assert compare([0.75, 0.76, 0.74], [0.70, 0.71, 0.69]).resolved
    assert t_critical(1) == 12.706 and t_critical(1000) == pytest.approx(1.96, abs=0.01)
    assert not compare([0.70, 0.74], [0.71, 0.73]).resolved
    with pytest.raises(ValueError, match="run more seeds"):
        compare([0.7], [0.71])


def test_the_interval_covers_the_true_difference_95_percent_of_the_time():
    """Coverage by simulation: seeds drawn from two normals whose means differ by 0.01."""
    rng = random.Random(0)
    trials, covered = 2000, 0
    for _ in range(trials):
        a = [rng.gauss(0.71, 0.01) for _ in range(3)]
        b = [rng.gauss(0.70, 0.01) for _ in range(3)]
        c = compare(a, b)
        covered += c.low <= 0.01 <= c.high
    assert 0.93 < covered / trials < 0.97


def test_factor_table_rows_and_text():
    rows = [dict(factor="baseline", value=None, seed=s, knn_acc=0.70 + 0.01 * s, learned=True) for s in range(3)]
    rows += [dict(factor="mask_ratio", value=0.25, seed=s, knn_acc=0.60 + 0.01 * s, learned=s > 0) for s in range(3)]
    rows += [dict(factor="reference", value=None, seed=0, knn_acc=0.55)]
    table = factor_table(rows, ["knn_acc"], baseline={"mask_ratio": 0.75})
    assert [(r["factor"], r["value"], r["baseline"]) for r in table] == [
        ("mask_ratio", 0.75, True), ("mask_ratio", 0.25, False), ("reference", None, False)]
    low = table[1]
    assert low["knn_acc"] == pytest.approx(0.61) and low["knn_acc_vs_baseline"].diff == pytest.approx(-0.10)
    assert low["knn_acc_vs_baseline"].resolved and low["learned"] == 2
    text = format_table(table, ["knn_acc"])
    assert "0.75 (baseline)" in text and "-0.100 ± 0.008 resolved" in text and "2/3" in text


def test_p_values_equal_scipys_t_test():
    from scipy import stats as sp

    rng = random.Random(0)
    for n1, n2 in [(3, 3), (3, 5), (6, 4)]:
        a = [rng.gauss(0.7, 0.02) for _ in range(n1)]
        b = [rng.gauss(0.72, 0.03) for _ in range(n2)]
        assert compare(a, b).p == pytest.approx(sp.ttest_ind(a, b, equal_var=True).pvalue, rel=1e-9)
    for t, df in [(0.0, 4), (2.776, 4), (-10.0, 2), (1.5, 30)]:
        assert t_pvalue(t, df) == pytest.approx(2 * sp.t.sf(abs(t), df), rel=1e-9)
    assert t_pvalue(2.776, 4) == pytest.approx(0.05, abs=1e-4)  # the table's critical value is 5% two-sided


def test_holm_is_the_step_down_procedure():
    """Against Holm's definition: reject the i-th smallest p-value (1-based) at level alpha when it and every smaller
    one satisfy p_(j) <= alpha / (m - j + 1); the adjusted p-values reject exactly those, at every alpha."""
    from scipy import stats as sp

    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([]) == [] and holm([0.5]) == [0.5] and holm([0.6, 0.9]) == [1.0, 1.0]
    rng = random.Random(1)
    for _ in range(200):
        m = rng.randint(1, 12)
        # p-values of real t tests (scipy), some differences true, some not
        p = [sp.ttest_ind([rng.gauss(d, 1) for _ in range(3)], [rng.gauss(0, 1) for _ in range(3)]).pvalue
             for d in (rng.choice([0.0, 0.0, 3.0]) for _ in range(m))]
        adjusted = holm(p)
        order = sorted(range(m), key=lambda i: p[i])
        for alpha in (0.01, 0.05, 0.1, 0.2):
            rejected, still = set(), True
            for j, i in enumerate(order, 1):
                still = still and p[i] <= alpha / (m - j + 1)
                if still:
                    rejected.add(i)
            assert {i for i in range(m) if adjusted[i] <= alpha} == rejected
        assert all(a >= q for a, q in zip(adjusted, p)) and all(a <= 1 for a in adjusted)


def test_accuracy_gap_combines_the_two_binomial_errors():
    from maelib.experiments.stats import accuracy_gap

    gap, half = accuracy_gap(0.8, 0.7, 1000)
    assert gap == pytest.approx(0.1) and half == pytest.approx(1.96 * math.sqrt((0.8 * 0.2 + 0.7 * 0.3) / 1000))
    assert accuracy_gap(0.5, 0.5, 4000)[1] < accuracy_gap(0.5, 0.5, 1000)[1]  # more images, a narrower interval
    with pytest.raises(ValueError, match="at least one test image"):
        accuracy_gap(0.5, 0.5, 0)
