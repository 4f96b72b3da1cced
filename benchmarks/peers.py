"""dmc against other completion methods on the same problems, in the same run:
rank given exactly and overestimated (r, 2r, 4r); final recovery error, wall
time, and time to reach recovery error 1e-2, 1e-4, 1e-6 where a method gets
there and exposes its iterations.

Peers: fancyimpute SoftImpute and IterativeSVD, cmfrec CMF (ALS),
scikit-learn IterativeImputer (smallest problem only), and, implemented in
benchmarks/_peers.py, Burer-Monteiro gradient descent with spectral
initialization, ScaledGD (Tong, Ma, Chi 2021) and ScaledGD(lambda) from a
small random start (Xu, Shen, Chi, Ma 2023).  fancyimpute 0.7.0 needs
scikit-learn < 1.6: this script re-runs itself under the peers venv
(benchmarks/_common.py --setup-peers-venv) when it exists, and records the
peers it could not run.
"""

from __future__ import annotations

import functools
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

import numpy as np  # noqa: E402

NAME = "peers"
THRESHOLDS = (1e-2, 1e-4, 1e-6)


def run_dmc(M, mask, M_true, rank, cap_s, target, **params):
    from dmc import DeepMatrixCompleter

    model = DeepMatrixCompleter(rank=rank, max_iter=50000, tol=0.0, record_every=20, random_state=0,
                                callbacks=lambda r: r["recovery_error"] <= target or r["time"] > cap_s,
                                **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(np.where(mask, M, 0.0), mask, ground_truth=M_true)
    h = model.history_
    return dict(available=True, error=float(h["recovery_error"][-1]), time=float(h["time"][-1]),
                iterations=model.n_iter_, history=C.history_dict(h))


def main(argv=None):
    C.reexec_in_peers_venv(Path(__file__).resolve())
    import _peers as P

    args, out = C.parse_args(NAME, __doc__.splitlines()[0], argv)
    if args.quick:
        problems = [dict(d=40, r=2, frac=0.5, imputer=True)]
        multipliers, cap_s = [1], 2.0
    else:
        problems = [dict(d=100, r=5, frac=0.3, imputer=True), dict(d=500, r=5, frac=0.2, imputer=False)]
        multipliers, cap_s = [1, 2, 4], 12.0
    target = 1e-6
    from dmc.datasets import make_low_rank

    C.warm_up_numba()
    methods = {"dmc compressed (default settings)": run_dmc,
               'dmc compressed (step_rule="preconditioned")':
                   functools.partial(run_dmc, step_rule="preconditioned")}
    methods.update(P.PEERS)
    results = []
    for prob in problems:
        d, r = prob["d"], prob["r"]
        M, mask = make_low_rank((d, d), r, prob["frac"], random_state=0)
        for mult in multipliers:
            rank = r * mult
            for label, func in methods.items():
                if "IterativeImputer" in label and (not prob["imputer"] or mult > 1):
                    continue  # rank-free and slow: once, on the small problem
                res = func(M, mask, M, rank, cap_s=cap_s, target=target)
                entry = dict(problem=prob, rank=rank, rank_multiplier=mult, method=label, **res)
                h = res.get("history")
                entry["time_to"] = {f"{t:g}": (C.first_time_below(h, t)[1] if h else None) for t in THRESHOLDS}
                results.append(entry)
                print(f"{d}x{d} rank {rank} {label}: error {C.fmt(res['error'])} time {C.fmt(res['time'], '.2f')} "
                      f"{res.get('reason') or ''} time_to {entry['time_to']}", flush=True)

    payload = dict(benchmark=NAME, quick=args.quick, machine=C.machine_info(("sklearn",)),
                   peer_versions=P.versions(), python_executable=sys.executable,
                   settings=dict(target=target, wall_cap_s_per_fit=cap_s, multipliers=multipliers,
                                 dmc="compressed, depth 3, normalize=True, lr='auto', rank budget as listed",
                                 note="all times include each method's own recovery-error evaluation per "
                                      "record (dense product), single thread"),
                   results=results)
    C.write_json(out.json, payload)

    from dmc.plotting import plot_histories
    for prob in problems:
        runs = {f"{e['method'].split(' (')[0]} r={e['rank']}": e["history"] for e in results
                if e["problem"] is prob and e.get("history") and e["rank_multiplier"] in (1, multipliers[-1])}
        fig = plot_histories(runs, x="time", title=f"{prob['d']}x{prob['d']}, rank {prob['r']}, "
                                                    f"{100 * prob['frac']:g}% observed")
        C.save_figure(fig, out.figure(f"{prob['d']}"))

    rows = [[f"{e['problem']['d']}x{e['problem']['d']}", f"{e['rank']} ({e['rank_multiplier']}r)", e["method"],
             C.fmt(e["error"]), C.fmt(e["time"], ".2f")] + [C.fmt(e["time_to"][f"{t:g}"], ".2f") for t in THRESHOLDS]
            for e in results if e.get("available")]
    skipped = sorted({f"{e['method']}: {e['reason']}" for e in results if not e.get("available")})
    C.write_section(NAME, [
        f"## Peers (`{NAME}.py`)",
        "",
        "Same problems, same process, one thread; true rank 5 (100x100 at 30% observed, "
        "500x500 at 20%), rank budget r, 2r, 4r. dmc: compressed, depth 3, default settings, "
        "(`step_rule=\"auto\"`: preconditioned where a sparse row or column holds at least 2k "
        "entries, switching (adaptive until it stalls) with k to 2k, adaptive below), and the same with `step_rule=\"preconditioned\"` forced: "
        "rows like 100x100 at 2r and 4r show why `auto` does not choose it on sparse rows "
        "(about 30 entries per row for k = 20 or 40 columns: it ends at another interpolant). "
        f"Each fit stops at recovery error <= {target:g}, at its own convergence rule, or after "
        f"{cap_s:g} s. Time-to columns need per-iteration access (dmc, BM-GD, ScaledGD, ScaledGD(lambda), "
        "fancyimpute via a recording subclass); '-' = not reached or not observable. Versions: "
        + ", ".join(f"{k} {v}" for k, v in payload["peer_versions"].items()) + ".",
        "",
        C.markdown_table(["problem", "rank", "method", "final error", "time (s)"]
                         + [f"time to {t:g} (s)" for t in THRESHOLDS], rows),
        "",
        ("Not run: " + "; ".join(skipped) + "." if skipped else ""),
        "",
        " ".join(f"![{p['d']}]({out.rel(out.figure(str(p['d'])))})" for p in problems),
    ], payload, out)
    return payload


if __name__ == "__main__":
    main()
