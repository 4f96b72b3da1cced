"""RatingsCompleter: warm start, fold-in of new users, implicit feedback."""

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import dmc.ratings
from dmc.ratings import RatingsCompleter, _carried_over, implicit_matrix
from dmc.solver import ConvergenceWarning

M_USERS, N_ITEMS = 30, 25


@pytest.fixture(scope="module")
def ratings():
    """Half of a rank-2 ratings matrix around 3, with a little noise, as triplets."""
    rng = np.random.default_rng(0)
    R = 3 + rng.standard_normal((M_USERS, 2)) @ rng.standard_normal((N_ITEMS, 2)).T
    R += 0.1 * rng.standard_normal(R.shape)
    users, items = np.nonzero(rng.random(R.shape) < 0.5)
    return users, items, R[users, items]


def _fit(data, **kw):
    # the deep model alone; fold-in with the kNN correction: test_ratings_neighbours.py
    params = dict(rank=3, validation_fraction=0.0, max_iter=100, random_state=0, neighbours=0,
                  user_neighbours=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return RatingsCompleter(**{**params, **kw}).fit(*data)


# -- warm start -----------------------------------------------------------------------------
@pytest.mark.parametrize("implicit", [False, True])
def test_warm_start_continues_where_the_fit_stopped(ratings, implicit):
    """100 steps, then 50 more with warm_start, are the 150 steps of one run."""
    longer = _fit(ratings, max_iter=150, implicit_feedback=implicit)
    model = _fit(ratings, max_iter=100, implicit_feedback=implicit)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.set_params(warm_start=True, max_iter=50).fit(*ratings)
    for name in ("row_factors_", "column_factors_", "user_bias_", "item_bias_", "implicit_factors_"):
        np.testing.assert_allclose(getattr(model, name), getattr(longer, name), rtol=1e-12, atol=1e-14)
    fresh = _fit(ratings, max_iter=50, implicit_feedback=implicit)  # what a cold start gives
    assert not np.allclose(fresh.row_factors_, longer.row_factors_, atol=1e-3)


def test_warm_start_survives_save_and_load(ratings, tmp_path):
    longer = _fit(ratings, max_iter=150)
    path = _fit(ratings, max_iter=100).save(tmp_path / "r.npz")
    model = RatingsCompleter.load(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.set_params(warm_start=True, max_iter=50).fit(*ratings)
    np.testing.assert_allclose(model.row_factors_, longer.row_factors_, rtol=1e-12, atol=1e-14)


def test_carried_over_keeps_known_ids_and_starts_new_ones_at_zero():
    state = {"shift": 0, "mu": 3.0, "scale": 2.0, "inner": [np.eye(2)],
             "left": np.array([[1.0, 2.0], [3.0, 4.0]]), "user_bias": np.array([0.5, -0.5]),
             "right": np.array([[5.0, 6.0], [7.0, 8.0]]), "item_bias": np.array([0.1, 0.2]),
             "implicit": None}
    # user "b" stays, "a" leaves, "c" arrives; item 20 stays (now second), 5 arrives first
    carried = _carried_over((state, np.array(["a", "b"]), np.array([10, 20])),
                            np.array(["b", "c"]), np.array([5, 20]), 0)
    np.testing.assert_array_equal(carried["left"], [[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_array_equal(carried["user_bias"], [-0.5, 0.0])
    np.testing.assert_array_equal(carried["right"], [[0.0, 0.0], [7.0, 8.0]])
    np.testing.assert_array_equal(carried["item_bias"], [0.0, 0.2])
    assert carried["mu"] == 3.0 and carried["scale"] == 2.0 and carried["implicit"] is None


def test_warm_start_on_new_users_and_items(ratings):
    users, items, values = ratings
    old = (users < 25) & (items < 20)
    model = _fit((users[old], items[old], values[old]), max_iter=300)
    before = model.predict(users[old], items[old])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.set_params(warm_start=True, max_iter=1).fit(*ratings)
    assert model.user_ids_.size == M_USERS and model.item_ids_.size == N_ITEMS
    cold = _fit(ratings, max_iter=1)
    # one step from the carried-over state keeps what was learned; a fresh start has not
    warm_change = np.abs(model.predict(users[old], items[old]) - before).mean()
    cold_change = np.abs(cold.predict(users[old], items[old]) - before).mean()
    assert warm_change < 0.25 * cold_change


@pytest.mark.parametrize("change", [{"rank": 4}, {"depth": 4}, {"implicit_feedback": False}])
def test_warm_start_with_another_model_raises(ratings, change):
    model = _fit(ratings, max_iter=10)
    with pytest.raises(ValueError, match="warm_start"):
        model.set_params(warm_start=True, **change).fit(*ratings)


# -- fold-in ----------------------------------------------------------------------------------
def _lstsq_fold_in(model, items, values, penalty):
    """The fold-in problem solved independently: ridge as an augmented least-squares system."""
    c = np.searchsorted(model.item_ids_, items)
    V = model.column_factors_[c]
    z = model.implicit_factors_[c].sum(axis=0) / np.sqrt(c.size)
    k = V.shape[1]
    design = np.vstack([np.hstack([V, np.ones((c.size, 1))]),
                        np.hstack([np.sqrt(penalty) * np.eye(k), np.zeros((k, 1))]),
                        np.hstack([np.zeros((1, k)), [[np.sqrt(model.bias_penalty)]]])])
    target = np.concatenate([values - model.global_mean_ - model.item_bias_[c] - V @ z,
                             np.zeros(k + 1)])
    solution = np.linalg.lstsq(design, target, rcond=None)[0]
    return solution[:k] + z, solution[k]


@pytest.mark.parametrize("implicit", [False, True])
@pytest.mark.parametrize("penalty", [1e-3, 1.0, 30.0])
def test_fold_in_solves_the_ridge_problem(ratings, implicit, penalty):
    model = _fit(ratings, max_iter=200, implicit_feedback=implicit)
    items, values = np.array([3, 7, 11, 2, 19]), np.array([5.0, 1.0, 4.0, 3.5, 2.0])
    row, bias = model.fold_in(items, values, penalty=penalty)
    expected_row, expected_bias = _lstsq_fold_in(model, items, values, penalty)
    np.testing.assert_allclose(row, expected_row, rtol=1e-8, atol=1e-10)
    assert bias == pytest.approx(expected_bias, rel=1e-8, abs=1e-10)


def test_fold_in_recovers_a_planted_user(ratings):
    """A user whose ratings the model reproduces exactly, with every item rated: fold-in
    (penalty near 0) finds that user's factor and bias to 1e-6."""
    model = _fit(ratings, max_iter=200, biases=True)
    rng = np.random.default_rng(3)
    x, b = rng.standard_normal(model.column_factors_.shape[1]), 0.4
    values = model.global_mean_ + b + model.item_bias_ + model.column_factors_ @ x
    model.bias_penalty = 1e-12  # no shrinkage of the bias either
    row, bias = model.fold_in(model.item_ids_, values, penalty=1e-12)
    np.testing.assert_allclose(row, x, atol=1e-6)
    assert bias == pytest.approx(b, abs=1e-6)


def test_recommend_for_ratings_ranks_the_folded_in_scores(ratings):
    model = _fit(ratings, max_iter=200)
    items, values = np.array([0, 4, 9]), np.array([5.0, 4.0, 1.0])
    row, bias = model.fold_in(items, values)
    scores = {item: model.global_mean_ + bias + model.item_bias_[j] + model.column_factors_[j] @ row
              for j, item in enumerate(model.item_ids_) if item not in items}
    expected = sorted(scores, key=lambda item: -scores[item])[:5]
    top, top_scores = model.recommend_for_ratings(items, values, 5)
    assert top.tolist() == expected
    np.testing.assert_allclose(top_scores, [scores[i] for i in expected], rtol=1e-12)
    everything, _ = model.recommend_for_ratings(items, values, 100, exclude_rated=False)
    assert everything.size == N_ITEMS and set(items) <= set(everything.tolist())


@pytest.mark.parametrize("call, match", [
    (lambda m: m.fold_in([999], [3.0]), "unknown item"),
    (lambda m: m.fold_in([1, 1], [3.0, 4.0]), "more than once"),
    (lambda m: m.fold_in([1, 2], [3.0]), "equally long"),
    (lambda m: m.fold_in(np.array([], int), []), "not empty"),
    (lambda m: m.fold_in([1], [np.nan]), "finite"),
    (lambda m: m.fold_in([1], [3.0], penalty=0.0), "penalty"),
    (lambda m: m.recommend_for_ratings([1], [3.0], k=0), "k must"),
])
def test_fold_in_bad_input_raises(ratings, call, match):
    model = _fit(ratings, max_iter=20)
    with pytest.raises(ValueError, match=match):
        call(model)


@pytest.mark.parametrize("param", ["implicit_feedback", "warm_start"])
def test_bool_parameters_are_checked(ratings, param):
    with pytest.raises(TypeError, match=param):
        RatingsCompleter(**{param: "yes"}).fit(*ratings)


# -- implicit feedback ------------------------------------------------------------------------
def test_implicit_matrix_by_hand():
    N = implicit_matrix(np.array([0, 0, 0, 0, 2]), np.array([0, 1, 2, 3, 1]), (3, 4)).toarray()
    np.testing.assert_allclose(N, [[0.5, 0.5, 0.5, 0.5], [0, 0, 0, 0], [0, 1.0, 0, 0]])


def test_implicit_gradient_matches_finite_differences(ratings, monkeypatch):
    """The gradient of the training loss in the implicit item factors Y, against central
    differences of the loss, at a state where everything is nonzero."""
    captured = {}
    real = dmc.ratings.gradient_descent

    def capture(state, loss_and_gradients, *args, **kw):
        captured["state"], captured["f"] = state, loss_and_gradients
        return real(state, loss_and_gradients, *args, **kw)

    monkeypatch.setattr(dmc.ratings, "gradient_descent", capture)
    _fit(ratings, max_iter=30, implicit_feedback=True)
    state, f = captured["state"].copy(), captured["f"]
    state.implicit[:] = 0.05 * np.random.default_rng(1).standard_normal(state.implicit.shape)
    _, grads = f(state)
    h = 1e-6
    for j, c in [(0, 0), (3, 2), (10, 5), (24, 1)]:
        plus, minus = state.copy(), state.copy()
        plus.implicit[j, c] += h
        minus.implicit[j, c] -= h
        numeric = (float(f(plus)[0]) - float(f(minus)[0])) / (2 * h)
        assert grads.implicit[j, c] == pytest.approx(numeric, rel=1e-5, abs=1e-9)


def test_implicit_row_factors_include_the_rated_items(ratings):
    """row_factors_ = scale (U + N Y) Wt_L..Wt_1, recomputed from the training state."""
    model = _fit(ratings, max_iter=60, implicit_feedback=True)
    state = model._state
    users, items, _ = ratings
    N = np.zeros((M_USERS, N_ITEMS))
    for u in range(M_USERS):
        rated = items[users == u]
        N[u, rated] = 1 / np.sqrt(rated.size)
    product = np.linalg.multi_dot(state["inner"][::-1])
    expected = state["scale"] * (state["left"] + N @ state["implicit"]) @ product
    np.testing.assert_allclose(model.row_factors_, expected, rtol=1e-10, atol=1e-12)
    assert np.abs(state["implicit"]).max() > 0  # Y was trained


# -- the candidates benchmark ------------------------------------------------------------------
REPO = Path(__file__).resolve().parent.parent
ML100K = REPO.parent / "shared" / "data" / "ml-100k"


@pytest.mark.skipif(not (ML100K / "u1.base").is_file(), reason=f"MovieLens 100K not at {ML100K}")
def test_candidates_benchmark_quick_mode_runs(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "ratings_candidates.py"), "--quick",
         "--data", str(ML100K), "--output", str(tmp_path / "r.json"),
         "--readme", str(tmp_path / "README.md")],
        capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "validation" in result.stdout and "u1 test" in result.stdout
    assert not (tmp_path / "r.json").exists()  # --quick writes nothing
