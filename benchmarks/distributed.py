"""Distributed fits (gloo, 1 vs 2 processes) and the memory per observed entry.

Part 1, memory: the path from a scipy.sparse input to a fitted model, in a
fresh interpreter per size that loads the CSR matrix from a file and fits it
(compressed, rank budget 10, depth 3, a few steps): the tracemalloc peak of
the fit (NumPy backend with the SciPy kernels, whose every allocation
tracemalloc sees) and the growth of the whole process's peak resident memory
during the fit (ru_maxrss, NumPy and torch backends), per observed entry.

Part 2, distributed: the same problem fitted by 1 and 2 processes with
``DeepMatrixCompleter(backend="torch", distributed=True)`` on gloo, one
thread each: per-step time, the bytes each step all-reduces (``8 (1 + k^2 +
n k)``), an all-reduce of that size timed alone, and the time to recovery
error 1e-4 against the factor pair of the truth (``ground_truth=(A, B)``,
which forms nothing of size m x n).  The scaling model in docs/distributed.md
is checked against these numbers.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

NAME = "distributed"
RANK_BUDGET, TRUE_RANK = 10, 5


def make_factors(m, n, rank=TRUE_RANK, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((m, rank)), rng.standard_normal((n, rank))


def make_entries(m, n, count, seed=0):
    """``count`` distinct (row, col) pairs, sorted, without any m x n array."""
    rng = np.random.default_rng(seed + 1)
    flat = np.unique(rng.integers(0, m * n, size=int(count * 1.02) + 10, dtype=np.int64))
    rng.shuffle(flat)
    flat = np.sort(flat[:count])
    return flat // n, flat % n


def make_problem(m, n, count, seed=0):
    A, B = make_factors(m, n, seed=seed)
    rows, cols = make_entries(m, n, count, seed)
    values = np.einsum("ij,ij->i", A[rows], B[cols])
    return A, B, rows, cols, values


# -- part 1: memory per observed entry (child process) -------------------------------
def memory_child(path, backend, steps):
    import resource
    import tracemalloc
    import warnings

    if backend == "torch":
        import torch  # noqa: F401  (imported before the baseline)
    from dmc import DeepMatrixCompleter
    from dmc.backend import make_pattern, numba_available
    from dmc.observations import Observations

    if backend == "numpy" and os.environ.get("DMC_KERNELS") == "numba" and numba_available():
        # compile (or load the cached kernels) before the baseline: JIT memory is not per entry
        tiny = Observations((2, 2), np.array([0, 1]), np.array([0, 1]), np.ones(2))
        make_pattern(tiny, np.float64, kernels="numba").residual_products(
            np.ones((2, 2)), np.ones((2, 2)), np.ones(2))

    X = sp.load_npz(path).tocsr()
    reset = _reset_peak()
    baseline = _status("VmRSS")
    model = DeepMatrixCompleter(rank=RANK_BUDGET, max_iter=steps, record_every=steps, tol=0.0,
                                random_state=0, backend=backend)
    traced = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trace = backend == "numpy" and os.environ.get("DMC_KERNELS") == "scipy"
        if trace:
            tracemalloc.start()
        model.fit(X)
        if trace:
            traced = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    peak = _status("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(dict(traced_peak=traced, rss_growth=peak - baseline, rss_peak=peak,
                          peak_reset=reset, observed=int(X.nnz), m=X.shape[0], n=X.shape[1])))


def _status(field):
    """A memory field of /proc/self/status, in bytes."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def _reset_peak():
    """Reset the process's peak RSS (VmHWM) to its current RSS (Linux: clear_refs 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _numba():
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def _rss():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure_memory(m, n, count, steps, workdir, variants=None):
    A, B, rows, cols, values = make_problem(m, n, count)
    path = Path(workdir) / f"problem_{m}_{count}.npz"
    X = sp.csr_matrix((values, (rows, cols)), shape=(m, n))
    sp.save_npz(path, X, compressed=False)
    input_bytes = X.data.nbytes + X.indices.nbytes + X.indptr.nbytes
    results = []
    for backend, kernels in variants or (("numpy", "scipy"), ("numpy", "numba"), ("torch", None)):
        if kernels == "numba" and not _numba():
            continue
        env = dict(os.environ, PYTHONPATH=str(C.REPO))
        if kernels:
            env["DMC_KERNELS"] = kernels
        proc = subprocess.run([sys.executable, __file__, "--memory-child", str(path), backend,
                               str(steps)], env=env, capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-2000:])
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        k = 2 * RANK_BUDGET
        factor_bytes = 8 * (m + n) * k
        row.update(backend=backend + (f" ({kernels} kernels)" if kernels else ""),
                   input_csr_bytes=input_bytes, factor_bytes=factor_bytes)
        results.append(row)
        print("memory", row, flush=True)
    return results


# -- part 2: gloo processes ------------------------------------------------------------
def worker(spec_path):
    import datetime
    import warnings

    import torch
    import torch.distributed as dist

    from dmc import DeepMatrixCompleter

    torch.set_num_threads(1)
    spec = json.loads(Path(spec_path).read_text())
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=600))
    rank, size = dist.get_rank(), dist.get_world_size()
    m, n, count = spec["m"], spec["n"], spec["count"]
    A, B, rows, cols, values = make_problem(m, n, count)
    mine = (rows * size) // m == rank  # this process's share (any partition would do)
    X = sp.csr_matrix((values[mine], (rows[mine], cols[mine])), shape=(m, n))
    del rows, cols, values
    k = 2 * RANK_BUDGET
    # an all-reduce of one step's payload, alone
    payload = torch.zeros(1 + k * k + n * k, dtype=torch.float64)
    for _ in range(2):
        dist.all_reduce(payload)
    dist.barrier()
    start = time.perf_counter()
    for _ in range(spec["allreduce_repeats"]):
        dist.all_reduce(payload)
    allreduce_seconds = (time.perf_counter() - start) / spec["allreduce_repeats"]
    out = dict(rank=rank, size=size, allreduce_seconds=allreduce_seconds,
               payload_bytes=int(payload.numel() * 8), local_observed=int(X.nnz))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        steps = spec["timed_steps"]
        model = DeepMatrixCompleter(rank=RANK_BUDGET, max_iter=steps, record_every=steps, tol=0.0,
                                    random_state=0, backend="torch", distributed=True).fit(X)
        h = model.history_
        out["time_per_step"] = float((h["time"][-1] - h["time"][0]) / steps)
        out["init_seconds"] = float(h["time"][0])
        model = DeepMatrixCompleter(rank=RANK_BUDGET, max_iter=spec["max_iter"], record_every=10,
                                    tol=0.0, random_state=0, backend="torch", distributed=True,
                                    callbacks=lambda r: r["recovery_error"] <= spec["target"])
        model.fit(X, ground_truth=(A, B))
        h = model.history_
    out["steps_to_target"] = int(h["iteration"][-1])
    out["seconds_to_target"] = float(h["time"][-1])
    out["final_recovery_error"] = float(h["recovery_error"][-1])
    out["reached"] = bool(h["recovery_error"][-1] <= spec["target"])
    Path(spec["out"] + f".rank{rank}.json").write_text(json.dumps(out))
    dist.destroy_process_group()


# -- part 3: one process, NumPy backend, to the target -----------------------------------
def single_machine_child(spec_path):
    """One process, default backend and kernels: time to the target and whole-process peak RSS."""
    import warnings

    from dmc import DeepMatrixCompleter

    spec = json.loads(Path(spec_path).read_text())
    A, B, rows, cols, values = make_problem(spec["m"], spec["n"], spec["count"])
    X = sp.csr_matrix((values, (rows, cols)), shape=(spec["m"], spec["n"]))
    del rows, cols, values
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = DeepMatrixCompleter(rank=RANK_BUDGET, max_iter=spec["max_iter"], record_every=10,
                                    tol=0.0, random_state=0,
                                    callbacks=lambda r: r["recovery_error"] <= spec["target"])
        model.fit(X, ground_truth=(A, B))
    h = model.history_
    print(json.dumps(dict(steps_to_target=int(h["iteration"][-1]),
                          seconds_to_target=float(h["time"][-1]), init_seconds=float(h["time"][0]),
                          final_recovery_error=float(h["recovery_error"][-1]),
                          reached=bool(h["recovery_error"][-1] <= spec["target"]),
                          peak_rss=_status("VmHWM"))))


def single_machine(spec, workdir):
    spec_path = Path(workdir) / "single.json"
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ, PYTHONPATH=str(C.REPO))
    proc = subprocess.run([sys.executable, __file__, "--single-child", str(spec_path)], env=env,
                          capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print("single machine", result, flush=True)
    return result


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_processes(size, spec, workdir):
    spec = dict(spec, out=str(Path(workdir) / f"run{size}"))
    spec_path = Path(workdir) / f"spec{size}.json"
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ, WORLD_SIZE=str(size), MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(_free_port()), OMP_NUM_THREADS="1", PYTHONPATH=str(C.REPO))
    processes = [subprocess.Popen([sys.executable, __file__, "--worker", str(spec_path)],
                                  env=dict(env, RANK=str(rank))) for rank in range(size)]
    for process in processes:
        if process.wait(timeout=3600) != 0:
            raise RuntimeError(f"a worker of the {size}-process run failed")
    return [json.loads(Path(spec["out"] + f".rank{r}.json").read_text()) for r in range(size)]


def main(argv=None):
    def extra(parser):
        parser.add_argument("--memory-child", nargs=3, default=None, help=argparse_hidden())
        parser.add_argument("--worker", default=None, help=argparse_hidden())
        parser.add_argument("--single-child", default=None, help=argparse_hidden())
        parser.add_argument("--processes-only", action="store_true",
                            help="measure the 1 vs 2 process runs again into results/distributed.json")
        parser.add_argument("--single-only", action="store_true",
                            help="measure the one-process NumPy run again into results/distributed.json")
        parser.add_argument("--memory-only", action="store_true",
                            help="measure the memory part again and merge it into results/distributed.json")
        parser.add_argument("--from-results", action="store_true",
                            help="rewrite the figure and README section from results/distributed.json")
    args, out = C.parse_args(NAME, __doc__.splitlines()[0], argv, extra=extra)
    if args.memory_child:
        return memory_child(args.memory_child[0], args.memory_child[1], int(args.memory_child[2]))
    if args.worker:
        return worker(args.worker)
    if args.single_child:
        return single_machine_child(args.single_child)
    if args.from_results:
        return report(json.loads(out.json.read_text()), out)
    if args.quick:
        memory_sizes = [(1000, 1000, 10_000)]
        variants = (("numpy", "scipy"),)
        spec = dict(m=1000, n=1000, count=10_000, timed_steps=3, max_iter=20, target=1e-1,
                    allreduce_repeats=3)
    else:
        memory_sizes = [(30_000, 30_000, 300_000), (30_000, 30_000, 1_000_000),
                        (30_000, 30_000, 3_000_000)]
        variants = None
        spec = dict(m=30_000, n=30_000, count=3_000_000, timed_steps=10, max_iter=800,
                    target=1e-4, allreduce_repeats=20)
    workdir = tempfile.mkdtemp(prefix="dmc-bench-distributed-")
    if args.single_only:
        payload = json.loads(out.json.read_text())
        payload["single_machine"] = single_machine(spec, workdir)
        C.write_json(out.json, payload)
        return report(payload, out)
    if args.processes_only:
        previous = json.loads(out.json.read_text())
        memory, single = previous["memory"], previous.get("single_machine")
    else:
        memory = []
        for m, n, count in memory_sizes:
            memory.extend(measure_memory(m, n, count, 3, workdir, variants))
        if args.memory_only:
            payload = json.loads(out.json.read_text())
            payload["memory"] = memory
            C.write_json(out.json, payload)
            return report(payload, out)
        # quick mode skips the one-process NumPy run (one interpreter less: the test's time cap)
        single = None if args.quick else single_machine(spec, workdir)
    runs = {}
    for size in (1, 2):
        runs[size] = run_processes(size, spec, workdir)
        print("processes", size, runs[size], flush=True)

    k = 2 * RANK_BUDGET
    summary = []
    for size, ranks in runs.items():
        slowest = max(ranks, key=lambda r: r["time_per_step"])
        summary.append(dict(processes=size, time_per_step=slowest["time_per_step"],
                            allreduce_seconds=max(r["allreduce_seconds"] for r in ranks),
                            payload_bytes=ranks[0]["payload_bytes"],
                            init_seconds=slowest["init_seconds"],
                            steps_to_target=ranks[0]["steps_to_target"],
                            seconds_to_target=max(r["seconds_to_target"] for r in ranks),
                            reached=ranks[0]["reached"],
                            final_recovery_error=ranks[0]["final_recovery_error"]))
    one, two = summary
    # the scaling model: t(P) = t_compute(1) / P + t_allreduce; with P = 1 there is no all-reduce
    predicted_two = one["time_per_step"] / 2 + two["allreduce_seconds"]
    payload = dict(benchmark=NAME, quick=args.quick, machine=C.machine_info(["torch"]),
                   settings=dict(spec, true_rank=TRUE_RANK, rank_budget=RANK_BUDGET, k=k, depth=3,
                                 step_rule="auto (adaptive)", gloo_threads_per_process=1),
                   memory=memory, processes=summary, single_machine=single,
                   model=dict(predicted_two_process_step=predicted_two,
                              measured_two_process_step=two["time_per_step"]))
    C.write_json(out.json, payload)
    return report(payload, out)


def _marginal(memory, key):
    """Bytes per additional observed entry between consecutive sizes of one backend."""
    out = {}
    for backend in dict.fromkeys(r["backend"] for r in memory):
        rows = sorted((r for r in memory if r["backend"] == backend and r[key]),
                      key=lambda r: r["observed"])
        for a, b in zip(rows, rows[1:]):
            out[(backend, b["observed"])] = (b[key] - a[key]) / (b["observed"] - a["observed"])
    return out


def report(payload, out):
    """The figure and the README section from a payload (a run's, or results/distributed.json)."""
    memory, summary, spec = payload["memory"], payload["processes"], payload["settings"]
    k = spec["k"]
    one, two = summary
    predicted_two = payload["model"]["predicted_two_process_step"]
    from dmc.plotting import _figure
    fig, axes = _figure(ncols=2)
    ax = axes[0][0]
    for backend, key in (("numpy (scipy kernels)", "traced_peak"), ("numpy (scipy kernels)", "rss_growth"),
                         ("numpy (numba kernels)", "rss_growth"), ("torch", "rss_growth")):
        rows = [r for r in memory if r["backend"] == backend and r[key]]
        ax.plot([r["observed"] for r in rows], [r[key] / r["observed"] for r in rows], marker="o",
                label=f"{backend} {key.replace('_', ' ')}")
    ax.set_xscale("log")
    ax.set_xlabel("|Omega|")
    ax.set_ylabel("bytes per observed entry")
    ax.legend(fontsize="small")
    ax = axes[0][1]
    ax.bar(["1 process", "2 processes", "2 (model)"],
           [1e3 * one["time_per_step"], 1e3 * two["time_per_step"], 1e3 * predicted_two])
    ax.set_ylabel("ms per step")
    C.save_figure(fig, out.figure())

    traced_marginal = _marginal(memory, "traced_peak")
    rss_marginal = _marginal(memory, "rss_growth")
    mem_rows = [[f"{r['m']:,} x {r['n']:,}", f"{r['observed']:,}", r["backend"],
                 C.fmt(r["traced_peak"] / r["observed"] if r["traced_peak"] else None, ".0f"),
                 C.fmt(traced_marginal.get((r["backend"], r["observed"])), ".0f"),
                 f"{r['rss_growth'] / r['observed']:.0f}",
                 C.fmt(rss_marginal.get((r["backend"], r["observed"])), ".0f"),
                 f"{r['input_csr_bytes'] / r['observed']:.0f}",
                 f"{r['factor_bytes'] / 2**20:.1f}"] for r in memory]
    def run_step(s):  # per-step time over the whole run to the target (init excluded)
        return (s["seconds_to_target"] - s["init_seconds"]) / max(s["steps_to_target"], 1)

    run_rows = [[str(s["processes"]), f"{1e3 * s['time_per_step']:.0f}",
                 f"{1e3 * run_step(s):.0f}",
                 f"{s['payload_bytes'] / 2**20:.2f}", f"{1e3 * s['allreduce_seconds']:.1f}"
                 if s["processes"] > 1 else "-", f"{s['init_seconds']:.1f}",
                 f"{s['steps_to_target']}", f"{s['seconds_to_target']:.0f}",
                 f"{s['final_recovery_error']:.1e}"] for s in summary]
    C.write_section(NAME, [
        f"## Distributed fits and memory per observed entry (`{NAME}.py`)",
        "",
        f"Compressed, depth 3, rank budget {RANK_BUDGET} (k = {k}), true rank {TRUE_RANK}, "
        "scipy.sparse input, no m x n array anywhere.",
        "",
        "**Memory per observed entry** on the path from scipy.sparse to a fitted model (3 steps; "
        "fresh interpreter per row; tracemalloc with the SciPy kernels, whose every allocation "
        "it sees; the RSS growth is the whole process's peak resident memory during the fit "
        "(VmHWM, reset just before it) minus its resident memory before it, which counts torch's and Numba's allocations too; Numba's kernels "
        "are compiled or loaded before the baseline). The factors (U, V, 8 (m + n) k "
        "bytes) are listed apart: they are not per entry. The SciPy kernels keep two "
        "|Omega| x k gather buffers between steps (2 k = 40 numbers per entry, for speed; "
        "dmc.backend.ScipyPattern), the Numba and torch kernels none.",
        "",
        C.markdown_table(["m x n", "observed", "backend", "traced peak B/entry",
                          "traced, marginal", "RSS growth B/entry", "RSS, marginal",
                          "input CSR B/entry", "factors MiB"], mem_rows),
        "",
        "\"Marginal\" is the growth per additional entry from the previous size of the same "
        "backend: what each entry costs once the fixed parts (the factors, the Lanczos vectors, "
        "Numba's compiled kernels, torch's allocator pools) are paid.",
        "",
        f"**1 vs 2 processes** (gloo on this machine, one thread each; {spec['m']:,} x "
        f"{spec['n']:,}, {spec['count']:,} entries, row-block shares): per-step time over "
        f"{spec['timed_steps']} steps (the slower process), the bytes each step all-reduces "
        "(8 (1 + k^2 + n k)), that all-reduce timed alone, and steps and seconds to recovery "
        f"error {spec['target']:g} (factor-pair truth, checked every 10 steps).",
        "",
        C.markdown_table(["processes", "ms / step (timed)", "ms / step (whole run)",
                          "all-reduce MiB / step", "all-reduce ms",
                          "init (s)", f"steps to {spec['target']:g}",
                          f"s to {spec['target']:g}", "final error"], run_rows),
        "",
        *_single_lines(payload),
        f"Scaling model t(2) = t(1) / 2 + t_allreduce: from the timed steps, predicted "
        f"{1e3 * predicted_two:.0f} ms per step, measured {1e3 * two['time_per_step']:.0f} ms; from "
        f"the whole runs, predicted {1e3 * (run_step(one) / 2 + two['allreduce_seconds']):.0f} ms, "
        f"measured {1e3 * run_step(two):.0f} ms. Both processes share this machine's 2 cores with "
        "other work (load average in the machine line), so the halved compute is an optimistic "
        "bound here and the timings are noisy; the 1-process and 2-process fits take the same "
        "steps (the same model, up to rounding).",
        "",
        f"![{NAME}]({out.rel(out.figure())})",
    ], payload, out)
    return payload




def _single_lines(payload):
    single, spec = payload.get("single_machine"), payload["settings"]
    if not single:
        return []
    return [f"**One process, NumPy backend** (the default, Numba kernels, one thread), same "
            f"problem and truth: {single['steps_to_target']} steps and "
            f"{single['seconds_to_target']:.0f} s to recovery error {spec['target']:g} "
            f"(final {single['final_recovery_error']:.1e}; initialization "
            f"{single['init_seconds']:.1f} s), whole-process peak RSS "
            f"{single['peak_rss'] / 2**30:.2f} GiB (problem generation included).", ""]


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
