"""benchmarks/topn.py: the targets paragraph is read off the run's numbers."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
topn = pytest.importorskip("topn")


def _split(name, ours, ease, tuned, puresvd, fit, graded=(0.47, 0.48)):
    rows = [{"method": f"PureSVD({f})", "ndcg": v, "fit_seconds": 0.1}
            for f, v in zip(topn.PURESVD_FACTORS, puresvd)]
    rows += [{"method": "EASE(lambda=500, tuned)", "ndcg": ease, "fit_seconds": 0.3},
             {"method": "InteractionsCompleter (defaults)", "ndcg": ours, "fit_seconds": fit},
             {"method": 'InteractionsCompleter (tuned: {"rank": 96})', "ndcg": tuned,
              "fit_seconds": 2 * fit},
             {"method": "EASE on rating / 5 (lambda=250, tuned)", "ndcg": graded[1], "fit_seconds": 0.3},
             {"method": topn.GRADED_ROW, "ndcg": graded[0], "fit_seconds": fit}]
    return {"split": name, "rows": rows}


def test_targets_paragraph_compares_with_ease_and_puresvd():
    n = len(topn.PURESVD_FACTORS)
    splits = [_split("u1", 0.40, 0.45, 0.41, [0.30] * n, 3.0),
              _split("u2", 0.50, 0.48, 0.52, [0.30] + [0.55] + [0.2] * (n - 2), 12.5)]
    text = topn._targets_paragraph(splits)
    assert "u1: 0.400 against EASE's 0.450 (below), above PureSVD at every factor count, tuned 0.410" in text
    second = topn.PURESVD_FACTORS[1]
    assert f"u2: 0.500 against EASE's 0.480 (at or above), not above PureSVD({second})" in text
    # means 0.450 against 0.465: -3.2%; the slower split misses the 10 s target
    assert "Mean over the 2 splits: 0.450 (tuned per split 0.465) against EASE's 0.465, -3.2%" in text
    assert "Fit times of the defaults 3.0-12.5 s (target under 10 s: missed)" in text
    # graded rows compare with each other; above binary EASE counted per split (0.47 > 0.45, not > 0.48)
    assert "u1 0.470 against 0.480; u2 0.470 against 0.480; mean 0.470 against 0.480" in text
    assert "above binary EASE on 1 of 2 split(s)" in text
    single = topn._targets_paragraph(splits[:1])
    assert "Mean over" not in single and "(target under 10 s: met)" in single
