"""The shared number formatting of every evaluation report (``report.pct`` / ``ci_text``)."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from xmodelkd_ros.evaluation.report import ci_text, interval_text, pct

fractions = st.floats(min_value=-1.0, max_value=1.0, allow_nan=False)


@given(fractions, st.booleans())
def test_pct_reads_back_as_the_fraction_in_points(v: float, sign: bool) -> None:
    text = pct(v, sign)
    assert abs(float(text) - 100 * v) <= 0.05 + 1e-9
    assert text.startswith(("+", "-")) if sign else not text.startswith("+")


def test_missing_or_non_finite_values_read_na() -> None:
    assert pct(None) == pct(math.nan) == pct(math.inf, True) == "n/a"
    assert interval_text(None) == interval_text([0.1, None]) == interval_text([]) == "n/a"
    assert ci_text({"mean": None, "ci95": [None, None]}) == "n/a"
    assert ci_text({"mean": 0.01, "ci95": [None, 0.02]}) == "n/a"


@given(fractions, fractions, fractions)
def test_ci_text_is_the_signed_mean_then_its_signed_interval(m: float, a: float, b: float) -> None:
    lo, hi = min(a, b), max(a, b)
    text = ci_text({"mean": m, "ci95": [lo, hi]})
    assert text == f"{pct(m, True)} [{pct(lo, True)}, {pct(hi, True)}]"
    assert interval_text([lo, hi]) == f"[{pct(lo)}, {pct(hi)}]"
