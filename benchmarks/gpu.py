"""GPU benchmark (issue 3): the reference problem and a 100,000 x 100,000 problem
on each GPU backend (torch CUDA, CuPy), to be run on a machine with a GPU.

1. 1000 x 1000, true rank 5, 20% observed, depth 3, rank=5: wall time and
   steps to recovery error <= 1e-6 (dmc defaults and the paper's setting),
   per backend, float64; target under 1 s.
2. Per-step time of ``compressed`` at 100,000 x 100,000 with 10M observed
   entries, rank 5, per backend.

Without a GPU, ``--quick`` runs the same code on torch's CPU backend at tiny
sizes so the script is tested everywhere; the full mode refuses to run
without a CUDA device and says so.
"""

from __future__ import annotations

import time
import warnings

import _common as C  # noqa: I001  (sets thread counts before numpy loads)
import numpy as np

from dmc import ConvergenceWarning, DeepMatrixCompleter
from dmc.datasets import make_low_rank

from core import PAPER, sparse_low_rank


def _backends(quick):
    """(label, backend, device) for every GPU backend present."""
    found = []
    try:
        import torch

        if torch.cuda.is_available():
            found.append((f"torch {torch.__version__} / {torch.cuda.get_device_name(0)}", "torch", "cuda"))
        elif quick:
            found.append((f"torch {torch.__version__} / cpu (quick mode, no GPU)", "torch", "cpu"))
    except ImportError:
        pass
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            found.append((f"cupy {cupy.__version__}", "cupy", "cuda"))
    except Exception:  # noqa: BLE001  (ImportError or no CUDA runtime)
        pass
    return found


def _synchronize(backend):
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
    elif backend == "cupy":
        import cupy

        cupy.cuda.Device().synchronize()


def reference(backends, quick):
    shape, true_rank, fraction = ((100, 100), 3, 0.3) if quick else ((1000, 1000), 5, 0.2)
    target = 1e-2 if quick else 1e-6
    M, mask = make_low_rank(shape, true_rank, fraction, random_state=0)
    rows = []
    for label, backend, device in backends:
        for setting, params in (("dmc default", {}), ("paper", PAPER)):
            if quick and setting == "paper":
                continue
            model = DeepMatrixCompleter(rank=5, random_state=0, backend=backend, device=device,
                                        max_iter=20000 if quick else 60000, record_every=50,
                                        callbacks=lambda r: r["recovery_error"] <= target, **params)
            for attempt in ("warm-up", "timed"):  # first fit pays CUDA context and kernel set-up
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    model.fit(M, mask, ground_truth=M)
                _synchronize(backend)
            step, seconds = C.first_time_below(model.history_, target)
            rows.append(dict(backend=label, setting=setting, steps=step, seconds=seconds,
                             final_error=float(model.history_["recovery_error"][-1]),
                             history=C.history_dict(model.history_)))
            print(f"  {label} {setting}: {step} steps, {seconds} s")
    return dict(shape=shape, target=target, runs=rows)


def large(backends, quick):
    shape, n_observed = ((2000, 2000), 40_000) if quick else ((100_000, 100_000), 10_000_000)
    M = sparse_low_rank(shape, 5, n_observed, 0)
    rows = []
    for label, backend, device in backends:
        n_steps = 20
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = DeepMatrixCompleter(rank=5, random_state=0, backend=backend, device=device,
                                        max_iter=n_steps, record_every=n_steps, tol=0.0).fit(M)
        times = model.history_["time"]
        rows.append(dict(backend=label, step=float((times[-1] - times[0]) / n_steps), init=float(times[0])))
        print(f"  {label}: {rows[-1]['step'] * 1e3:.2f} ms/step, init {rows[-1]['init']:.1f} s")
    return dict(shape=shape, n_observed=n_observed, runs=rows)


def render(payload, out):
    ref, big = payload["reference"], payload["large"]
    lines = ["## GPU backends (`gpu.py`)", "",
             f"Machine: {C.machine_line(payload['machine'], payload['wall_seconds'] / 60)}.", "",
             f"**Reference problem** ({ref['shape'][0]} x {ref['shape'][1]}, rank=5, float64): "
             f"time to recovery error <= {ref['target']:g} after a warm-up fit. Target: under 1 s.", ""]
    lines.append(C.markdown_table(["backend", "setting", "steps", "seconds"],
                                  [[r["backend"], r["setting"], r["steps"], C.fmt(r["seconds"], ".2f")]
                                   for r in ref["runs"]]))
    lines += ["", f"**Large problem**: {big['shape'][0]:,} x {big['shape'][1]:,}, "
              f"{big['n_observed']:,} observed, rank 5:", ""]
    lines.append(C.markdown_table(["backend", "ms / step", "init (s)"],
                                  [[r["backend"], f"{r['step'] * 1e3:.2f}", f"{r['init']:.1f}"]
                                   for r in big["runs"]]))
    lines += ["", f"![gpu]({out.rel(out.figure())})"]
    return "\n".join(lines)


def main(argv=None):
    args, out = C.parse_args("gpu", __doc__.splitlines()[0], argv)
    backends = _backends(args.quick)
    if not backends:
        raise SystemExit("gpu.py: no CUDA device here (torch.cuda and CuPy both unavailable); "
                         "run it on a GPU machine, or use --quick for the CPU smoke test.")
    started = time.time()
    print("reference problem")
    ref = reference(backends, args.quick)
    print("large problem")
    big = large(backends, args.quick)
    payload = dict(benchmark="gpu", quick=args.quick, machine=C.machine_info(["torch", "cupy"]),
                   reference=ref, large=big, wall_seconds=time.time() - started)
    C.write_json(out.json, payload)
    from dmc import plotting

    C.save_figure(plotting.plot_histories(
        [(f"{r['backend']}, {r['setting']}", r["history"]) for r in ref["runs"]],
        title="reference problem on GPU backends"), out.figure())
    if out.readme is not None:
        C.replace_readme_section("gpu", render(payload, out), out.readme)


if __name__ == "__main__":
    main()
