"""The ``dmc`` command.

``dmc demo``       complete a synthetic low-rank matrix, print the recovery
                   error as it trains and plot the history.
``dmc complete``   complete a matrix read from .npy, .npz, .mtx or CSV triplets
                   and write the completed matrix or predictions at given pairs.
``dmc bench``      run a benchmark script of a source checkout.

Exit status: 0 on success, 2 on a usage error or bad input, 1 when the run
itself fails (divergence, a missing optional dependency, an unwritable
output), 130 when interrupted.  Errors are one line ``dmc: error: ...`` on
stderr; ``dmc --debug ...`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

from .io import (OUTPUT_SUFFIXES, _one_line, _suffix, read_matrix, read_pairs,
                 write_matrix, write_pairs)

__all__ = ["main"]

_MODEL_DEFAULTS = dict(rank=10, depth=3, method="compressed", max_iter=20000, tol=1e-7,
                       init_scale=1e-3, lr="auto", gamma=0.05, step_rule="auto",
                       validation_fraction=0.1, n_iter_no_change=50)


class CLIError(Exception):
    """A failure reported as one ``dmc: error:`` line with the given exit status."""

    def __init__(self, message, status=2):
        super().__init__(message)
        self.status = status


class _Formatter(argparse.HelpFormatter):
    """Wraps one-paragraph texts, keeps the line breaks of texts that have them."""

    def _fill_text(self, text, width, indent):
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``dmc: error: ... (see 'dmc X --help')``."""

    def error(self, message):
        self.exit(2, f"dmc: error: {message} (see '{self.prog} --help')\n")


# -- small helpers -------------------------------------------------------------
def _version():
    """The installed distribution's version, else the package's own ``__version__``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dmc")
    except PackageNotFoundError:
        from . import __version__

        return __version__


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """warnings.showwarning replacement: one line ``dmc: warning: ...``."""
    from .solver import ConvergenceWarning

    prefix = "" if issubclass(category, (ConvergenceWarning,)) or category is UserWarning \
        else f"{category.__name__}: "
    print(f"dmc: warning: {prefix}{_one_line(message)}", file=sys.stderr, flush=True)


def _lr(text):
    if text == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'must be "auto" or a positive number, not {text!r}') from None
    return value


def _checked(convert, accept, what):
    """An argparse type: ``convert(text)`` that ``accept`` holds for, else a usage error."""
    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not accept(value):
            raise argparse.ArgumentTypeError(f"must be {what}, not {text!r}")
        return value
    return parse


_fraction = _checked(float, lambda value: 0 < value <= 1, "a number in (0, 1]")
_positive_int = _checked(int, lambda value: value >= 1, "a positive integer")
_open_fraction = _checked(float, lambda value: 0 < value < 1, "a number in (0, 1)")


def _check_writable_target(path, what):
    """Fail early (before a long fit) when ``path``'s folder does not exist."""
    if str(path) == "-":
        return
    parent = Path(path).expanduser().resolve().parent
    if not parent.is_dir():
        raise CLIError(f"cannot write {what} {path}: folder {parent} does not exist")
    if Path(path).is_dir():
        raise CLIError(f"cannot write {what} {path}: it is a folder")


def _check_interrupted(model):
    """Ctrl-C during a fit: the estimator stops cleanly; the command then exits 130."""
    if getattr(model, "stop_reason_", None) == "interrupted":
        raise KeyboardInterrupt(f"interrupted at step {model.n_iter_}")


def _model_kwargs(args):
    kwargs = dict(rank=args.rank, depth=args.depth, method=args.method, max_iter=args.max_iter,
                  tol=args.tol, init_scale=args.init_scale, lr=args.lr, gamma=args.gamma,
                  step_rule=args.step_rule,
                  random_state=args.seed, backend=args.backend, device=args.device,
                  dtype=args.dtype, normalize=not args.no_normalize,
                  early_stopping=args.early_stopping, validation_fraction=args.validation_fraction,
                  n_iter_no_change=args.n_iter_no_change)
    if args.record_every is not None:
        kwargs["record_every"] = args.record_every
    return kwargs


def _add_model_arguments(parser, *, record_every_default=None):
    group = parser.add_argument_group("model")
    group.add_argument("--rank", type=_positive_int, default=_MODEL_DEFAULTS["rank"],
                       help="rank budget; may overestimate the true rank, needs 2*rank <= min(m, n) "
                            "(default %(default)s)")
    group.add_argument("--depth", type=_positive_int, default=_MODEL_DEFAULTS["depth"],
                       help="number of factors in the deep product, >= 2 (default %(default)s)")
    group.add_argument("--method", default=_MODEL_DEFAULTS["method"],
                       choices=["compressed", "original", "narrow"],
                       help="compressed (default), original (wide dense reference, small "
                            "problems only) or narrow")
    group.add_argument("--max-iter", type=_positive_int, default=_MODEL_DEFAULTS["max_iter"],
                       help="maximum number of gradient steps (default %(default)s)")
    group.add_argument("--tol", type=float, default=_MODEL_DEFAULTS["tol"],
                       help="stop when the relative residual on the observed entries is <= TOL "
                            "(default %(default)g)")
    group.add_argument("--init-scale", type=float, default=_MODEL_DEFAULTS["init_scale"],
                       help="scale eps of the orthogonal initialization (default %(default)g)")
    group.add_argument("--lr", type=_lr, default=_MODEL_DEFAULTS["lr"],
                       help='step size, or "auto" (default) to derive it from the data')
    group.add_argument("--gamma", type=float, default=_MODEL_DEFAULTS["gamma"],
                       help="step-size ratio of the outer factors (default %(default)g)")
    group.add_argument("--step-rule", default=_MODEL_DEFAULTS["step_rule"],
                       choices=["auto", "adaptive", "preconditioned", "switching", "constant"],
                       help="how gradients become steps: auto (chosen from the sampling: "
                            "preconditioned where rows and columns hold many observed entries, "
                            "switching where fewer, adaptive on sparse data), "
                            "adaptive (skips the initial plateau on the gradient-flow path, "
                            "with momentum), "
                            "preconditioned (ill-conditioned matrices), switching (adaptive, "
                            "then preconditioned once the fit stalls) or constant (the paper's "
                            "plain gradient descent) (default %(default)s)")
    group.add_argument("--no-normalize", action="store_true",
                       help="fit M as given instead of rescaled to a reference spectral norm")
    group.add_argument("--early-stopping", action="store_true",
                       help="hold out part of the observed entries and keep the state with the "
                            "best RMSE on them (for noisy data)")
    group.add_argument("--validation-fraction", type=_open_fraction,
                       default=_MODEL_DEFAULTS["validation_fraction"],
                       help="share of the observed entries held out with --early-stopping "
                            "(default %(default)s)")
    group.add_argument("--n-iter-no-change", type=_positive_int,
                       default=_MODEL_DEFAULTS["n_iter_no_change"], metavar="RECORDS",
                       help="records without a better validation RMSE before stopping, with "
                            "--early-stopping (default %(default)s)")
    group.add_argument("--record-every", type=_positive_int, default=record_every_default,
                       help="steps between history records and stopping checks"
                            + (" (default %(default)s)" if record_every_default else
                               " (default: the estimator's, 10)"))
    group.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    group.add_argument("--backend", default="auto", choices=["auto", "numpy", "torch", "cupy"],
                       help="array library to train in (default: auto, NumPy for files)")
    group.add_argument("--device", default=None,
                       help='device for torch/cupy, e.g. "cuda" or "cuda:1" (default: cpu/GPU 0)')
    group.add_argument("--dtype", default=None, choices=["float32", "float64"],
                       help="float precision (default: the input's, float64 for integers)")


# -- dmc demo ------------------------------------------------------------------
def _plot_available():
    try:
        from matplotlib.figure import Figure  # noqa: F401
    except ImportError:
        return False
    return True


def _demo(args):
    from .datasets import make_low_rank
    from .estimator import DeepMatrixCompleter

    m, n = args.shape
    if m < 1 or n < 1:
        raise CLIError(f"--shape must be positive; got {m} {n}")
    if args.true_rank < 1 or args.true_rank > min(m, n):
        raise CLIError(f"--true-rank must lie in [1, {min(m, n)}] for a {m} x {n} matrix; "
                       f"got {args.true_rank}")
    plot = None if args.no_plot else args.plot
    if plot is not None:
        _check_writable_target(plot, "the plot")
        if not _plot_available():
            print('dmc: warning: matplotlib is not installed, so no plot will be written '
                  '(install it with pip install "dmc[plot]")', file=sys.stderr, flush=True)
            plot = None

    M, mask = make_low_rank((m, n), args.true_rank, args.observed, random_state=args.seed)
    print(f"dmc demo: {m} x {n} matrix of rank {args.true_rank}, {int(mask.sum())} observed "
          f"entries ({100 * args.observed:g}%); method={args.method}, rank={args.rank}, "
          f"depth={args.depth}", flush=True)

    printed = {"next": 0, "last": None}

    def show(record):  # a callback: called at every history record, None = keep going
        if record["iteration"] < printed["next"]:
            return None
        printed["next"] = (record["iteration"] // args.print_every + 1) * args.print_every
        printed["last"] = record["iteration"]
        print(f"  step {record['iteration']:>7d}  time {record['time']:8.2f} s  "
              f"train loss {record['train_loss']:.3e}  "
              f"recovery error {record['recovery_error']:.3e}", flush=True)

    model = DeepMatrixCompleter(**_model_kwargs(args), callbacks=[show])
    start = time.perf_counter()
    model.fit(M, mask, ground_truth=M)
    elapsed = time.perf_counter() - start
    history = model.history_
    _check_interrupted(model)
    if printed["last"] != int(history["iteration"][-1]):
        printed["next"] = 0
        show({key: (int(v[-1]) if key == "iteration" else float(v[-1])) for key, v in history.items()})
    status = "converged" if model.converged_ else "not converged"
    print(f"done: {model.n_iter_} steps in {elapsed:.2f} s ({status}), recovery error "
          f"{history['recovery_error'][-1]:.3e}", flush=True)
    if plot is not None:
        from .plotting import plot_histories

        label = f"{args.method}, rank {args.rank}, depth {args.depth}"
        figure = plot_histories({label: history}, metric="recovery_error",
                                title=f"dmc demo: {m} x {n}, rank {args.true_rank}, "
                                      f"{100 * args.observed:g}% observed")
        try:
            figure.savefig(plot, dpi=90)
        except OSError as exc:
            raise CLIError(f"cannot write the plot {plot}: {exc.strerror or exc}", status=1) from exc
        print(f"plot: {plot}", flush=True)
    return 0


# -- dmc complete --------------------------------------------------------------------
def _check_output(path, what="output"):
    if str(path) == "-":
        return
    suffix = _suffix(path)
    if suffix not in OUTPUT_SUFFIXES:
        raise CLIError(f"{what} {path}: unknown format {suffix or '(no extension)'!r}; use .npy, "
                       ".npz or .csv (or - for CSV on stdout)")
    _check_writable_target(path, f"the {what}")


def _complete(args):
    if args.distributed:
        return _complete_distributed(args)
    _check_output(args.output)
    if args.save_model is not None:
        _check_writable_target(args.save_model, "the model")
    if args.shape is not None and min(args.shape) < 1:
        raise CLIError(f"--shape must be positive; got {args.shape[0]} {args.shape[1]}")
    M, mask, n_observed = read_matrix(args.input, one_based=args.one_based, shape=args.shape)
    shape = tuple(int(s) for s in M.shape)
    pairs = None
    if args.pairs is not None:
        pairs = read_pairs(args.pairs, one_based=args.one_based, shape=shape)

    from .estimator import DeepMatrixCompleter  # after the input checks: the import takes a while

    # -v: a progress bar, -vv: a line per record
    model = DeepMatrixCompleter(**_model_kwargs(args), verbose=min(args.verbose, 2))
    if args.verbose:
        print(f"dmc: {args.input}: {shape[0]} x {shape[1]} matrix, {n_observed} observed entries; "
              f"fitting rank {args.rank}, depth {args.depth}, {args.method}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # progress never mixes with `-o -` data
        model.fit(M, mask)
    elapsed = time.perf_counter() - start
    _check_interrupted(model)  # a partial result is not written
    _write_result(args, model, pairs, n_observed, elapsed)
    return 0


def _write_result(args, model, pairs, n_observed, elapsed, processes=""):
    """Write the predictions at ``pairs`` (or the completed matrix) and the saved
    model, then report on stderr; ``processes`` names the process count."""
    import numpy as np

    m, n = model.shape_
    status = "converged" if model.converged_ else "stopped at --max-iter"
    if pairs is not None:
        values = np.asarray(model.predict(*pairs, as_numpy=True))
        write_pairs(args.output, *pairs, values, one_based=args.one_based)
        wrote = f"{len(values)} predictions"
    else:
        write_matrix(args.output, np.asarray(model.transform(as_numpy=True)))
        wrote = f"the completed {m} x {n} matrix"
    if args.save_model is not None:
        model.save(args.save_model)
    where = "stdout" if str(args.output) == "-" else args.output
    print(f"dmc: {m} x {n} matrix, {n_observed} observed entries{processes}: {model.n_iter_} "
          f"steps in {elapsed:.2f} s ({status}); wrote {wrote} to {where}"
          + (f"; model saved to {args.save_model}" if args.save_model is not None else ""),
          file=sys.stderr, flush=True)


def _start_process_group(args):
    """The process group of ``dmc complete --distributed`` (started by torchrun's environment).

    Returns True when this call initialized it (and must destroy it).
    """
    try:
        import torch
        import torch.distributed as dist
    except ImportError:
        raise ImportError('--distributed needs torch: pip install "dmc[torch]"') from None
    if dist.is_initialized():
        return False
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise CLIError("--distributed runs under torchrun, which starts the processes: "
                       "torchrun --nproc_per_node=N -m dmc complete INPUT -o OUTPUT --distributed")
    device = args.device or ""
    gpu = device.startswith("cuda") or (not device and torch.cuda.is_available())
    dist.init_process_group("nccl" if gpu else "gloo")
    return True


def _complete_distributed(args):
    """``dmc complete --distributed``: every process reads its share; rank 0 writes."""
    import numpy as np
    import scipy.sparse as sp

    from .io import read_share

    if args.backend not in ("auto", "torch"):
        raise CLIError(f"--distributed trains with --backend torch; got --backend {args.backend}")
    if args.method != "compressed":
        raise CLIError(f"--distributed fits --method compressed only; got --method {args.method}")
    created = _start_process_group(args)
    try:
        import torch.distributed as dist

        from . import distributed
        from .estimator import DeepMatrixCompleter

        rank, size = dist.get_rank(), dist.get_world_size()
        comm = distributed.Communicator(distributed.local_device(args.device)
                                        if dist.get_backend() == "nccl" else None)
        comm.start()

        def check_targets():
            if rank == 0:
                _check_output(args.output)
                if args.save_model is not None:
                    _check_writable_target(args.save_model, "the model")
            if args.shape is not None and min(args.shape) < 1:
                raise CLIError(f"--shape must be positive; got {args.shape[0]} {args.shape[1]}")
            return read_share(args.input, rank, size, one_based=args.one_based, shape=args.shape)

        rows, cols, values, shape, declared = distributed.collectively(
            comm, f"reading its share of {args.input}", check_targets)
        if shape is None:  # CSV without --shape: the largest index of any share, plus one
            local = np.array([rows.max() + 1 if rows.size else 0,
                              cols.max() + 1 if cols.size else 0], dtype=np.int64)
            shape = tuple(int(s) for s in comm.max(local))
        n_observed = int(comm.sum(np.array([rows.size], dtype=np.int64))[0])
        if declared is not None and n_observed != declared:
            raise ValueError(f"{args.input}: the header declares {declared} entries but the file "
                             f"holds {n_observed}: it is truncated or the header is wrong")
        # COO, not CSR: an entry given twice is reported by the fit, not summed
        M = sp.coo_matrix((values, (rows, cols)), shape=shape)
        pairs = distributed.collectively(
            comm, f"reading {args.pairs}",
            lambda: read_pairs(args.pairs, one_based=args.one_based, shape=shape)
            if args.pairs is not None and rank == 0 else None)
        kwargs = dict(_model_kwargs(args), backend="torch")
        model = DeepMatrixCompleter(**kwargs, verbose=min(args.verbose, 2) if rank == 0 else 0,
                                    distributed=True)
        if args.verbose and rank == 0:
            print(f"dmc: {args.input}: {shape[0]} x {shape[1]} matrix, {n_observed} observed "
                  f"entries on {size} processes; fitting rank {args.rank}, depth {args.depth}",
                  file=sys.stderr, flush=True)
        start = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):
            model.fit(M)
        elapsed = time.perf_counter() - start
        if rank != 0:
            return 0
        _write_result(args, model, pairs, n_observed, elapsed, processes=f", {size} processes")
        return 0
    finally:
        if created:
            import torch.distributed as dist

            dist.destroy_process_group()


# -- dmc bench -----------------------------------------------------------------
def _benchmark_dirs():
    """Candidate benchmarks/ folders: the source checkout this module lives in, then ./benchmarks."""
    here = Path(__file__).resolve().parent.parent / "benchmarks"
    cwd = Path.cwd() / "benchmarks"
    return [d for d in dict.fromkeys([here, cwd])
            if d.is_dir() and (d.parent / "dmc").is_dir() and (d.parent / "pyproject.toml").is_file()]


def _benchmark_names():
    names = {}
    for folder in _benchmark_dirs():
        for script in sorted(folder.glob("*.py")):
            if not script.name.startswith("_"):
                names.setdefault(script.stem, script)
    return names


def _bench(args):
    names = _benchmark_names()
    if not names:
        raise CLIError("no benchmarks/ folder found: the benchmarks are not installed with the "
                       "package; run dmc bench from a source checkout of dmc")
    if args.name is None:
        raise CLIError(f"missing NAME: choose a benchmark among {', '.join(sorted(names))}")
    if args.name not in names:
        raise CLIError(f"no benchmark named {args.name!r}; available: {', '.join(sorted(names))}")
    script = names[args.name]
    env = dict(os.environ)
    repo = str(script.parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([repo] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return subprocess.call([sys.executable, str(script), *args.rest], env=env)


def _bench_epilog():
    names = sorted(_benchmark_names())
    listed = ", ".join(names) if names else "none found (run from a source checkout of dmc)"
    return (f"available benchmarks: {listed}. Arguments after NAME go to the script; "
            "'dmc bench NAME --help' shows them (most take --quick for a fast smoke run).")


# -- the parser ------------------------------------------------------------------
def build_parser():
    """The ``dmc`` argument parser."""
    formatter = _Formatter
    parser = _Parser(prog="dmc", formatter_class=formatter,
                     description="dmc: deep low-rank matrix completion (compressed deep "
                                 "factorizations, Yaras et al., ICML 2024).",
                     epilog="Run 'dmc COMMAND --help' for a command's options. Exit status: 0 "
                            "success, 1 failed run, 2 usage error or bad input, 130 interrupted.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("--debug", action="store_true",
                        help="show Python tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    debug = _Parser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show Python tracebacks instead of one-line errors")

    demo = sub.add_parser(
        "demo", parents=[debug], formatter_class=formatter,
        help="complete a synthetic low-rank matrix and plot the recovery error",
        description="Complete a random low-rank matrix from a uniform sample of its entries, "
                    "printing the recovery error ||X - M||_F / ||M||_F as training runs, and save "
                    "a plot of its history (needs matplotlib: pip install \"dmc[plot]\").")
    demo.add_argument("--shape", type=int, nargs=2, default=[1000, 1000], metavar=("M", "N"),
                      help="matrix size (default 1000 1000)")
    demo.add_argument("--true-rank", type=int, default=5, help="rank of the matrix (default 5)")
    demo.add_argument("--observed", type=_fraction, default=0.2,
                      help="observed fraction of the entries (default 0.2)")
    demo.add_argument("--print-every", type=_positive_int, default=500, metavar="STEPS",
                      help="print the recovery error about every STEPS steps (default 500)")
    demo.add_argument("--plot", default="dmc-demo.png", metavar="PATH",
                      help="where to save the plot (default dmc-demo.png)")
    demo.add_argument("--no-plot", action="store_true", help="do not save a plot")
    _add_model_arguments(demo, record_every_default=100)
    demo.set_defaults(func=_demo)

    complete = sub.add_parser(
        "complete", parents=[debug], formatter_class=formatter,
        help="complete a matrix read from a file",
        description="Fill in the missing entries of a matrix read from INPUT and write the "
                    "completed matrix, or with --pairs only the requested entries, to OUTPUT.",
        epilog="input formats (by extension):\n"
               "  .npy        dense array, NaN = missing\n"
               "  .npz        one dense array (NaN = missing); arrays 'M' and 'mask' (True =\n"
               "              observed); or scipy.sparse.save_npz output (stored entries,\n"
               "              zeros included, are the observed ones)\n"
               "  .mtx        Matrix Market (coordinate: stored entries are observed)\n"
               "  .csv/.tsv   triplets row,col,value; header line optional; 0-based unless\n"
               "              --one-based; shape max index + 1 unless --shape M N\n"
               "output formats:\n"
               "  .npy, .npz (array 'X'), .csv/.tsv (dense text), or - (CSV on stdout);\n"
               "  with --pairs: .csv/.tsv lines row,col,value (same index base as the input),\n"
               "  .npy (the values, in pair order), .npz (arrays row, col, value).\n"
               "The dense output is m x n: for large matrices use --pairs.")
    complete.add_argument("input", metavar="INPUT", help="the matrix to complete")
    complete.add_argument("-o", "--output", required=True, metavar="OUTPUT",
                          help="where to write the result (.npy, .npz, .csv, or - for stdout)")
    complete.add_argument("--pairs", metavar="FILE", default=None,
                          help="write predictions only at these (row, col) pairs: CSV lines "
                               "row,col (header optional) or a k x 2 .npy array")
    complete.add_argument("--one-based", action="store_true",
                          help="CSV and pair indices start at 1 (default 0)")
    complete.add_argument("--shape", type=int, nargs=2, metavar=("M", "N"), default=None,
                          help="matrix shape for CSV triplets (default: largest index + 1)")
    complete.add_argument("--save-model", metavar="PATH", default=None,
                          help="also save the fitted model (DeepMatrixCompleter.save)")
    complete.add_argument("--distributed", action="store_true",
                          help="fit on several processes started by torchrun "
                               "(torchrun --nproc_per_node=N -m dmc complete ... --distributed): "
                               "each reads its share of a .mtx or CSV triplet file, rank 0 "
                               "writes the output (gloo on CPUs, NCCL on GPUs)")
    complete.add_argument("-v", "--verbose", action="count", default=0,
                          help="report training progress on stderr (repeat for more detail)")
    _add_model_arguments(complete)
    complete.set_defaults(func=_complete)

    bench = sub.add_parser(
        "bench", parents=[debug], formatter_class=formatter,
        help="run a benchmark script (source checkout only)",
        description="Run benchmarks/NAME.py of a source checkout of dmc with the given arguments.",
        epilog=_bench_epilog())
    bench.add_argument("name", metavar="NAME", nargs="?", default=None, help="benchmark name")
    bench.add_argument("rest", nargs=argparse.REMAINDER, metavar="ARGS",
                       help="arguments passed to the script")
    bench.set_defaults(func=_bench)
    return parser


# -- entry point -------------------------------------------------------------------
def _run(args):
    from .solver import DivergenceError

    try:
        return args.func(args)
    except CLIError as exc:
        return _fail(exc, exc.status, args)
    except FileNotFoundError as exc:
        return _fail(exc, 2, args)
    except (ValueError, TypeError) as exc:
        return _fail(exc, 2, args)
    except DivergenceError as exc:
        return _fail(exc, 1, args)
    except RuntimeError as exc:
        from .distributed import DistributedError

        if isinstance(exc, DistributedError):  # another process failed
            return _fail(exc, 1, args)
        raise
    except ImportError as exc:
        return _fail(exc, 1, args)
    except BrokenPipeError:
        raise
    except MemoryError as exc:
        return _fail(exc, 1, args, message=f"out of memory ({exc})" if str(exc) else "out of memory")
    except OSError as exc:
        return _fail(exc, 1, args)


def _fail(exc, status, args, message=None):
    """Print ``dmc: error: ...`` (one line) and return ``status``; re-raise with --debug."""
    if getattr(args, "debug", False):
        raise exc
    if message is None and isinstance(exc, OSError) and exc.strerror and exc.filename:
        message = f"{exc.filename}: {exc.strerror}"
    elif message is None:
        message = _one_line(exc) or type(exc).__name__
    print(f"dmc: error: {message}", file=sys.stderr, flush=True)
    return status


def main(argv=None):
    """Run the ``dmc`` command with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.error("missing COMMAND: choose demo, complete or bench")
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            from .solver import FitInterruptedWarning

            warnings.simplefilter("ignore", FitInterruptedWarning)  # reported as exit status 130
            return _run(args)
    except KeyboardInterrupt as exc:
        if getattr(args, "debug", False):
            raise
        print(f"\ndmc: {str(exc) or 'interrupted'}", file=sys.stderr, flush=True)
        return 130
    except BrokenPipeError:
        # the reader went away (dmc complete ... -o - | head): exit quietly
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
