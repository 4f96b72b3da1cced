"""Scaling of the compressed model: per-step time and peak memory against the
number of observed entries |Omega| and against the size m = n, log-log with
fitted slopes.

Problems are built from random rank-5 factors and sampled entries directly
(no dense m x n array anywhere) and passed to fit as a scipy.sparse matrix.
Per-step time = (history time at the last step - at step 0) / steps, from a
short fit without ground truth (so no dense product); initialization time
(subspace from a truncated SVD) is reported separately.  Peak memory: the
tracemalloc peak of a separate 2-step fit (numpy allocations; numba kernels
allocate through numpy here) and the process RSS after it (psutil).
"""

from __future__ import annotations

import sys
import tracemalloc
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

NAME = "scaling"


def make_problem(m, count, rank=5, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((m, rank))
    B = rng.standard_normal((m, rank))
    flat = np.unique(rng.integers(0, m * m, size=int(count * 1.02) + 10, dtype=np.int64))[:count]
    rng.shuffle(flat)
    flat = np.sort(flat[:count])
    rows, cols = flat // m, flat % m
    values = np.einsum("ij,ij->i", A[rows], B[cols])
    return sp.csr_matrix((values, (rows, cols)), shape=(m, m))


def measure(m, count, steps, rank_budget=10):
    from dmc import DeepMatrixCompleter

    X = make_problem(m, count)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = DeepMatrixCompleter(rank=rank_budget, max_iter=steps, record_every=steps, tol=0.0,
                                    random_state=0).fit(X)
        h = model.history_
        per_step = float((h["time"][-1] - h["time"][0]) / (h["iteration"][-1] - h["iteration"][0]))
        tracemalloc.start()
        DeepMatrixCompleter(rank=rank_budget, max_iter=2, record_every=1, tol=0.0, random_state=0).fit(X)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    try:
        import psutil
        rss = psutil.Process().memory_info().rss
    except Exception:  # noqa: BLE001
        rss = None
    input_bytes = X.data.nbytes + X.indices.nbytes + X.indptr.nbytes
    return dict(m=m, n=m, observed=int(X.nnz), steps=steps, time_per_step=per_step,
                init_time=float(h["time"][0]), peak_traced_bytes=int(peak), input_csr_bytes=int(input_bytes),
                rss_bytes_after=rss)


def main(argv=None):
    args, out = C.parse_args(NAME, __doc__.splitlines()[0], argv)
    if args.quick:
        sizes, per_row, fixed_m, counts, steps = [300, 1000], 20, 1000, [10000, 30000], 10
    else:
        sizes, per_row, fixed_m = [1000, 3000, 10000, 30000, 100000], 50, 10000
        counts, steps = [100_000, 300_000, 1_000_000, 3_000_000], 20
    C.warm_up_numba()
    by_size, by_count = [], []
    for m in sizes:
        by_size.append(measure(m, per_row * m, steps))
        print("size", by_size[-1], flush=True)
    for count in counts:
        by_count.append(measure(fixed_m, count, steps))
        print("count", by_count[-1], flush=True)

    def slope(xs, ys):
        return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])

    fits = dict(
        time_vs_size=slope([r["m"] for r in by_size], [r["time_per_step"] for r in by_size]),
        memory_vs_size=slope([r["m"] for r in by_size], [r["peak_traced_bytes"] for r in by_size]),
        time_vs_observed=slope([r["observed"] for r in by_count], [r["time_per_step"] for r in by_count]),
        memory_vs_observed=slope([r["observed"] for r in by_count], [r["peak_traced_bytes"] for r in by_count]),
    )
    payload = dict(benchmark=NAME, quick=args.quick, machine=C.machine_info(),
                   settings=dict(true_rank=5, rank_budget=10, depth=3, observed_per_row_in_size_sweep=per_row,
                                 fixed_m_in_count_sweep=fixed_m, steps_timed=steps),
                   by_size=by_size, by_observed=by_count, fitted_slopes=fits)
    C.write_json(out.json, payload)

    from dmc.plotting import _figure
    fig, axes = _figure(ncols=2)
    for ax, data, key, xlabel in ((axes[0][0], by_size, "m", f"m = n ({per_row} observed per row)"),
                                  (axes[0][1], by_count, "observed", f"|Omega| (m = n = {fixed_m})")):
        x = np.array([r[key] for r in data], dtype=float)
        for ykey, label, scale in (("time_per_step", "s / step", 1.0), ("peak_traced_bytes", "peak MB", 1e-6)):
            y = np.array([r[ykey] for r in data], dtype=float) * scale
            s = float(np.polyfit(np.log(x), np.log(y), 1)[0])
            ax.plot(x, y, marker="o", label=f"{label} (slope {s:.2f})")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    C.save_figure(fig, out.figure())

    def row(r):
        return [f"{r['m']}", f"{r['observed']:,}", f"{1e3 * r['time_per_step']:.2f}", f"{r['init_time']:.2f}",
                f"{r['peak_traced_bytes'] / 2**20:.1f}", f"{r['input_csr_bytes'] / 2**20:.1f}"]
    headers = ["m = n", "observed", "ms / step", "init (s)", "peak traced MiB", "input CSR MiB"]
    C.write_section(NAME, [
        f"## Scaling (`{NAME}.py`)",
        "",
        f"Compressed, depth 3, rank budget 10 (k = 20), true rank 5, no dense matrix anywhere "
        f"(scipy.sparse input). Per-step time over {steps} steps, one thread.",
        "",
        C.markdown_table(headers, [row(r) for r in by_size + by_count]),
        "",
        f"Fitted log-log slopes: time vs m (|Omega| = {per_row} m) {fits['time_vs_size']:.2f}, "
        f"memory vs m {fits['memory_vs_size']:.2f}; time vs |Omega| (m = {fixed_m}) "
        f"{fits['time_vs_observed']:.2f}, memory vs |Omega| {fits['memory_vs_observed']:.2f}.",
        "",
        f"![{NAME}]({out.rel(out.figure())})",
    ], payload, out)
    return payload


if __name__ == "__main__":
    main()
