"""benchmarks/approximate_low_rank.py: the summary sentence is read off the run's numbers."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
alr = pytest.importorskip("approximate_low_rank")

OURS = "dmc defaults, early stopping"


def _entry(problem, ours, peers):
    methods = {OURS: {"available": True, "error": ours}, "dmc adaptive": {"available": True, "error": 0.01}}
    for name, err in peers.items():
        methods[name] = ({"available": False, "reason": "not installed"} if err is None
                         else {"available": True, "error": err})
    return {"problem": problem, "methods": methods}


def test_summary_compares_with_the_best_available_peer_only():
    results = [_entry("a", 0.10, {"SoftImpute": 0.20, "IterativeSVD": 0.15}),
               _entry("b", 0.30, {"SoftImpute": 0.25, "IterativeSVD": None}),
               _entry("c", 0.05, {"SoftImpute": None, "IterativeSVD": None})]
    text = alr.summary(results)
    # the other dmc row (0.01) is not a peer; the unavailable peer and the matrix without peers do not count
    assert "at or below it on 1 of 2: a (0.100 against IterativeSVD 0.150)" in text
    assert "Above it on b (0.300 against SoftImpute 0.250)" in text
    assert alr.summary([results[2]]) == "No peer ran, so there is no comparison."


def test_matrices_are_approximately_low_rank():
    # a decaying tail: not exactly low rank, but most of the energy in the first directions
    for label, M, noise in alr.problems(quick=True):
        s = np.linalg.svd(M, compute_uv=False)
        tail = np.sqrt(np.sum(s[alr.RANK:] ** 2) / np.sum(s**2))
        assert 0 < tail < 0.2, label
        assert s[alr.RANK] > 1e-8 * s[0], label  # not exactly rank RANK
