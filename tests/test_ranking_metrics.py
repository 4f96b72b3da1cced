"""Ranking metrics (precision, recall, NDCG, MAP at k) against hand-computed cases and a naive loop."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmc.metrics import map_at_k, ndcg_at_k, precision_at_k, recall_at_k

RECOMMENDED = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
RELEVANT = [[2, 4, 9], {5}]


def test_hand_computed_at_4():
    # user 0: hits at positions 2 and 4 of 4; 3 relevant items.  user 1: hit at position 1; 1 relevant.
    np.testing.assert_allclose(precision_at_k(RECOMMENDED, RELEVANT, average=False), [0.5, 0.25])
    np.testing.assert_allclose(recall_at_k(RECOMMENDED, RELEVANT, average=False), [2 / 3, 1.0])
    dcg0 = 1 / math.log2(3) + 1 / math.log2(5)
    idcg0 = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    np.testing.assert_allclose(ndcg_at_k(RECOMMENDED, RELEVANT, average=False), [dcg0 / idcg0, 1.0])
    # AP@4 of user 0: (P@2 + P@4) / min(4, 3) = (1/2 + 2/4) / 3
    np.testing.assert_allclose(map_at_k(RECOMMENDED, RELEVANT, average=False), [1 / 3, 1.0])
    assert precision_at_k(RECOMMENDED, RELEVANT) == pytest.approx(0.375)
    assert map_at_k(RECOMMENDED, RELEVANT) == pytest.approx((1 / 3 + 1) / 2)


def test_hand_computed_cutoff_and_string_ids():
    # k=2 looks at the first two columns only: user 0 hits at position 2
    np.testing.assert_allclose(precision_at_k(RECOMMENDED, RELEVANT, 2, average=False), [0.5, 0.5])
    np.testing.assert_allclose(recall_at_k(RECOMMENDED, RELEVANT, 2, average=False), [1 / 3, 1.0])
    # ideal DCG at k=2 has min(2, 3) = 2 hits
    np.testing.assert_allclose(ndcg_at_k(RECOMMENDED, RELEVANT, 2, average=False),
                               [(1 / math.log2(3)) / (1 + 1 / math.log2(3)), 1.0])
    np.testing.assert_allclose(map_at_k(RECOMMENDED, RELEVANT, 2, average=False), [0.5 / 2, 1.0])
    names = np.array([["a", "b"], ["c", "d"]])
    assert ndcg_at_k(names, [["b"], ["c", "x"]], average=False).tolist() == pytest.approx(
        [(1 / math.log2(3)) / 1.0, 1.0 / (1 + 1 / math.log2(3))])


def test_duplicates_and_foreign_ids_in_relevant():
    # a relevant item listed twice counts once; relevant ids never recommended still count in recall
    assert recall_at_k([[1, 2]], [[1, 1, 7]]) == pytest.approx(0.5)
    # the same item id for two users is two different (user, item) pairs
    np.testing.assert_allclose(precision_at_k([[3, 4], [3, 4]], [[3], [4]], average=False), [0.5, 0.5])


def _naive(recommended, relevant, k):
    out = []
    for row, rel in zip(recommended, relevant):
        rel = set(rel)
        hits = [1.0 if item in rel else 0.0 for item in row[:k]]
        dcg = sum(h / math.log2(i + 2) for i, h in enumerate(hits))
        idcg = sum(1 / math.log2(i + 2) for i in range(min(k, len(rel))))
        ap = sum(sum(hits[:i + 1]) / (i + 1) * h for i, h in enumerate(hits)) / min(k, len(rel))
        out.append((sum(hits) / k, sum(hits) / len(rel), dcg / idcg, ap))
    return np.array(out)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(1, 8), st.integers(0, 10_000))
def test_matches_a_naive_loop(n_users, n_cols, seed):
    rng = np.random.default_rng(seed)
    recommended = np.stack([rng.permutation(12)[:n_cols] for _ in range(n_users)])
    relevant = [rng.choice(12, rng.integers(1, 6), replace=False) for _ in range(n_users)]
    k = int(rng.integers(1, n_cols + 1))
    expected = _naive(recommended, relevant, k)
    for column, metric in enumerate((precision_at_k, recall_at_k, ndcg_at_k, map_at_k)):
        np.testing.assert_allclose(metric(recommended, relevant, k, average=False),
                                   expected[:, column], atol=1e-12)
        assert metric(recommended, relevant, k) == pytest.approx(expected[:, column].mean())


def test_bad_input():
    with pytest.raises(ValueError, match="without relevant items"):
        recall_at_k([[1, 2]], [[]])
    with pytest.raises(ValueError, match="without relevant items"):
        ndcg_at_k([[1, 2]], [[]])
    assert precision_at_k([[1, 2]], [[]]) == 0.0  # precision is defined without relevant items
    with pytest.raises(ValueError, match="k=3 exceeds"):
        precision_at_k([[1, 2]], [[1]], 3)
    with pytest.raises(ValueError, match="positive integer"):
        precision_at_k([[1, 2]], [[1]], 0)
    with pytest.raises(ValueError, match="one collection of relevant items per row"):
        precision_at_k([[1, 2], [3, 4]], [[1]])
    with pytest.raises(ValueError, match="2-D"):
        precision_at_k([1, 2], [[1]])
    with pytest.raises(TypeError, match="one comparable type"):
        precision_at_k([[1, 2]], [["a"]])
