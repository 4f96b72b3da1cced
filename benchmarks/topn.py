"""Top-N recommendation on MovieLens 100K: P@10, R@10, NDCG@10 and fit times.

Protocol (issue 15): train on ``uN.base`` as implicit feedback (who rated
what); a user's relevant items are their ``uN.test`` items rated >= 4;
every training item is ranked for every user with at least one relevant
item, the user's training items excluded.  Rows:

* popularity (number of training ratings);
* PureSVD (truncated SVD of the 0/1 matrix; a few factor counts);
* EASE (closed form; lambda tuned on a validation split of the training data);
* implicit's ALS and BPR when the package imports (optional);
* ``RatingsCompleter`` (defaults; ranks by predicted rating);
* ``InteractionsCompleter`` (its settings chosen on the same validation split).

Tuning never looks at ``uN.test``: 10% of each user's training interactions
(users with >= 5) are held out as a validation split, the candidates are
scored on it (NDCG@10 against the held-out items rated >= 4, all other
training items excluded), and the winner is refitted on the full training
split.

    python benchmarks/topn.py                  # u1..u5: results/topn.json + README section
    python benchmarks/topn.py --quick          # u1 only, fewer candidates, nothing written
    python benchmarks/topn.py --large          # also the synthetic 1e6 x 1e5 step-cost run
    python benchmarks/topn.py --large-only --large-interactions 20000000 --large-steps 5
                                               # that run alone: topn_large.json + README section

Threads are limited to ``--threads`` (default 1) before NumPy is imported.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from movielens import DEFAULT_DATA, limit_threads, write_section  # noqa: E402
SECTION = "topn"
K = 10
RELEVANT_RATING = 4
PURESVD_FACTORS = (10, 20, 50, 100)
EASE_LAMBDAS = (100.0, 250.0, 500.0, 1000.0)


def _parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="ml-100k folder")
    parser.add_argument("--quick", action="store_true", help="u1 only, fewer candidates, no files")
    parser.add_argument("--splits", nargs="*", default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--large", action="store_true",
                        help="also time steps on a synthetic 1e6 x 1e5 matrix with 2e7 interactions")
    parser.add_argument("--large-only", action="store_true")
    parser.add_argument("--large-users", type=int, default=1_000_000)
    parser.add_argument("--large-items", type=int, default=100_000)
    parser.add_argument("--large-interactions", type=int, default=20_000_000,
                        help="interactions drawn for the synthetic matrix (default 2e7)")
    parser.add_argument("--large-rank", type=int, default=16)
    parser.add_argument("--large-steps", type=int, default=5, help="steps timed (default 5)")
    parser.add_argument("--large-svd-solver", default="auto",
                        choices=("auto", "arpack", "randomized"))
    parser.add_argument("--large-compare-svd", action="store_true",
                        help="after the fit, time ARPACK against the randomized solver on G0")
    parser.add_argument("--output", default=str(HERE / "results" / "topn.json"))
    parser.add_argument("--readme", default=str(HERE / "README.md"))
    parser.add_argument("--render-only", action="store_true")
    return parser.parse_args(argv)


# -- data and evaluation --------------------------------------------------------
class Task:
    """A train matrix (0/1, users x training items) and the relevant items per evaluated user."""

    def __init__(self, users, items, ratings, test_users, test_items, test_ratings):
        import numpy as np
        import scipy.sparse as sp

        self.user_ids, rows = np.unique(users, return_inverse=True)
        self.item_ids, cols = np.unique(items, return_inverse=True)
        self.users, self.items, self.ratings = users, items, ratings
        shape = (self.user_ids.size, self.item_ids.size)
        self.X = sp.csr_matrix((np.ones(rows.size), (rows, cols)), shape=shape)
        self.graded = sp.csr_matrix((ratings / ratings.max(), (rows, cols)), shape=shape)
        keep = test_ratings >= RELEVANT_RATING
        t_users, t_items = test_users[keep], test_items[keep]
        known = np.isin(t_users, self.user_ids)
        t_users, t_items = t_users[known], t_items[known]
        self.eval_users = np.unique(t_users)  # users with >= 1 relevant item
        self.eval_rows = np.searchsorted(self.user_ids, self.eval_users)
        order = np.argsort(t_users, kind="stable")
        t_users, t_items = t_users[order], t_items[order]
        bounds = np.searchsorted(t_users, np.stack([self.eval_users, self.eval_users + 1]))
        self.relevant = [t_items[lo:hi] for lo, hi in bounds.T]

    def evaluate(self, scores):
        """P@K, R@K, NDCG@K of a dense (n_eval_users, n_items) score array."""
        import numpy as np

        from dmc.metrics import ndcg_at_k, precision_at_k, recall_at_k

        scores = np.array(scores, dtype=np.float64)
        seen = self.X[self.eval_rows]
        scores[seen.nonzero()] = -np.inf
        top = np.argpartition(-scores, K - 1, axis=1)[:, :K]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, 1), 1,
                                                 kind="stable"), 1)
        ranked = self.item_ids[top]
        return {"precision": precision_at_k(ranked, self.relevant, K),
                "recall": recall_at_k(ranked, self.relevant, K),
                "ndcg": ndcg_at_k(ranked, self.relevant, K)}


def validation_task(users, items, ratings, seed, fraction=0.1):
    """Hold out ``fraction`` of each user's training ratings (users with >= 5): a Task."""
    import numpy as np

    rng = np.random.default_rng(seed)
    held = np.zeros(users.size, bool)
    for user in np.unique(users):
        where = np.flatnonzero(users == user)
        if where.size >= 5:
            n = max(1, int(round(fraction * where.size)))
            held[rng.choice(where, n, replace=False)] = True
    fit = ~held
    return Task(users[fit], items[fit], ratings[fit], users[held], items[held], ratings[held])


def load_task(data, split):
    from dmc.datasets import load_movielens_100k

    d = load_movielens_100k(data, split)
    return Task(d.train.users, d.train.items, d.train.ratings,
                d.test.users, d.test.items, d.test.ratings)


# -- methods: each returns (scores of task.eval_rows, fit seconds) -----------------
def popularity(task, **_):
    import numpy as np

    start = time.perf_counter()
    counts = np.asarray(task.X.sum(axis=0)).ravel()
    return np.tile(counts, (task.eval_rows.size, 1)), time.perf_counter() - start


def puresvd(task, factors, **_):
    import scipy.sparse.linalg as spla

    start = time.perf_counter()
    _, _, vt = spla.svds(task.X, k=factors, random_state=0)
    seconds = time.perf_counter() - start
    return (task.X[task.eval_rows] @ vt.T) @ vt, seconds


def ease(task, lam, graded=False, **_):
    """EASE (Steck 2019) on the 0/1 matrix, or with ``graded`` on rating / 5 (the input
    ``InteractionsCompleter(target="weights")`` fits, so that the two compare on equal terms)."""
    import numpy as np

    start = time.perf_counter()
    X = task.graded if graded else task.X
    G = (X.T @ X).toarray()
    G[np.diag_indices_from(G)] += lam
    P = np.linalg.inv(G)
    B = -P / np.diag(P)
    B[np.diag_indices_from(B)] = 0.0
    seconds = time.perf_counter() - start
    return X[task.eval_rows] @ B, seconds


def ratings_completer(task, seed, **_):
    import warnings

    from dmc import RatingsCompleter

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = RatingsCompleter(random_state=seed).fit(task.users, task.items, task.ratings)
    seconds = time.perf_counter() - start
    rows = task.eval_rows
    scores = (model.row_factors_[rows] @ model.column_factors_.T + model.user_bias_[rows, None]
              + model.item_bias_[None, :])
    return scores, seconds


def interactions_completer(task, seed, params, **_):
    import warnings

    from dmc import InteractionsCompleter

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = InteractionsCompleter(random_state=seed, **params).fit(
            task.users, task.items, task.ratings)
    seconds = time.perf_counter() - start
    return model.user_factors_[task.eval_rows] @ model.item_factors_.T, seconds


def implicit_model(task, kind, seed, **_):
    import numpy as np
    from implicit.als import AlternatingLeastSquares
    from implicit.bpr import BayesianPersonalizedRanking

    model = (AlternatingLeastSquares(factors=64, iterations=15, num_threads=1, random_state=seed)
             if kind == "als" else
             BayesianPersonalizedRanking(factors=64, iterations=100, num_threads=1, random_state=seed))
    start = time.perf_counter()
    model.fit(task.X.tocsr().astype(np.float32), show_progress=False)
    seconds = time.perf_counter() - start
    uf, itf = np.asarray(model.user_factors), np.asarray(model.item_factors)
    return uf[task.eval_rows] @ itf.T, seconds


# the InteractionsCompleter candidates compared on the validation split, one change at a time
INTERACTIONS_BASE = {}  # the estimator's defaults
INTERACTIONS_CANDIDATES = [
    {},
    {"rank": 32},
    {"rank": 96},
    {"popularity_exponent": 0.25},
    {"alpha": 0.5},
]


GRADED = {"target": "weights"}  # fit each interaction to its rating / 5
GRADED_ROW = 'InteractionsCompleter (target="weights")'


def _validation_ndcg(val, seed, params):
    from dmc import DivergenceError

    try:
        return val.evaluate(interactions_completer(val, seed, params)[0])["ndcg"]
    except DivergenceError:
        return float("nan")


def _row(name, task, method, **kwargs):
    scores, seconds = method(task, **kwargs)
    return {"method": name, **task.evaluate(scores), "fit_seconds": seconds}


def run_split(data, split, seed, quick, log=print):
    task = load_task(data, split)
    val = validation_task(task.users, task.items, task.ratings, seed)
    rows, tuning = [], {}
    rows.append(_row("popularity", task, popularity))
    for f in PURESVD_FACTORS:
        rows.append(_row(f"PureSVD({f})", task, puresvd, factors=f))
    val_ease = {lam: val.evaluate(ease(val, lam)[0])["ndcg"] for lam in EASE_LAMBDAS}
    best_lam = max(val_ease, key=val_ease.get)
    tuning["ease_validation_ndcg"] = {str(k): v for k, v in val_ease.items()}
    rows.append(_row(f"EASE(lambda={best_lam:g}, tuned)", task, ease, lam=best_lam))
    val_graded = {lam: val.evaluate(ease(val, lam, graded=True)[0])["ndcg"] for lam in EASE_LAMBDAS}
    best_graded = max(val_graded, key=val_graded.get)
    tuning["ease_graded_validation_ndcg"] = {str(k): v for k, v in val_graded.items()}
    for kind in ("als", "bpr"):
        try:
            rows.append(_row(f"implicit {kind.upper()} (64 factors)", task, implicit_model,
                             kind=kind, seed=seed))
        except ImportError:
            tuning[f"implicit_{kind}"] = "not installed"
    rows.append(_row("RatingsCompleter (defaults)", task, ratings_completer, seed=seed))
    candidates = INTERACTIONS_CANDIDATES[:2] if quick else INTERACTIONS_CANDIDATES
    val_dmc = {}
    for change in candidates:
        params = {**INTERACTIONS_BASE, **change}
        val_dmc[json.dumps(change)] = _validation_ndcg(val, seed, params)
        log(f"  {split} validation {params}: NDCG@10 {val_dmc[json.dumps(change)]:.4f}")
    best = json.loads(max(val_dmc, key=lambda c: -1.0 if val_dmc[c] != val_dmc[c] else val_dmc[c]))
    tuning["interactions_validation_ndcg"] = val_dmc
    rows.append(_row("InteractionsCompleter (defaults)", task, interactions_completer,
                     seed=seed, params=INTERACTIONS_BASE))
    rows.append(_row(f"InteractionsCompleter (tuned: {json.dumps(best)})", task,
                     interactions_completer, seed=seed, params={**INTERACTIONS_BASE, **best}))
    # graded input (the ratings), for both: the binary rows above are the comparison
    rows.append(_row(f"EASE on rating / 5 (lambda={best_graded:g}, tuned)", task, ease,
                     lam=best_graded, graded=True))
    rows.append(_row(GRADED_ROW, task, interactions_completer, seed=seed,
                     params={**INTERACTIONS_BASE, **GRADED}))
    for row in rows:
        log(f"  {split} {row['method']:<52} P@10 {row['precision']:.3f} R@10 {row['recall']:.3f} "
            f"NDCG@10 {row['ndcg']:.3f}  fit {row['fit_seconds']:.2f} s")
    return {"split": split, "n_eval_users": int(task.eval_rows.size), "rows": rows,
            "tuning": tuning}


def synthetic_interactions(m, n, n_interactions, seed):
    """Users uniform, items with Zipf-like popularity (exponent 0.8), duplicates removed.

    Draws 5% more pairs than asked, drops repeats and keeps a random
    ``n_interactions`` of the rest (all of them if fewer).
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, n + 1) ** 0.8
    cdf = np.cumsum(popularity / popularity.sum())
    draw = int(n_interactions * 1.05)  # a few per cent collide and are dropped
    users = rng.integers(0, m, draw, dtype=np.int64)
    items = np.minimum(np.searchsorted(cdf, rng.random(draw)), n - 1).astype(np.int64)
    keys = np.unique(users * n + items)
    # a random subset (the sorted keys' first n_interactions would drop the highest user ids)
    keys = keys[rng.permutation(keys.size)[:n_interactions]]
    return keys // n, keys % n


def compare_svd_solvers(users, items, rank, seed, n_iters=(4, 8)):
    """Time ARPACK and the randomized solver on the estimator's initial gradient.

    The same operator ``G0`` that :class:`dmc.InteractionsCompleter` builds
    (``alpha=0``, no popularity rescaling, ``init_scale=0.1``, depth 3);
    errors of the randomized triplets relative to ARPACK's: the largest
    relative singular-value error over all ``rank`` values and over the top
    4, and the largest principal angle between the top-4 / top-``rank``
    right singular subspaces.
    """
    import numpy as np
    import scipy.linalg as sla

    from dmc import subspace
    from dmc.observations import Observations

    user_ids, rows = np.unique(users, return_inverse=True)
    item_ids, cols = np.unique(items, return_inverse=True)
    shape = (user_ids.size, item_ids.size)
    rng = np.random.default_rng(seed)
    q = subspace.RandomOrthogonal(shape, rng)
    G = subspace.full_initial_gradient(Observations(shape, rows, cols, -np.ones(rows.size)).to_csr(),
                                       q, 0.1**3)
    start = time.perf_counter()
    reference = subspace.top_singular_triplets(G, rank, np.random.default_rng(seed + 1))
    out = {"arpack_seconds": time.perf_counter() - start, "randomized": []}
    for n_iter in n_iters:
        start = time.perf_counter()
        fast = subspace.top_singular_triplets(G, rank, np.random.default_rng(seed + 1),
                                              solver="randomized", n_iter=n_iter)
        seconds = time.perf_counter() - start
        error = np.abs(fast.singular_values - reference.singular_values) / reference.singular_values
        out["randomized"].append({
            "n_iter": n_iter, "seconds": seconds, "max_relative_sv_error": float(error.max()),
            "top4_relative_sv_error": float(error[:4].max()),
            "top4_angle": float(np.max(sla.subspace_angles(reference.right[:, :4], fast.right[:, :4]))),
            "all_angle": float(np.max(sla.subspace_angles(reference.right, fast.right)))})
    return out


def run_large(seed, m=1_000_000, n=100_000, n_interactions=20_000_000, rank=16, steps=5,
              svd_solver="auto", compare_svd=False, log=print):
    """A few steps on a synthetic m x n matrix; per-step time and peak memory (tracemalloc).

    ``init_seconds`` is the fit's time to its first record (id mapping,
    initial gradient, truncated SVD, invariant subspace); the step times are
    the differences between the following records (``record_every=1``).
    """
    import os
    import resource
    import tracemalloc
    import warnings

    from dmc import InteractionsCompleter

    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    users, items = synthetic_interactions(m, n, n_interactions, seed)
    data_seconds = time.perf_counter() - start
    log(f"  large: {users.size:,} interactions drawn in {data_seconds:.1f} s")
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    model = InteractionsCompleter(rank=rank, validation_fraction=0.0, max_iter=steps, record_every=1,
                                  svd_solver=svd_solver, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(users, items)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    times = model.history_["time"]
    per_step = [float(t) for t in (times[1:] - times[:-1])]
    out = {"shape": [int(model.user_ids_.size), int(model.item_ids_.size)],
           "n_interactions": int(users.size), "n_interactions_asked": int(n_interactions),
           "rank": rank, "width": 2 * rank, "steps": steps,
           "svd_solver": model._svd_solver((int(model.user_ids_.size), int(model.item_ids_.size))),
           "svd_n_iter": model.svd_n_iter, "data_seconds": data_seconds,
           "init_seconds": float(times[0]), "step_seconds": per_step,
           "median_step_seconds": float(sorted(per_step)[len(per_step) // 2]),
           "fit_seconds": model.fit_time_, "peak_traced_bytes": int(peak),
           "input_bytes": int(users.nbytes + items.nbytes),
           "max_rss_bytes": int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024,
           "dense_mxn_float64_bytes": 8 * m * n,
           "load_average": [load_before, os.getloadavg()[0]], "cpu_count": os.cpu_count()}
    log(f"  large: init {out['init_seconds']:.1f} s, median step {out['median_step_seconds']:.2f} s, "
        f"peak traced {peak / 2**30:.2f} GiB, max RSS {out['max_rss_bytes'] / 2**30:.2f} GiB")
    if compare_svd:  # after the fit, so that the memory figures above are the fit's own
        del model
        out["svd_comparison"] = compare_svd_solvers(users, items, rank, seed)
        log(f"  large: svd comparison {out['svd_comparison']}")
    return out


def _mean_table(splits):
    import numpy as np

    names = [row["method"] for row in splits[0]["rows"]]
    lines = ["| method | P@10 | R@10 | NDCG@10 | fit s |", "|---|---|---|---|---|"]
    for i, name in enumerate(names):
        rows = [split["rows"][i] for split in splits]
        if any(r["method"].split("(")[0] != name.split("(")[0] for r in rows):
            continue
        label = name
        if len(splits) > 1 and "tuned" in name:  # the tuned choice differs between splits
            label = name.split("(")[0].rstrip() + " (tuned per split)"
        cells = [np.mean([r[key] for r in rows]) for key in ("precision", "recall", "ndcg",
                                                               "fit_seconds")]
        lines.append(f"| {label} | {cells[0]:.3f} | {cells[1]:.3f} | {cells[2]:.3f} | {cells[3]:.2f} |")
    return lines


def _targets_paragraph(splits):
    """Issue 15's targets, read off this run's test splits."""
    import numpy as np

    def ndcg(split, prefix):
        return next(r["ndcg"] for r in split["rows"] if r["method"].startswith(prefix))

    def fit(split, prefix):
        return next(r["fit_seconds"] for r in split["rows"] if r["method"].startswith(prefix))

    ours, tuned = "InteractionsCompleter (defaults)", "InteractionsCompleter (tuned"
    parts = []
    for split in splits:
        puresvd = [r["ndcg"] for r in split["rows"] if r["method"].startswith("PureSVD")]
        mine, ease_ndcg = ndcg(split, ours), ndcg(split, "EASE")
        below = [f for f, v in zip(PURESVD_FACTORS, puresvd) if v >= mine]
        parts.append(f"{split['split']}: {mine:.3f} against EASE's {ease_ndcg:.3f} "
                     f"({'at or above' if mine >= ease_ndcg else 'below'}), "
                     + ("above PureSVD at every factor count" if not below else
                        f"not above PureSVD({', '.join(map(str, below))})")
                     + f", tuned {ndcg(split, tuned):.3f}")
    names = (ours, tuned, "EASE", GRADED_ROW, "EASE on rating")
    mean = {name: np.mean([ndcg(s, name) for s in splits]) for name in names}
    graded = "; ".join(f"{s['split']} {ndcg(s, GRADED_ROW):.3f} against {ndcg(s, 'EASE on rating'):.3f}"
                       for s in splits)
    above_binary = sum(ndcg(s, GRADED_ROW) > ndcg(s, "EASE") for s in splits)
    fits = [fit(s, ours) for s in splits]
    return ("Against the issue's targets, this run (test splits; NDCG@10 of InteractionsCompleter "
            "with its defaults; the standard error of a split's mean NDCG@10 is about 0.012): "
            + "; ".join(parts) + ". "
            + (f"Mean over the {len(splits)} splits: {mean[ours]:.3f} (tuned per split "
               f"{mean[tuned]:.3f}) against EASE's {mean['EASE']:.3f}, "
               f"{100 * (mean[ours] / mean['EASE'] - 1):+.1f}% (stretch target +5%). "
               if len(splits) > 1 else "")
            + f"Fit times of the defaults {min(fits):.1f}-{max(fits):.1f} s (target under 10 s: "
            + ("met" if max(fits) < 10 else "missed") + "). "
            + f"On graded input (rating / 5 for both; `target=\"weights\"` against EASE on the "
            f"same matrix, its lambda tuned on validation): {graded}"
            + (f"; mean {mean[GRADED_ROW]:.3f} against {mean['EASE on rating']:.3f}"
               if len(splits) > 1 else "")
            + f". The graded model is above binary EASE on {above_binary} of {len(splits)} "
            "split(s); the issue's target is read on equal inputs: the binary rows.")


def render_section(results, large=None):
    splits = results["splits"]
    lines = ["## Top-N recommendation (MovieLens 100K)", "",
             "Written by `benchmarks/topn.py` (protocol in its docstring: train `uN.base` as "
             "implicit feedback; relevant = the user's `uN.test` items rated >= 4; all training "
             "items ranked, the user's own excluded; users with >= 1 relevant item). "
             f"Machine: {results['machine']}, {results['threads']} thread(s), seed "
             f"{results['seed']}; shared and loaded, so fit times are indicative only "
             f"(wall time of the whole run {results['wall_seconds'] / 60:.1f} min).", ""]
    u1 = [s for s in splits if s["split"] == "u1"]
    if u1:
        lines += [f"### u1 ({u1[0]['n_eval_users']} users)", ""] + _mean_table(u1) + [""]
    if len(splits) > 1:
        lines += [f"### Mean over {', '.join(s['split'] for s in splits)}", ""]
        lines += _mean_table(splits) + [""]
    lines += ["### Tuning (validation split of the training data only)", "",
              "EASE's lambda and the InteractionsCompleter setting are chosen per split by "
              "NDCG@10 on 10% of each user's training interactions held out; the test split "
              "is never looked at. Validation NDCG@10 per candidate (one change at a time from "
              f"`{json.dumps(INTERACTIONS_BASE)}` and the estimator's defaults):", "",
              "| split | " + " | ".join(f"`{c}`" for c in splits[0]["tuning"]
                                        ["interactions_validation_ndcg"]) + " |",
              "|---|" + "---|" * len(splits[0]["tuning"]["interactions_validation_ndcg"])]
    for split in splits:
        values = split["tuning"]["interactions_validation_ndcg"].values()
        lines.append(f"| {split['split']} | " + " | ".join(f"{v:.4f}" for v in values) + " |")
    for key, what in (("ease_validation_ndcg", "EASE"),
                      ("ease_graded_validation_ndcg", "EASE on rating / 5")):
        lines += ["", f"{what} validation NDCG@10 by lambda: " + "; ".join(
            f"{s['split']}: " + ", ".join(f"{k}: {v:.4f}" for k, v in s["tuning"][key].items())
            for s in splits) + "."]
    lines += [""]
    missing = sorted({k for s in splits for k, v in s["tuning"].items() if v == "not installed"})
    if missing:
        lines += [f"Not run: {', '.join(missing)} (the `implicit` package is not installed).", ""]
    lines += [_targets_paragraph(splits), ""]
    lines += NOTES
    if large is not None:
        lines += ["", "### Scale: a synthetic 1e6 x 1e5 interaction matrix", ""]
        lines += [render_large(large)]
    return "\n".join(lines)


def render_large(large):
    """The scale paragraph of the README from ``topn_large.json``."""
    gib = 2**30
    command = "python benchmarks/topn.py --large-only"
    if large["n_interactions_asked"] != 20_000_000:
        command += f" --large-interactions {large['n_interactions_asked']}"
    if large["steps"] != 5:
        command += f" --large-steps {large['steps']}"
    if large.get("svd_comparison") is not None:
        command += " --large-compare-svd"
    steps = ", ".join(f"{t:.2f}" for t in large["step_seconds"])
    return (
        f"`{command}`: {large['shape'][0]:,} users x {large['shape'][1]:,} items (users that "
        f"drew no interaction are not in the matrix), {large['n_interactions']:,} interactions "
        f"(uniform users, Zipf(0.8) item popularity; drawn in {large['data_seconds']:.0f} s), "
        f"rank {large['rank']} (width {large['width']}), {large['steps']} steps, "
        f"{large['threads']} thread(s), `svd_solver=\"{large['svd_solver']}\"` "
        f"({large['svd_n_iter']} power iterations when randomized). Setup (id mapping, "
        f"matrix-free truncated SVD of the initial gradient, invariant subspace) "
        f"{large['init_seconds']:.0f} s; median step {large['median_step_seconds']:.2f} s "
        f"(steps: {steps} s); peak memory traced by tracemalloc during fit "
        f"{large['peak_traced_bytes'] / gib:.2f} GiB (process max RSS "
        f"{large['max_rss_bytes'] / gib:.2f} GiB, input arrays {large['input_bytes'] / gib:.2f} "
        f"GiB). A dense m x n float64 array would take "
        f"{large['dense_mxn_float64_bytes'] / gib:,.0f} GiB. Machine load (1-minute load "
        f"average) {large['load_average'][0]:.1f} at the start and {large['load_average'][1]:.1f} "
        f"at the end on {large['cpu_count']} cores, so the times are indicative only."
        + _render_svd_comparison(large.get("svd_comparison")))


def _render_svd_comparison(comparison):
    if comparison is None:
        return ""
    runs = "; ".join(
        f"{r['n_iter']} power iterations {r['seconds']:.0f} s, singular values within "
        f"{r['top4_relative_sv_error']:.0e} (top 4) and {r['max_relative_sv_error']:.0e} (all), "
        f"largest principal angle to ARPACK's right subspace {r['top4_angle']:.0e} (top 4) and "
        f"{r['all_angle']:.2f} rad (all)" for r in comparison["randomized"])
    fastest = min(r["seconds"] for r in comparison["randomized"])
    verdict = ("ARPACK was faster than every randomized run here (one CPU thread)"
               if comparison["arpack_seconds"] < fastest else
               "The randomized solver was faster than ARPACK here (one CPU thread)")
    verdict += "."
    return (f" Truncated SVD of the same initial gradient alone (`--large-compare-svd`, same "
            f"process after the fit): ARPACK {comparison['arpack_seconds']:.0f} s; randomized "
            f"with {runs}. " + verdict)


# what was measured while choosing the defaults (u1 validation split, not the test split)
NOTES = [
    "### Notes",
    "",
    "Measured while choosing InteractionsCompleter's defaults, on u1's validation split only "
    "(856 users; NDCG@10; the standard error of a mean NDCG here is about 0.008, so "
    "differences below ~0.01 are not resolved). References on the same split: PureSVD 0.2059 / "
    "0.2107 / 0.1770 / 0.1404 at 10 / 20 / 50 / 100 factors; EASE 0.2140 / 0.2226 / 0.2235 / "
    "0.2196 at lambda 100 / 250 / 500 / 1000. One change at a time:",
    "",
    "* Step size. `lr=\"auto\"` first used `1.5 / depth` (the fully observed spectral step for "
    "the inner factors alone): with `U, V` moving at `gamma=1` that is past the stability limit; "
    "the loss oscillated on MovieLens and diverged on the planted-community test. The auto step "
    "is now `1.5 / ((depth + 2 gamma) w_max)`.",
    "* Constant steps, rank 32 (width 64), record every 10 steps, patience 20: 0.2117 (best at "
    "step 180). Rank 64: 0.2151. `gamma=0` (U, V frozen at the initial subspace): 0.2084; "
    "`gamma=5`: 0.2138. `depth=2`: 0.2113; `init_scale=0.3`: 0.2083. Item-popularity "
    "normalisation of the target (`popularity_exponent=0.25`): 0.2114.",
    "* Confidence weights (WRMF-style, `1 + alpha * w` on interactions): `alpha=1` with the "
    "ratings as `w` had not converged after 1000 steps (0.1948; the auto step shrinks with the "
    "largest weight); with unit `w`, `alpha=0.5`: 0.2121, `alpha=2`: 0.2101. No gain.",
    "* Step rule `\"adaptive\"` (RelativeStep with momentum): 0.2124 at rank 32, best state "
    "at step 50 instead of 180, so about a third of the fit time; rank 64: 0.2175, rank 48: "
    "0.2163; rank 64 with `popularity_exponent=0.25`: 0.2151; `init_scale=0.3`: 0.1992. "
    "Defaults chosen from these: rank 64, `step_rule=\"adaptive\"`, `record_every=5`, "
    "patience 20, refit on all interactions.",
    "* The fitted model is close to a spectrally filtered PureSVD (the target is fully "
    "observed, so `U, V` start at its top singular subspace); early stopping on validation "
    "NDCG picks the filter. It did not resolve a gain over EASE on validation data, whose "
    "item-item model is full rank.",
    "",
    "#### Tried and measured",
    "",
    "Findings of an earlier session whose code was not kept (numbers as it recorded them; "
    "validation = u1's validation split, where EASE reaches 0.2235):",
    "",
    "* Target check: InteractionsCompleter NDCG@10 on u1 0.443 against EASE's 0.448; the "
    "'at least EASE' target is missed.",
    "* Per-user weighting of the loss: worse than the unweighted loss; not kept.",
    "* A closed-form low-rank EDLAE (the denoising item-item model of Steck 2020 restricted to "
    "rank r) reaches EASE's level only near rank 256, four times the default rank budget, so "
    "low rank alone does not close the gap.",
    "* A deep item-item mode of InteractionsCompleter reached validation NDCG@10 0.2173 in "
    "46 s: below EASE on the same split and over the 10 s fit budget; it was removed.",
    "",
    "Stop 23 (u1 validation split, seed 0; test numbers for the record only):",
    "",
    "* Degree-normalised PureSVD (svds of D_u^-a R D_i^-b, scores rescaled by D_i^b; the "
    "low-pass half of GF-CF): best 0.2135 (20 factors, a = 0.5, b = 0.25) and 0.2123 (50 "
    "factors, a = b = 0.5) against 0.2107 plain: no gain that the 0.008 standard error resolves.",
    "* EASE fitted to the residual of the fitted deep model (R - X, zero diagonal, closed "
    "form), scores X + R C: 0.2092 / 0.2175 / 0.2192 / 0.2200 / 0.2192 at lambda 100 / 250 / "
    "500 / 1000 / 2000, against EASE's best 0.2235: not kept.",
    "* Graded target (`target=\"weights\"`, each interaction fitted to its rating / 5): 0.2278 "
    "against 0.2175 binary; fitting ratings >= 4 to 1 and the rest to 0.5 / 0.25 / 0: 0.2290 / "
    "0.2272 / 0.2109 (dropping the low ratings loses: a watched film predicts the next). Kept "
    "as an option, not the default: it needs bounded weights, and EASE gains as much from the "
    "same input (0.2393 at lambda 250), so on equal inputs EASE stays ahead.",
    "",
]


def main(argv=None):
    args = _parse(argv)
    limit_threads(args.threads)
    sys.path.insert(0, str(ROOT))
    if args.render_only:
        return render(args)
    splits = args.splits or (["u1"] if args.quick else ["u1", "u2", "u3", "u4", "u5"])
    start = time.perf_counter()
    results = {"machine": platform.processor() or platform.machine(), "threads": args.threads,
               "seed": args.seed, "k": K, "splits": []}
    if not args.large_only:
        for split in splits:
            results["splits"].append(run_split(args.data, split, args.seed, args.quick))
    if args.large or args.large_only:
        large = (run_large(args.seed, m=20_000, n=2_000, n_interactions=200_000, steps=3)
                 if args.quick else
                 run_large(args.seed, m=args.large_users, n=args.large_items,
                           n_interactions=args.large_interactions, rank=args.large_rank,
                           steps=args.large_steps, svd_solver=args.large_svd_solver,
                           compare_svd=args.large_compare_svd))
        if not args.quick:
            Path(args.output).with_name("topn_large.json").write_text(
                json.dumps({"machine": results["machine"], "threads": args.threads, **large},
                           indent=2) + "\n")
    results["wall_seconds"] = time.perf_counter() - start
    if args.quick:
        return results
    if args.large_only:  # the MovieLens results stay as they are; the README section is redrawn
        if Path(args.output).exists():
            render(args)
        return results
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    render(args)
    return results


def render(args):
    results = json.loads(Path(args.output).read_text())
    large_path = Path(args.output).with_name("topn_large.json")
    large = json.loads(large_path.read_text()) if large_path.exists() else None
    write_section(Path(args.readme), render_section(results, large), SECTION)


if __name__ == "__main__":
    main()
