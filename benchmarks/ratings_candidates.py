"""RatingsCompleter candidates on MovieLens 100K, one change at a time, tuned on validation only.

Each candidate is a set of RatingsCompleter parameters changed from the
defaults (or a seed ensemble of the defaults).  It is scored twice:

* **validation**: fitted on 90% of ``u1.base`` and scored on the other 10%
  (a fixed random carve, seed 123), so choices are made without the test
  split;
* **u1 test**: fitted on all of ``u1.base`` and scored on ``u1.test``, for
  the record once chosen.

Writes ``benchmarks/results/ratings_candidates.json`` and the section
between ``<!-- BEGIN ratings_candidates -->`` and ``<!-- END
ratings_candidates -->`` of ``benchmarks/README.md``.

    python benchmarks/ratings_candidates.py             # all candidates
    python benchmarks/ratings_candidates.py --quick     # two candidates, few steps, no files
    python benchmarks/ratings_candidates.py --only implicit_feedback defaults

Thread pools are limited to one thread (see ``movielens.py``).  Fit times
are from a shared 2-core machine: compare them within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402

from movielens import DEFAULT_DATA, write_section  # noqa: E402

SECTION = "ratings_candidates"
CARVE_SEED, CARVE_FRACTION = 123, 0.1

# the RatingsCompleter defaults before issue 12 (u1 test 0.9209, five-split mean 0.9097):
# every candidate changes these, so the table stays comparable when the defaults move
BASELINE = {"implicit_feedback": False, "gamma": 30.0}
# name -> (parameters changed from the baseline, number of seeds averaged)
CANDIDATES = {
    "baseline (pre-issue-12 defaults)": ({}, 1),
    "implicit_feedback": ({"implicit_feedback": True}, 1),
    "rank 64": ({"rank": 64}, 1),
    "rank 16": ({"rank": 16}, 1),
    "gamma 10": ({"gamma": 10.0}, 1),
    "lr_multiplier 0.05": ({"lr_multiplier": 0.05}, 1),
    "weight_decay 1e-4": ({"weight_decay": 1e-4}, 1),
    "n_iter_no_change 50": ({"n_iter_no_change": 50}, 1),
    "no refit": ({"refit": False}, 1),
    "seed ensemble of 5": ({}, 5),
    "implicit + rank 64 + gamma 10": ({"implicit_feedback": True, "rank": 64, "gamma": 10.0}, 1),
    "implicit + gamma 10": ({"implicit_feedback": True, "gamma": 10.0}, 1),
    "implicit + gamma 10, seed ensemble of 3": ({"implicit_feedback": True, "gamma": 10.0}, 3),
}


def carve(train, seed=CARVE_SEED, fraction=CARVE_FRACTION):
    """Split the training ratings into (fit part, validation part)."""
    rng = np.random.default_rng(seed)
    held = np.zeros(train.ratings.size, bool)
    held[rng.choice(train.ratings.size, int(round(fraction * train.ratings.size)), replace=False)] = True
    part = lambda keep: (train.users[keep], train.items[keep], train.ratings[keep])  # noqa: E731
    return part(~held), part(held)


def score(params, seeds, fit_data, eval_data, quick):
    """RMSE of the seed-averaged predictions, total fit seconds, best_iter of the first seed."""
    from dmc.ratings import RatingsCompleter

    predictions, seconds, best_iter = [], 0.0, None
    for seed in range(seeds):
        model = RatingsCompleter(random_state=seed, **{**BASELINE, **params},
                                 **({"max_iter": 40, "n_iter_no_change": 2} if quick else {}))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = time.perf_counter()
            model.fit(*fit_data)
            seconds += time.perf_counter() - start
        predictions.append(model.predict(eval_data[0], eval_data[1]))
        best_iter = int(model.best_iter_) if best_iter is None else best_iter
    error = np.mean(predictions, axis=0) - eval_data[2]
    return float(np.sqrt(np.mean(error**2))), seconds, best_iter


def render(results):
    lines = [
        "## RatingsCompleter candidates on MovieLens 100K (issue 12)",
        "",
        "One change at a time from the pre-issue-12 defaults (`gamma=30`, no implicit "
        "feedback; the other parameters are today's defaults). **Validation**: fitted on 90% of `u1.base`, "
        f"scored on the other 10% (random carve, seed {CARVE_SEED}): the only number used to "
        "choose. **u1 test**: fitted on all of `u1.base`, scored on `u1.test`, for the record. "
        "Seed ensembles average the predictions of `random_state` 0..n-1; their fit time is the "
        "sum. Single fits with `random_state=0`; seeds of the defaults differ by about 0.001 "
        "(validation 0.9234..0.9250 over seeds 0..4 of the baseline), so smaller differences are noise. Fit "
        f"times: {results['machine']}, shared, one thread; compare within the table. "
        "Regenerate with `python benchmarks/ratings_candidates.py`.",
        "",
        "| candidate | validation RMSE | u1 test RMSE | fit time on u1.base (s) | best step |",
        "|---|---|---|---|---|",
    ]
    for name, row in results["candidates"].items():
        lines.append(f"| {name} | {row['validation_rmse']:.4f} | {row['test_rmse']:.4f} | "
                     f"{row['test_fit_time']:.1f} | {row['best_iter']} |")
    if results.get("notes"):
        lines += ["", *results["notes"]]
    return "\n".join(lines)


NOTES = [
    "Decision rule: a change becomes a default only when its validation gain exceeds the "
    "spread of the baseline over seeds 0..4 (0.0016). Only implicit feedback qualifies "
    "(0.9213 against 0.9234): `implicit_feedback=True` is the new default. `gamma=10` and "
    "rank 64 alone are within that spread. Together on top of implicit feedback they gain "
    "another 0.0020 on validation, but cost 4.3x the baseline's fit time against 1.5x for "
    "implicit feedback alone (one process, alternating, best of 2 on u1.base: 18.1 s, 27.9 s "
    "and 78.6 s with the machine at load 8-11 on 2 cores; the baseline took 8.2 s on a quiet "
    "machine, so the new default needs about 13 s and the larger model about 35 s, over the "
    "30 s budget). They stay options (`RatingsCompleter(rank=64, gamma=10)`), not defaults. "
    "The fit times in the table were taken under changing load: compare the ratio above.",
    "",
    "Scratch experiments on the same validation carve (single fits, random_state=0, not "
    "rerun by this script):",
    "",
    "| experiment | validation RMSE | reference |",
    "|---|---|---|",
    "| implicit-feedback step 1 x that of U, V | 0.9246 | 0.9213 at 0.3 (chosen) |",
    "| implicit-feedback step 0.1 x / 0.03 x | 0.9216 / 0.9225 | 0.9213 at 0.3 |",
    "| implicit-feedback step 10 x | diverged | |",
    "| user side information (age bucket, gender, occupation one-hot from `u.user`, added "
    "to the user factor like the implicit term, weight 0.05) | 0.9213 | 0.9213 without |",
    "| the same, weight 0.3 | 0.9945 (unstable) | |",
    "| count-weighted L2 on the end-to-end user factors, 1e-3 (implicit, gamma 10, "
    "n_iter_no_change 30) | 0.9195 | 0.9206 without: within noise |",
    "| the same, 1e-2 | 0.9262 | |",
    "| item-side mirror of implicit feedback (an item's factor plus the users who rated "
    "it, step 0.3 x) | 0.9184 (seed 0), 0.9609 (seed 1) | 0.9213: unstable, rejected |",
    "| the same, step 0.5 x / 0.2 x / 0.1 x | 0.9164 / diverged / 1.0180 | |",
    "| DeepMatrixCompleter-style weight decay 1e-3 on the deep factors | 0.9503 | 0.9234 |",
    "| init_scale 0.3 | 0.9537 | 0.9234 |",
    "",
    "Item genres and an item-kNN correction of the residuals were tried after this table "
    "(section \"MovieLens 100K\" above, its notes). "
    "Not tried: a rating-scale-aware loss (predictions are clipped to [1, 5] "
    "already), the step rules of `dmc/steps.py` (RatingsCompleter trains with constant "
    "per-factor steps). The issue's targets (u1 <= 0.900, five-split mean <= 0.895) are not "
    "met: see the MovieLens table above for where the new defaults land.",
]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="*", default=None, help="candidate names (default all)")
    parser.add_argument("--output", default=str(HERE / "results" / f"{SECTION}.json"))
    parser.add_argument("--readme", default=str(HERE / "README.md"))
    parser.add_argument("--render-only", action="store_true",
                        help="rewrite the README section from the existing JSON")
    args = parser.parse_args(argv)
    if args.render_only:
        results = json.loads(Path(args.output).read_text())
        results["notes"] = NOTES
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
        write_section(Path(args.readme), render(results), name=SECTION)
        return results
    from dmc.datasets import load_movielens_100k

    data = load_movielens_100k(args.data, "u1")
    fit_part, validation = carve(data.train)
    full = (data.train.users, data.train.items, data.train.ratings)
    test = (data.test.users, data.test.items, data.test.ratings)
    names = list(CANDIDATES)[:2] if args.quick else (args.only or list(CANDIDATES))
    unknown = sorted(set(names) - set(CANDIDATES))
    if unknown:
        raise SystemExit(f"unknown candidate(s) {unknown}; choose from {list(CANDIDATES)}")
    import platform
    results = {"machine": platform.processor() or platform.machine(), "candidates": {},
               "carve": {"seed": CARVE_SEED, "fraction": CARVE_FRACTION}, "notes": NOTES}
    out = Path(args.output)
    if args.only and out.exists():  # rerun some rows, keep the others
        results["candidates"] = json.loads(out.read_text())["candidates"]
    for name in names:
        params, seeds = CANDIDATES[name]
        val_rmse, _, _ = score(params, seeds, fit_part, validation, args.quick)
        test_rmse, seconds, best_iter = score(params, seeds, full, test, args.quick)
        results["candidates"][name] = {"params": params, "seeds": seeds, "validation_rmse": val_rmse,
                                       "test_rmse": test_rmse, "test_fit_time": seconds,
                                       "best_iter": best_iter}
        print(f"{name:45s} validation {val_rmse:.4f}  u1 test {test_rmse:.4f}  "
              f"fit {seconds:.1f}s  best step {best_iter}", flush=True)
    results["candidates"] = {n: results["candidates"][n] for n in CANDIDATES
                             if n in results["candidates"]}
    if args.quick:
        return results
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    write_section(Path(args.readme), render(results), name=SECTION)
    print(f"wrote {out} and the {SECTION} section of {args.readme}")
    return results


if __name__ == "__main__":
    main()
