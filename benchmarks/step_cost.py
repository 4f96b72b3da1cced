"""Per-step cost of the compressed model and a fresh process's initialization time.

Per step: one ``models.sparse_loss_and_gradients`` call (the fused Numba
kernel on the observed entries plus the k x k products) and the update
``f -= step * grad`` of every factor, exactly what the solver does per step,
at the reference size (1000 x 1000, true rank 5, 20% observed, depth 3) for
k = 10 and 20 columns on 1 and 2 Numba threads, with BLAS left as it is
("BLAS default") and limited to one thread by
``dmc.backend.compute_threads()`` ("BLAS 1").  Variants are timed in
interleaved rounds (each round times every variant once) and the median
over rounds is reported, so that load from other work on a shared machine
hits all variants alike.

Initialization: ``python -c`` processes, each timing ``from dmc import
DeepMatrixCompleter`` and ``DeepMatrixCompleter(rank=5, max_iter=1).fit``
on the reference problem (subspace SVD, pattern, first steps, Numba kernels
loaded from their on-disk cache or compiled on a cold cache).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

# this benchmark compares thread counts, so it needs more than _common's one
os.environ.setdefault("DMC_BENCH_THREADS", str(min(2, os.cpu_count() or 1)))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

import numpy as np  # noqa: E402

NAME = "step_cost"

INIT_SNIPPET = """
import json, time, warnings
t0 = time.perf_counter()
from dmc import DeepMatrixCompleter
t1 = time.perf_counter()
from dmc.datasets import make_low_rank
M, mask = make_low_rank(({m}, {m}), 5, {fraction}, random_state=0)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    t2 = time.perf_counter()
    model = DeepMatrixCompleter(rank=5, max_iter=1, random_state=0).fit(M, mask)
    t3 = time.perf_counter()
print(json.dumps(dict(import_s=t1 - t0, fit_s=t3 - t2, first_record_s=float(model.history_["time"][0]))))
"""


def step_times(m, fraction, widths, thread_counts, rounds, steps, depth=3):
    """Median ms per step for every (k, threads, BLAS setting), timed in interleaved rounds."""
    import numba

    from dmc import models
    from dmc.backend import compute_threads, make_pattern, numba_available
    from dmc.datasets import make_low_rank
    from dmc.observations import as_observations

    # dmc's kernels module sets Numba's OpenMP threads to sleep rather than spin
    # (OMP_WAIT_POLICY); import it before numba.set_num_threads starts them
    numba_available()
    M, mask = make_low_rank((m, m), 5, fraction, random_state=0)
    obs = as_observations(M, mask)
    values = obs.values
    rng = np.random.default_rng(0)
    cases = []
    for threads in thread_counts:
        numba.set_num_threads(threads)
        pattern = make_pattern(obs, np.float64)  # its row chunks follow the thread count
        for k in widths:
            U = np.ascontiguousarray(models.random_orthogonal(m, k, rng))
            V = np.ascontiguousarray(models.random_orthogonal(m, k, rng))
            factors = models.init_compressed(U, V, depth, 0.3)
            step_sizes = [1e-6] + [1e-4] * depth + [1e-6]  # small: the factors stay put
            for blas in ("default", "1"):
                cases.append(dict(k=k, threads=threads, blas=blas, pattern=pattern,
                                  factors=factors, step_sizes=step_sizes, times=[]))

    def run(case, count):
        factors, pattern, step_sizes = case["factors"], case["pattern"], case["step_sizes"]
        arrays = factors.arrays()
        numba.set_num_threads(case["threads"])
        with compute_threads("numpy", blas_threads=1 if case["blas"] == "1" else None):
            start = time.perf_counter()
            for _ in range(count):
                loss, grads = models.sparse_loss_and_gradients(factors, pattern, values)
                for array, grad, step in zip(arrays, grads.arrays(), step_sizes):
                    array -= step * grad
            return (time.perf_counter() - start) / count

    for case in cases:  # compile / load the kernels, fill the buffers
        run(case, 2)
    for _ in range(rounds):
        for case in cases:
            case["times"].append(1e3 * run(case, steps))
    return [dict(k=c["k"], threads=c["threads"], blas=c["blas"],
                 ms_per_step_median=float(np.median(c["times"])),
                 ms_per_step_p20=float(np.percentile(c["times"], 20)),
                 ms_per_step_rounds=c["times"]) for c in cases]


def init_times(m, fraction, runs, threads):
    """Fresh ``python -c`` processes: import and ``fit(max_iter=1)`` seconds, each run."""
    env = dict(os.environ, NUMBA_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               OPENBLAS_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               PYTHONPATH=os.pathsep.join([str(C.REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    code = INIT_SNIPPET.format(m=m, fraction=fraction)
    results = []
    for _ in range(runs):
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                              timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"init subprocess failed:\n{proc.stderr[-3000:]}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return results


def main(argv=None):
    args, out = C.parse_args(NAME, __doc__.splitlines()[0], argv)
    import numba

    max_threads = min(2, numba.config.NUMBA_NUM_THREADS)
    thread_counts = sorted({1, max_threads})
    if args.quick:
        m, fraction, widths, rounds, steps, init_runs = 200, 0.2, [4, 8], 3, 5, 2
    else:
        m, fraction, widths, rounds, steps, init_runs = 1000, 0.2, [10, 20], 15, 40, 5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        steps_result = step_times(m, fraction, widths, thread_counts, rounds, steps)
    for r in steps_result:
        print(f"k={r['k']} threads={r['threads']} BLAS {r['blas']}: "
              f"{r['ms_per_step_median']:.2f} ms/step (median of {rounds})", flush=True)
    # the first process may compile the kernels (cold on-disk cache); later ones load them
    inits = init_times(m, fraction, init_runs, max_threads)
    warm = inits[1:] if len(inits) > 1 else inits
    init_summary = {key: float(np.median([r[key] for r in warm]))
                    for key in ("import_s", "fit_s", "first_record_s")}
    print(f"fresh process (median of {len(warm)} after the first): {init_summary}", flush=True)
    payload = dict(benchmark=NAME, quick=args.quick, machine=C.machine_info(("threadpoolctl",)),
                   settings=dict(m=m, n=m, true_rank=5, observed_fraction=fraction, depth=3,
                                 widths=widths, thread_counts=thread_counts, rounds=rounds,
                                 steps_per_round=steps, init_runs=init_runs),
                   steps=steps_result, init_runs=inits, init_median_after_first=init_summary)
    C.write_json(out.json, payload)

    from dmc.plotting import _figure
    fig, axes = _figure(ncols=1)
    ax = axes[0][0]
    labels = [f"k={k}\n{t} thr" for k in widths for t in thread_counts]
    x = np.arange(len(labels))
    for offset, blas in ((-0.2, "default"), (0.2, "1")):
        heights = [next(r["ms_per_step_median"] for r in steps_result
                        if r["k"] == k and r["threads"] == t and r["blas"] == blas)
                   for k in widths for t in thread_counts]
        ax.bar(x + offset, heights, width=0.4, label=f"BLAS {blas}")
    ax.set_xticks(x)
    ax.set_xticklabels(labels)
    ax.set_ylabel("ms per step (median)")
    ax.set_title(f"compressed step, {m} x {m}, {fraction:.0%} observed, depth 3")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize="small")
    C.save_figure(fig, out.figure())

    def cell(k, t, blas):
        r = next(r for r in steps_result if r["k"] == k and r["threads"] == t and r["blas"] == blas)
        return f"{r['ms_per_step_median']:.2f}"

    rows = [[k, t, cell(k, t, "default"), cell(k, t, "1")] for k in widths for t in thread_counts]
    speedups = ", ".join(
        f"{float(cell(k, 1, '1')) / float(cell(k, max_threads, '1')):.2f}x at k = {k}"
        for k in widths) if max_threads > 1 else ""
    C.write_section(NAME, [
        f"## Per-step cost and initialization (`{NAME}.py`)",
        "",
        f"Compressed model at the reference size ({m} x {m}, true rank 5, {fraction:.0%} observed = "
        f"{int(round(fraction * m * m)):,} entries, depth 3). One step = "
        "`models.sparse_loss_and_gradients` (the fused Numba kernel over the observed entries and "
        "the k x k products) and the update of every factor. Median ms per step over "
        f"{rounds} interleaved rounds of {steps} steps; **BLAS 1** = inside "
        "`dmc.backend.compute_threads()` (BLAS limited to one thread with threadpoolctl while "
        "Numba's kernel uses the cores), **BLAS default** = BLAS left with its own thread pool.",
        "",
        C.markdown_table(["k", "Numba threads", "ms / step, BLAS default", "ms / step, BLAS 1"], rows),
        "",
        *([f"Two threads against one (BLAS 1): {speedups}. Threads only help when the "
           "cores are free: on a machine loaded by other work (see the load average below) the "
           "second thread waits for a core."] if speedups else []),
        "",
        f"Fresh process ({max_threads} threads, median of {len(warm)} `python -c` runs after a "
        f"first one that may fill the kernel cache): `from dmc import DeepMatrixCompleter` "
        f"{init_summary['import_s']:.2f} s (most of it scikit-learn's import, when installed), "
        f"`fit(max_iter=1)` at rank 5 (k = 10: subspace SVD, "
        f"pattern, kernels loaded from Numba's on-disk cache, first steps) {init_summary['fit_s']:.2f} s, "
        f"first history record at {init_summary['first_record_s']:.2f} s. The first process "
        f"took {inits[0]['fit_s']:.2f} s for the fit.",
        "",
        f"![{NAME}]({out.rel(out.figure())})",
    ], payload, out)
    return payload


if __name__ == "__main__":
    main()
