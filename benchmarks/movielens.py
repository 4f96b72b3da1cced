"""MovieLens 100K: held-out RMSE/MAE and fit time of dmc against two peers.

Runs :class:`dmc.ratings.RatingsCompleter` (defaults; ``dmc-no-knn`` without
the item-kNN correction, ``dmc-genres`` with u.item's genres as item
features), scikit-surprise ``SVD``
(defaults), ``SVDpp`` (defaults) and ``KNNBaseline`` (item-based,
pearson_baseline), and cmfrec ``CMF`` (k=10, lambda=10, the reference config;
also with ``add_implicit_features=True``, an implicit-feedback peer) on the
official splits u1..u5 in one process, writes
``benchmarks/results/movielens.json`` and regenerates only the section of
``benchmarks/README.md`` between ``<!-- BEGIN movielens -->`` and
``<!-- END movielens -->``.

    python benchmarks/movielens.py                 # five splits
    python benchmarks/movielens.py --quick         # u1 only, few iterations, no files written
    python benchmarks/movielens.py --data PATH     # ml-100k folder (default ../shared/data/ml-100k)

Thread pools are limited to ``--threads`` (default 1) before NumPy is
imported: on a small shared machine BLAS and Numba thread pools oversubscribe
the cores and a step of the 943 x 1682 problem slows from ~4 ms to ~100 ms.
Peers that are missing are skipped and reported as such.  Without
scikit-surprise in this interpreter the script re-runs itself under the peers
venv ``$DMC_PEERS_VENV`` (default ``/tmp/dmc-peers-venv``) when that has it
(e.g. ``python -m venv /tmp/dmc-peers-venv && /tmp/dmc-peers-venv/bin/pip
install scikit-surprise cmfrec pandas numpy scipy numba array-api-compat
threadpoolctl``).  ``--methods surprise-svdpp ...`` reruns some rows only.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "ml-100k"
SECTION = "movielens"


def limit_threads(n):
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(n)


def _parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="ml-100k folder")
    parser.add_argument("--quick", action="store_true",
                        help="u1 only, few iterations, results not written")
    parser.add_argument("--splits", nargs="*", default=None, help="default u1..u5 (u1 with --quick)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-peers", action="store_true", help="dmc only")
    parser.add_argument("--methods", nargs="*", default=None,
                        help="run only these methods and keep the other rows of the existing "
                             "results file (same splits); default all")
    parser.add_argument("--output", default=str(HERE / "results" / "movielens.json"))
    parser.add_argument("--readme", default=str(HERE / "README.md"))
    parser.add_argument("--render-only", action="store_true",
                        help="rewrite the README section from the existing JSON")
    return parser.parse_args(argv)


def dmc_config(quick=False):
    """The RatingsCompleter settings benchmarked (its defaults, unless quick)."""
    return {"max_iter": 60, "n_iter_no_change": 3} if quick else {}


# where run_dmc_genres reads u.item and run_dmc_timestamps the split (main sets both)
_DATA = {"path": DEFAULT_DATA, "split": "u1"}


def run_dmc(train, test, seed, quick, *, fit_params=None, predict_params=None, **params):
    import warnings

    from dmc.ratings import RatingsCompleter

    model = RatingsCompleter(random_state=seed, **dmc_config(quick), **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # --quick stops at max_iter on purpose
        model.fit(*train, **(fit_params or {}))
    pred = model.predict(test.users, test.items, **(predict_params or {}))
    extra = {"n_iter": int(model.n_iter_), "best_iter": int(model.best_iter_)}
    if params or fit_params:
        extra["config"] = ", ".join([f"{k}={v!r}" for k, v in params.items()]
                                    + [f"fit({k}=...)" for k in fit_params or {}])
    return pred, model.fit_time_, extra


def run_dmc_no_knn(train, test, seed, quick):
    """dmc without the kNN corrections of the residuals (the defaults before them)."""
    return run_dmc(train, test, seed, quick, neighbours=0, user_neighbours=0)


def run_dmc_genres(train, test, seed, quick):
    """dmc with the 19 genre flags of u.item as item features (opt-in)."""
    from dmc.datasets import load_movielens_100k_genres

    genres = load_movielens_100k_genres(_DATA["path"])
    return run_dmc(train, test, seed, quick, fit_params={"item_features": genres})


def run_dmc_timestamps(train, test, seed, quick):
    """dmc with the ratings' timestamps: user-day biases (opt-in: fit and predict get them)."""
    from dmc.datasets import load_movielens_100k_timestamps

    stamps = load_movielens_100k_timestamps(_DATA["path"], _DATA["split"])
    return run_dmc(train, test, seed, quick, fit_params={"timestamps": stamps.train},
                   predict_params={"timestamps": stamps.test})


def run_surprise(train, test, seed, quick):
    import time

    import numpy as np
    import pandas as pd
    from surprise import SVD, Dataset, Reader

    frame = pd.DataFrame({"u": train.users, "i": train.items, "r": train.ratings})
    trainset = Dataset.load_from_df(frame, Reader(rating_scale=(1, 5))).build_full_trainset()
    start = time.perf_counter()
    algo = SVD(random_state=seed, **({"n_epochs": 2} if quick else {})).fit(trainset)
    elapsed = time.perf_counter() - start
    pred = np.array([algo.predict(u, i).est for u, i in zip(test.users, test.items)])
    return pred, elapsed, {"config": "SVD() defaults" + (", n_epochs=2" if quick else "")}


def run_cmfrec(train, test, seed, quick):
    import time

    import numpy as np
    import pandas as pd
    from cmfrec import CMF

    frame = pd.DataFrame({"UserId": train.users, "ItemId": train.items, "Rating": train.ratings})
    start = time.perf_counter()
    model = CMF(k=10, lambda_=10, random_state=seed, verbose=False, nthreads=1,
                **({"niter": 2} if quick else {})).fit(frame)
    elapsed = time.perf_counter() - start
    pred = model.predict(test.users, test.items)
    pred = np.clip(np.where(np.isfinite(pred), pred, train.ratings.mean()), 1, 5)
    return pred, elapsed, {"config": "CMF(k=10, lambda_=10), predictions clipped to [1, 5]"
                           + (", niter=2" if quick else "")}


def _surprise_fit(train, algo):
    """Fit a scikit-surprise algorithm on the training ratings; (algo, seconds)."""
    import time

    import pandas as pd
    from surprise import Dataset, Reader

    frame = pd.DataFrame({"u": train.users, "i": train.items, "r": train.ratings})
    trainset = Dataset.load_from_df(frame, Reader(rating_scale=(1, 5))).build_full_trainset()
    start = time.perf_counter()
    algo.fit(trainset)
    return algo, time.perf_counter() - start


def run_surprise_svdpp(train, test, seed, quick):
    import numpy as np
    from surprise import SVDpp

    algo, elapsed = _surprise_fit(train, SVDpp(random_state=seed, **({"n_epochs": 2} if quick else {})))
    pred = np.array([algo.predict(u, i).est for u, i in zip(test.users, test.items)])
    return pred, elapsed, {"config": "SVDpp() defaults" + (", n_epochs=2" if quick else "")}


def run_surprise_knn_baseline(train, test, seed, quick):
    import numpy as np
    from surprise import KNNBaseline

    # item-based Pearson-baseline similarity, the configuration surprise's docs recommend
    options = {"name": "pearson_baseline", "user_based": False}
    algo, elapsed = _surprise_fit(train, KNNBaseline(sim_options=options, verbose=False))
    pred = np.array([algo.predict(u, i).est for u, i in zip(test.users, test.items)])
    return pred, elapsed, {"config": "KNNBaseline(k=40, item-based pearson_baseline)"}


def run_cmfrec_implicit(train, test, seed, quick):
    import time

    import numpy as np
    import pandas as pd
    from cmfrec import CMF

    frame = pd.DataFrame({"UserId": train.users, "ItemId": train.items, "Rating": train.ratings})
    start = time.perf_counter()
    model = CMF(k=10, lambda_=10, add_implicit_features=True, random_state=seed, verbose=False,
                nthreads=1, **({"niter": 2} if quick else {})).fit(frame)
    elapsed = time.perf_counter() - start
    pred = model.predict(test.users, test.items)
    pred = np.clip(np.where(np.isfinite(pred), pred, train.ratings.mean()), 1, 5)
    return pred, elapsed, {"config": "CMF(k=10, lambda_=10, add_implicit_features=True) (SVD++-like "
                           "implicit features), predictions clipped to [1, 5]"}


# Ablation on u1 (random_state=0, test RMSE), measured one change at a time on
# this machine while choosing the defaults (see RatingsCompleter's docstring).
ABLATION = [
    "What each addition does on u1 (dmc test RMSE, random_state=0; one change at a time "
    "from the defaults before issue 12 (gamma 30, no implicit feedback), measured while "
    "choosing them (the candidates of issue 12 are in the next section); seeds 1 and 2 of the defaults give "
    "0.9191 and 0.9209, so differences under ~0.002 are noise):",
    "",
    "| variant | u1 RMSE |",
    "|---|---|",
    "| defaults: rank 32, depth 3, init 0.1, step 0.1x auto, gamma 30, biases + warm-up, "
    "early stopping, refit, clip | 0.9209 |",
    "| no clipping to [1, 5] | 0.9217 |",
    "| no bias warm-up (subspace taken from the mean-centred data) | 0.9281 |",
    "| no refit on train + validation | 0.9248 |",
    "| gamma 1 (outer factors nearly frozen) | 0.9280 |",
    "| no user/item biases | 0.9378 |",
    "| depth 2 (best step found: 0.02x auto) | 0.9384 |",
    "| depth 4 | 0.9306 |",
    "| rank 16 | 0.9217 |",
    "| no early stopping, 1000 steps | 1.2099 |",
    "",
    "Earlier settings (gamma <= 1, no warm-up) showed: init_scale 1e-3 (the synthetic "
    "default) still on its plateau after 3000 steps (0.956, the biases alone); weight decay "
    "on the factors < 0.001 change at 1e-6..1e-4, interactions erased from 1e-3 on (0.956); "
    "per-row preconditioning of U, V no change. Those were dropped.",
    "",
    "Item-kNN correction of the residuals (`neighbours`, on by default; tuned on a validation "
    "carve of 10% of u1.base, seed 123, never on the test splits): validation RMSE 0.9015 "
    "without it; with 40 neighbours, shrinkage 100, damping 1: 0.8991 with the plain cosine of "
    "the residual columns (chosen), 0.9000 with the cosine restricted to the common users "
    "(surprise's pearson_baseline with the deep model as baseline); damping 0.5 / 2 / 5 gave "
    "0.8984 / 0.8999 / 0.9007, shrinkage 25 / 50 / 200 0.8985 / 0.8986 / 0.8997, 100 "
    "neighbours 0.8993, positive similarities only 0.8989: all within ~0.001, the "
    "KNNBaseline-like defaults kept. It adds about 1 s to a fit (the similarities, 0.5 s) and "
    "0.2 s to predicting 20,000 pairs.",
    "",
    "Item genres (`dmc-genres`, opt-in): the 19 flags of u.item as item features, columns "
    "scaled to unit norm, embedding step `feature_lr` times that of V. Validation (same carve): "
    "0.8995 without, 0.8981 / 0.8973 / 0.8968 at feature_lr 1 / 2 / 3, diverged at 10 (without the column "
    "scaling 1 and 10 diverged too); 2 chosen for its margin. On the test splits they "
    "help u1, u3, u4 and u5 by 0.0015..0.003 and hurt u2 by 0.014 (with both kNN "
    "corrections; 0.021 with the item one alone): not a default.",
    "",
    "User-kNN correction (`user_neighbours`, on by default) and seed ensembles, side by side "
    "(`python benchmarks/ratings_knn_variants.py`; validation on the same carve decides, test "
    "for the record):",
    "",
    "| variant | validation RMSE | u1 | u2 | u3 | u4 | u5 | test mean |",
    "|---|---|---|---|---|---|---|---|",
    "| deep model alone | 0.9020 | 0.9158 | 0.9027 | 0.8982 | 0.9034 | 0.9023 | 0.9045 |",
    "| item kNN | 0.8995 | 0.9119 | 0.8994 | 0.8948 | 0.8994 | 0.8993 | 0.9010 |",
    "| item + user kNN (default) | 0.8991 | 0.9107 | 0.8987 | 0.8938 | 0.8986 | 0.8985 | 0.9001 |",
    "| 3-seed ensemble, item kNN | 0.8980 | 0.9106 | 0.8982 | 0.8941 | 0.8982 | 0.8984 | 0.8999 |",
    "| 3-seed ensemble, item + user kNN | 0.8972 | 0.9095 | 0.8975 | 0.8931 | 0.8975 | 0.8974 | 0.8990 |",
    "",
    "The user correction improves every split (0.0007..0.0012) at ~0.1 s of fit time: adopted. "
    "The 3-seed ensemble gains another 0.0011 but triples the fit time (~34 s, over the 30 s "
    "budget): left out (average three `random_state`s by hand to get it). Without timestamps "
    "the issue's targets (u1 <= 0.900, five-split <= 0.895) are not met: 0.9107 and 0.9001.",
    "",
    "User-day biases (`dmc-timestamps`: `fit(..., timestamps=...)`, the day-specific user "
    "bias b_{u,t} of timeSVD++ fitted on the model's training residuals, per user and UTC day, "
    "shrunk by count / (count + `day_bias_penalty`)): 99% of the test ratings fall on a day the "
    "user also rated in training. Validation (same carve): 0.8991 without, 0.8949 / 0.8948 / "
    "0.8950 / 0.8955 at penalty 2 / 5 / 10 / 20 (5 chosen). Also measured there and not kept: "
    "fitting the day biases with the user and item biases before the deep model (and subtracting "
    "them from the ratings) 0.8944 but u1 test 0.9082 against 0.9062, and 0.8948 with both; "
    "sessions (gaps over 1 / 3 / 12 / 24 h) instead of calendar days 0.8947..0.8953; the day "
    "biases before the kNN corrections 0.8950; item biases per time bin (10 / 30 bins over the "
    "7 months) 0.8961 / 0.8954 and per rating-frequency bucket (Koren's f_ut, log base 2 / "
    "6.25) 0.8960 / 0.8945 on top of them. Against the targets, with timestamps: u1 0.9062 "
    "(target 0.900: missed), five-split mean 0.8953 (target 0.895: missed by 0.0003); fit "
    "time unchanged (the biases take well under a second).",
]

METHODS = {"dmc": run_dmc, "dmc-timestamps": run_dmc_timestamps, "dmc-no-knn": run_dmc_no_knn,
           "dmc-genres": run_dmc_genres,
           "surprise-svd": run_surprise, "surprise-svdpp": run_surprise_svdpp,
           "surprise-knnbaseline": run_surprise_knn_baseline, "cmfrec": run_cmfrec,
           "cmfrec-implicit": run_cmfrec_implicit}


def _reexec_in_peers_venv(argv):
    """Without scikit-surprise here, re-run under the peers venv ($DMC_PEERS_VENV, default
    /tmp/dmc-peers-venv) when it has it, with this checkout's dmc on the path (once)."""
    import importlib.util
    import subprocess

    if importlib.util.find_spec("surprise") or os.environ.get("DMC_PEERS_REEXEC"):
        return
    python = Path(os.environ.get("DMC_PEERS_VENV", "/tmp/dmc-peers-venv")) / "bin" / "python"
    if not python.exists() or subprocess.call([str(python), "-c", "import surprise"],
                                              stderr=subprocess.DEVNULL) != 0:
        return
    env = dict(os.environ, DMC_PEERS_REEXEC="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    print(f"re-running under the peers venv {python}", flush=True)
    sys.exit(subprocess.call([str(python), str(Path(__file__).resolve()), *argv], env=env))


def _versions():
    import importlib.metadata as md
    out = {"python": sys.version.split()[0]}
    for name in ("numpy", "scipy", "numba", "scikit-surprise", "cmfrec", "pandas"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def _machine(threads):
    import platform
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "threads_used": threads,
            "system": f"{platform.system()} {platform.release()}"}


def render_section(results):
    """Markdown of the movielens section (without the markers)."""
    lines = [
        "## MovieLens 100K: held-out RMSE and MAE",
        "",
        f"Official splits {', '.join(results['splits'])} (80k train / 20k test ratings each); "
        "mean +- standard deviation over the splits, fit time in seconds "
        f"({results['machine']['cpu']}, {results['machine']['threads_used']} thread(s), "
        "on a shared machine: times are indicative). "
        "Regenerate with `python benchmarks/movielens.py`.",
        "",
        "| method | test RMSE | test MAE | fit time (s) | u1 RMSE |",
        "|---|---|---|---|---|",
    ]
    for name, res in results["methods"].items():
        if "error" in res:
            lines.append(f"| {name} | skipped: {res['error']} | | | |")
            continue
        u1 = next((s["rmse"] for s in res["per_split"] if s["split"] == "u1"), None)
        lines.append(
            f"| {name} | {res['rmse_mean']:.4f} +- {res['rmse_std']:.4f} | "
            f"{res['mae_mean']:.4f} +- {res['mae_std']:.4f} | "
            f"{res['fit_time_mean']:.1f} | {'' if u1 is None else f'{u1:.4f}'} |")
    lines += [
        "",
        "Published u1 RMSE for reference: GC-MC 0.910, IGMC 0.905, GLocal-K 0.889.",
        "",
        f"dmc settings: `RatingsCompleter({results['dmc_config'] or ''})` (defaults, the "
        "item-kNN correction of the residuals included), random_state="
        f"{results['seed']}; dmc-no-knn: `neighbours=0` (the defaults before the correction); "
        "dmc-genres: the defaults plus `fit(..., item_features=load_movielens_100k_genres(path))` "
        "(the 19 genre flags of u.item, opt-in); dmc-timestamps: the defaults plus "
        "`fit(..., timestamps=...)` and `predict(..., timestamps=...)` with the ratings' "
        "timestamps (`load_movielens_100k_timestamps`), i.e. user-day biases (opt-in; the "
        "published models above use no timestamps). Versions: "
        + ", ".join(f"{k} {v}" for k, v in results["versions"].items() if v) + ".",
    ]
    notes = results.get("notes")
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)


def write_section(readme: Path, body: str, name=SECTION):
    """Replace (or append) only the ``name`` section of ``readme``."""
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    block = f"{begin}\n{body}\n{end}"
    text = readme.read_text() if readme.exists() else "# dmc benchmarks\n"
    if begin in text and end in text and text.index(begin) < text.index(end):
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    readme.parent.mkdir(parents=True, exist_ok=True)
    tmp = readme.with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, readme)


def main(argv=None):
    args = _parse(argv)
    if args.render_only:
        import json
        results = json.loads(Path(args.output).read_text())
        results["notes"] = ABLATION
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
        write_section(Path(args.readme), render_section(results))
        return results
    if not args.no_peers:
        _reexec_in_peers_venv(sys.argv[1:] if argv is None else list(argv))
    limit_threads(args.threads)
    sys.path.insert(0, str(ROOT))
    import json

    import numpy as np

    from dmc.datasets import load_movielens_100k

    _DATA["path"] = args.data
    splits = args.splits or (["u1"] if args.quick else ["u1", "u2", "u3", "u4", "u5"])
    methods = ["dmc"] if args.no_peers else (args.methods or list(METHODS))
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; choose from {sorted(METHODS)}")
    results = {"splits": splits, "quick": args.quick, "seed": args.seed,
               "dmc_config": ", ".join(f"{k}={v!r}" for k, v in dmc_config(args.quick).items()),
               "versions": _versions(), "machine": _machine(args.threads), "methods": {},
               "notes": ABLATION}
    for name in methods:
        per_split = []
        try:
            for split in splits:
                data = load_movielens_100k(args.data, split)
                _DATA["split"] = split
                pred, seconds, extra = METHODS[name](data.train, data.test, args.seed, args.quick)
                err = pred - data.test.ratings
                row = {"split": split, "rmse": float(np.sqrt(np.mean(err**2))),
                       "mae": float(np.mean(np.abs(err))), "fit_time": float(seconds), **extra}
                per_split.append(row)
                print(f"{name:13s} {split}: RMSE {row['rmse']:.4f} MAE {row['mae']:.4f} "
                      f"fit {seconds:.1f}s", flush=True)
        except ImportError as error:
            results["methods"][name] = {"error": f"not installed ({error.name})"}
            print(f"{name}: skipped ({error})", flush=True)
            continue
        summary = {}
        for key in ("rmse", "mae", "fit_time"):
            vals = np.array([row[key] for row in per_split])
            summary[f"{key}_mean"] = float(vals.mean())
            summary[f"{key}_std"] = float(vals.std(ddof=1)) if vals.size > 1 else 0.0
        results["methods"][name] = {**summary, "per_split": per_split}
    if args.quick:
        print(json.dumps({k: v for k, v in results["methods"].items()}, indent=1, default=str)[:2000])
        return results
    out = Path(args.output)
    if args.methods and out.exists():  # keep the rows not rerun, in METHODS order
        previous = json.loads(out.read_text())
        if previous.get("splits") == splits:
            kept = {**previous["methods"], **results["methods"]}
            results["methods"] = {name: kept[name] for name in METHODS if name in kept}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    write_section(Path(args.readme), render_section(results))
    print(f"wrote {out} and the {SECTION} section of {args.readme}")
    return results


if __name__ == "__main__":
    main()
