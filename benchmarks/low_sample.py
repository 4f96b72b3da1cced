"""Low-sample regime: success rate (recovery error <= 1e-3) against the number
of observed entries, compressed dmc at depth 2, 3, 4 and the peers.

Full mode: 100 x 100, true rank 5, 1000..5000 observed entries, seeds 0-2.
dmc: compressed, rank budget 10 (2x overestimated), normalize=True,
lr="auto", init_scale 1e-3 / 1e-2 / 1e-1 at depth 2 / 3 / 4 (so that
eps^(L-2) -- the length of the plateau before the first singular value is
learned -- stays affordable), capped per fit.  Peers are given the true rank
5 (their best case); rank-free SoftImpute uses it as its rank cap.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

import numpy as np  # noqa: E402

NAME = "low_sample"
SUCCESS = 1e-3


def main(argv=None):
    C.reexec_in_peers_venv(Path(__file__).resolve())
    import _peers as P

    args, out = C.parse_args(NAME, __doc__.splitlines()[0], argv)
    if args.quick:
        d, r, counts, seeds, cap_s, max_iter = 30, 2, [300, 600], [0], 1.5, 4000
        peer_names = ["BM-GD (spectral init; implemented in benchmarks)",
                      "ScaledGD (Tong-Ma-Chi; implemented in benchmarks)"]
    else:
        # dmc fits stop on steps, not wall time (a 5 s cap made success counts
        # depend on the machine's load); the wall cap only bounds the peers
        d, r, counts, seeds, cap_s, max_iter = 100, 5, [1000, 2000, 3000, 4000, 5000], [0, 1, 2], 5.0, 30000
        peer_names = [k for k in P.PEERS if "IterativeImputer" not in k]
    depths = {2: 1e-3, 3: 1e-2, 4: 1e-1}
    from dmc import DeepMatrixCompleter
    from dmc.datasets import make_low_rank

    C.warm_up_numba()
    labels = [f"dmc compressed depth {L}" for L in depths] + peer_names
    errors = {label: np.full((len(counts), len(seeds)), np.nan) for label in labels}
    skipped = {}
    for s_index, seed in enumerate(seeds):
        for c_index, count in enumerate(counts):
            M, mask = make_low_rank((d, d), r, count / (d * d), random_state=seed)
            for L, eps in depths.items():
                model = DeepMatrixCompleter(rank=2 * r, depth=L, init_scale=eps, max_iter=max_iter, tol=0.0,
                                            record_every=50, random_state=seed,
                                            callbacks=lambda rec: rec["recovery_error"] <= 1e-6)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model.fit(np.where(mask, M, 0.0), mask, ground_truth=M)
                errors[f"dmc compressed depth {L}"][c_index, s_index] = model.history_["recovery_error"][-1]
            for name in peer_names:
                res = P.PEERS[name](M, mask, M, r, cap_s=cap_s, target=1e-6)
                if not res.get("available"):
                    skipped[name] = res["reason"]
                    continue
                errors[name][c_index, s_index] = res["error"]
            print(f"seed {seed} count {count}: " + ", ".join(
                f"{k.split(' (')[0]}={C.fmt(v[c_index, s_index], '.1e')}" for k, v in errors.items()), flush=True)

    rates = {k: np.mean(v <= SUCCESS, axis=1) for k, v in errors.items() if k not in skipped}
    payload = dict(benchmark=NAME, quick=args.quick, machine=C.machine_info(("sklearn",)),
                   peer_versions=P.versions(),
                   problem=dict(shape=[d, d], true_rank=r, observed_counts=counts, seeds=seeds,
                                success_threshold=SUCCESS, dmc_rank_budget=2 * r, peer_rank=r,
                                dmc_init_scale_by_depth=depths, wall_cap_s_per_fit=cap_s, max_iter=max_iter),
                   recovery_error=errors, success_rate=rates, skipped=skipped)
    C.write_json(out.json, payload)

    from dmc.plotting import plot_success_map
    names = list(rates)
    fig = plot_success_map(np.array([rates[k] for k in names]), row_labels=[k.split(" (")[0] for k in names],
                           col_labels=counts, title=f"{d}x{d}, rank {r}: P(error <= {SUCCESS:g})")
    C.save_figure(fig, out.figure())

    rows = [[k] + [f"{x:.2f}" for x in rates[k]] for k in names]
    C.write_section(NAME, [
        f"## Low-sample regime (`{NAME}.py`)",
        "",
        f"{d} x {d}, true rank {r}, seeds {seeds}; success = recovery error <= {SUCCESS:g}. dmc: compressed, "
        f"rank budget {2 * r}, default settings, init_scale by depth {depths}, each fit capped at "
        f"{max_iter} steps (dmc) or {cap_s:g} s (peers); peers get the true rank {r}. Degrees of freedom of a rank-{r} "
        f"{d} x {d} matrix: {r * (2 * d - r)}.",
        "",
        C.markdown_table(["method"] + [f"{c} obs." for c in counts], rows),
        "",
        ("Not run: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()) + "." if skipped else ""),
        "",
        f"![{NAME}]({out.rel(out.figure())})",
    ], payload, out)
    return payload


if __name__ == "__main__":
    main()
