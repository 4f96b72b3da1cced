"""The ``dmc`` command.

``dmc demo``      complete a synthetic low-rank matrix and report the recovery error.
``dmc complete``  complete a matrix stored as .npy (NaN = missing) or .npz (scipy.sparse).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def _add_model_arguments(parser):
    parser.add_argument("--rank", type=int, default=10, help="rank budget (model width is 2*rank)")
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--method", default="compressed", choices=["compressed", "original", "narrow"])
    parser.add_argument("--max-iter", type=int, default=20000)
    parser.add_argument("--tol", type=float, default=1e-7)
    parser.add_argument("--seed", type=int, default=0)


def _estimator(args, **extra):
    from .estimator import DeepMatrixCompleter

    return DeepMatrixCompleter(rank=args.rank, depth=args.depth, method=args.method,
                               max_iter=args.max_iter, tol=args.tol, random_state=args.seed, **extra)


def _demo(args):
    from .datasets import make_low_rank

    m, n = args.shape
    M, mask = make_low_rank((m, n), args.true_rank, args.observed, random_state=args.seed)
    print(f"dmc demo: {m} x {n}, true rank {args.true_rank}, {mask.sum()} observed entries "
          f"({100 * args.observed:g}%), method={args.method}, rank={args.rank}, depth={args.depth}")
    start = time.perf_counter()
    model = _estimator(args, record_every=100).fit(M, mask, ground_truth=M)
    elapsed = time.perf_counter() - start
    h = model.history_
    for i in np.unique(np.linspace(0, len(h["iteration"]) - 1, 8).astype(int)):
        print(f"  step {h['iteration'][i]:>6d}  time {h['time'][i]:7.2f} s  "
              f"train loss {h['train_loss'][i]:.3e}  recovery error {h['recovery_error'][i]:.3e}")
    print(f"done: {model.n_iter_} steps in {elapsed:.2f} s, recovery error "
          f"{h['recovery_error'][-1]:.3e}, converged={model.converged_}")
    return 0


def _complete(args):
    import scipy.sparse as sp

    if args.input.endswith(".npz"):
        M = sp.load_npz(args.input)
    else:
        M = np.load(args.input)
    model = _estimator(args, verbose=args.verbose).fit(M)
    np.save(args.output, model.transform())
    print(f"wrote {args.output}: {model.shape_[0]} x {model.shape_[1]}, {model.n_iter_} steps, "
          f"converged={model.converged_}")
    return 0


def _bench(args):
    import runpy
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "benchmarks" / f"{args.name}.py"
    if not script.exists():
        print(f"no benchmark named {args.name!r} (looked for {script}); benchmarks run from a "
              "source checkout.", file=sys.stderr)
        return 2
    sys.argv = [str(script), *args.rest]
    runpy.run_path(str(script), run_name="__main__")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="dmc", description="deep low-rank matrix completion")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="complete a synthetic low-rank matrix")
    demo.add_argument("--shape", type=int, nargs=2, default=[1000, 1000], metavar=("M", "N"))
    demo.add_argument("--true-rank", type=int, default=5)
    demo.add_argument("--observed", type=float, default=0.2, help="observed fraction")
    _add_model_arguments(demo)
    demo.set_defaults(func=_demo)

    complete = sub.add_parser("complete", help="complete a .npy (NaN = missing) or .npz (sparse) matrix")
    complete.add_argument("input")
    complete.add_argument("output")
    complete.add_argument("--verbose", action="store_true")
    _add_model_arguments(complete)
    complete.set_defaults(func=_complete)

    bench = sub.add_parser("bench", help="run a benchmark script from benchmarks/")
    bench.add_argument("name")
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    bench.set_defaults(func=_bench)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
