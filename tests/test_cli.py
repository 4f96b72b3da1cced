"""The ``dmc`` command, run through its entry points in subprocesses.

Most tests run ``python -m dmc``; ``test_installed_script`` runs the
``dmc`` console script that ``pip install`` puts next to the interpreter
(or, in a development checkout where it is not installed, the
``console_scripts`` entry point loaded by importlib.metadata).  Problems are
tiny (40 x 40, rank 2) with settings that converge in a few hundred steps.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp

from dmc.datasets import make_low_rank

REPO = Path(__file__).resolve().parent.parent
# fast settings for the 40 x 40 rank-2 problem: relative error ~1e-4 in 2000 steps
FAST = ["--rank", "2", "--init-scale", "0.1", "--gamma", "0.1", "--max-iter", "2000", "--tol", "1e-6"]


def _env(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["DMC_KERNELS"] = "scipy"  # no Numba compilation in each short-lived process
    env["MPLBACKEND"] = "Agg"
    env.update(extra)
    return env


def run_dmc(*args, cwd=None, env=None, command=None, timeout=180):
    """Run the command; returns the CompletedProcess (text mode)."""
    command = command or [sys.executable, "-m", "dmc"]
    return subprocess.run([*command, *map(str, args)], cwd=cwd, env=env or _env(),
                          capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(proc, status=2, contains=None):
    assert proc.returncode == status, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("dmc: error: "), proc.stderr
    if contains:
        assert contains.lower() in errors[0].lower(), errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def problem():
    """A 40 x 40 rank-2 matrix, half observed; row 0 is zero (observed zeros are values)."""
    M, mask = make_low_rank((40, 40), 2, 0.5, random_state=0)
    M[0] = 0.0  # still rank 2
    return M, mask


def check_completion(X, M, mask, *, error=1e-2):
    X = np.asarray(X, dtype=float)
    assert X.shape == M.shape
    assert np.linalg.norm(X - M) / np.linalg.norm(M) < error
    observed = np.linalg.norm((X - M)[mask]) / np.linalg.norm(M[mask])
    assert observed < error


def write_triplets(path, M, mask, *, header=True, one_based=False, delimiter=","):
    rows, cols = np.nonzero(mask)
    shift = 1 if one_based else 0
    lines = ([delimiter.join(["user", "item", "rating"])] if header else [])
    lines += [delimiter.join([str(i + shift), str(j + shift), repr(float(M[i, j]))]) for i, j in zip(rows, cols)]
    path.write_text("\n".join(lines) + "\n")


# -- help, version, entry points ----------------------------------------------------------
@pytest.mark.parametrize("args", [["--help"], ["demo", "--help"], ["complete", "--help"], ["bench", "--help"]],
                         ids=["top", "demo", "complete", "bench"])
def test_help(args):
    proc = run_dmc(*args)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: dmc"), proc.stdout
    assert proc.stderr == ""
    if args[0] == "bench":
        assert "core" in proc.stdout  # the available benchmarks are listed
    if args[0] == "complete":
        for option in ("--pairs", "--one-based", "--shape", "--rank", "--depth", "--method", "--max-iter",
                       "--tol", "--seed", "--backend", "--dtype", "--init-scale", "--lr", "--gamma",
                       "--verbose", "--save-model"):
            assert option in proc.stdout


def test_version():
    proc = run_dmc("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"dmc {importlib.metadata.version('dmc')}"


def test_no_command():
    assert_one_line_error(run_dmc(), contains="COMMAND")


def test_bad_option_value():
    assert_one_line_error(run_dmc("demo", "--rank", "x"), contains="--rank")


def _console_script():
    """The installed ``dmc`` script next to the interpreter, else its entry point via importlib.metadata."""
    script = shutil.which("dmc", path=str(Path(sys.executable).parent))
    if script:
        return [script]
    points = importlib.metadata.entry_points(group="console_scripts", name="dmc")
    if not points:
        pytest.skip("dmc is not installed here: no dmc script next to the interpreter and no "
                    "console_scripts entry point (pip install . provides both)")
    assert next(iter(points)).value == "dmc.cli:main"
    return [sys.executable, "-c", "import importlib.metadata as m, sys; "
            "sys.exit(next(iter(m.entry_points(group='console_scripts', name='dmc'))).load()())"]


def test_installed_script(tmp_path, problem):
    command = _console_script()
    proc = run_dmc("--version", command=command)
    assert proc.returncode == 0 and proc.stdout.startswith("dmc "), proc.stderr
    proc = run_dmc("complete", "--help", command=command)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: dmc complete")
    M, mask = problem
    np.save(tmp_path / "M.npy", np.where(mask, M, np.nan))
    proc = run_dmc("complete", tmp_path / "M.npy", "-o", tmp_path / "X.npy", *FAST, command=command)
    assert proc.returncode == 0, proc.stderr
    check_completion(np.load(tmp_path / "X.npy"), M, mask)
    assert_one_line_error(run_dmc("complete", tmp_path / "nope.npy", "-o", tmp_path / "X.npy", command=command),
                          contains="does not exist")


# -- dmc demo ------------------------------------------------------------------------
DEMO = ["demo", "--shape", "40", "40", "--true-rank", "2", "--observed", "0.5", *FAST]


def test_demo_prints_progress_and_writes_plot(tmp_path):
    pytest.importorskip("matplotlib")
    proc = run_dmc(*DEMO, "--print-every", "500", "--record-every", "50", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    steps = [line for line in proc.stdout.splitlines() if line.strip().startswith("step")]
    iterations = [int(line.split()[1]) for line in steps]
    assert iterations[:2] == [0, 500] and len(iterations) <= 6, proc.stdout  # throttled, not every record
    final = float(steps[-1].split("recovery error")[1])
    assert final < 1e-2
    assert "done:" in proc.stdout and "Traceback" not in proc.stderr
    plot = tmp_path / "dmc-demo.png"  # the default path, in the working directory
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_plot_path_and_no_plot(tmp_path):
    pytest.importorskip("matplotlib")
    proc = run_dmc(*DEMO, "--max-iter", "100", "--tol", "0.5", "--plot", tmp_path / "h.png", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "h.png").stat().st_size > 0
    proc = run_dmc(*DEMO, "--max-iter", "100", "--tol", "0.5", "--no-plot", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.png"]


def test_demo_without_matplotlib(tmp_path):
    blocker = tmp_path / "block" / "matplotlib"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('matplotlib blocked for this test')\n")
    env = _env(PYTHONPATH=os.pathsep.join([str(tmp_path / "block"), str(REPO)]))
    proc = run_dmc(*DEMO, "--max-iter", "100", "--tol", "0.5", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    notes = [line for line in proc.stderr.splitlines() if "matplotlib" in line]
    assert len(notes) == 1 and "dmc[plot]" in notes[0], proc.stderr
    assert "done:" in proc.stdout
    assert not (tmp_path / "dmc-demo.png").exists()


def test_demo_convergence_warning_is_one_line(tmp_path):
    proc = run_dmc(*DEMO, "--max-iter", "20", "--record-every", "10", "--no-plot", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("dmc: warning: ") and "max_iter=20" in lines[0], proc.stderr


def test_divergence_exits_1(tmp_path):
    proc = run_dmc(*DEMO, "--lr", "5", "--max-iter", "1000", "--no-plot", cwd=tmp_path)
    assert_one_line_error(proc, status=1, contains="diverged")


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT")
def test_ctrl_c_exits_130(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "dmc", "demo", "--shape", "100", "100", "--rank", "3", "--max-iter", "10000000",
         "--tol", "0", "--record-every", "10", "--print-every", "10", "--no-plot"],
        cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # as in a terminal: a runner started in the background (SIGINT ignored,
        # which children inherit) must not make the command deaf to Ctrl-C
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        first = ""
        deadline = time.monotonic() + 120
        while "step" not in first and time.monotonic() < deadline:  # wait until training runs
            first = process.stdout.readline()
            if not first and process.poll() is not None:
                break
        assert "step" in first, process.stderr.read() if process.poll() is not None else "no progress line"
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr, stderr


# -- dmc complete: input formats --------------------------------------------------------------
def _npy_nan(path, M, mask):
    np.save(path / "in.npy", np.where(mask, M, np.nan))
    return path / "in.npy", []


def _npz_nan(path, M, mask):
    np.savez(path / "in.npz", data=np.where(mask, M, np.nan))
    return path / "in.npz", []


def _npz_mask(path, M, mask):
    np.savez(path / "in.npz", M=np.where(mask, M, 123.0), mask=mask)  # unobserved values are ignored
    return path / "in.npz", []


def _npz_sparse(path, M, mask):
    stored = sp.csr_matrix((M[mask], np.nonzero(mask)), shape=M.shape)
    assert np.count_nonzero(stored.data == 0) == mask[0].sum() > 0  # stored zeros are observations
    sp.save_npz(path / "in.npz", stored)
    return path / "in.npz", []


def _mtx(path, M, mask):
    rows, cols = np.nonzero(mask)
    scipy.io.mmwrite(path / "in.mtx", sp.coo_matrix((M[rows, cols], (rows, cols)), shape=M.shape))
    return path / "in.mtx", []


def _csv_header(path, M, mask):
    write_triplets(path / "in.csv", M, mask, header=True)
    return path / "in.csv", []


def _csv_no_header(path, M, mask):
    write_triplets(path / "in.csv", M, mask, header=False)
    return path / "in.csv", ["--shape", "40", "40"]


def _csv_one_based(path, M, mask):
    write_triplets(path / "in.csv", M, mask, header=True, one_based=True)
    return path / "in.csv", ["--one-based"]


def _tsv(path, M, mask):
    write_triplets(path / "in.tsv", M, mask, header=False, delimiter="\t")
    return path / "in.tsv", []


WRITERS = [_npy_nan, _npz_nan, _npz_mask, _npz_sparse, _mtx, _csv_header, _csv_no_header, _csv_one_based, _tsv]


@pytest.mark.parametrize("writer", WRITERS, ids=[w.__name__.strip("_") for w in WRITERS])
def test_complete_input_formats(tmp_path, problem, writer):
    M, mask = problem
    source, options = writer(tmp_path, M, mask)
    proc = run_dmc("complete", source, "-o", tmp_path / "X.npy", *FAST, *options)
    assert proc.returncode == 0, proc.stderr
    assert f"{int(mask.sum())} observed entries" in proc.stderr  # stored zeros included
    check_completion(np.load(tmp_path / "X.npy"), M, mask)


@pytest.mark.parametrize("suffix", [".csv", ".npz", "-"])
def test_complete_output_formats(tmp_path, problem, suffix):
    M, mask = problem
    np.save(tmp_path / "in.npy", np.where(mask, M, np.nan))
    target = "-" if suffix == "-" else tmp_path / f"X{suffix}"
    proc = run_dmc("complete", tmp_path / "in.npy", "-o", target, *FAST)
    assert proc.returncode == 0, proc.stderr
    if suffix == ".csv":
        X = np.loadtxt(target, delimiter=",")
    elif suffix == ".npz":
        with np.load(target) as archive:
            X = archive["X"]
    else:
        X = np.loadtxt(proc.stdout.splitlines(), delimiter=",")
        assert "wrote" in proc.stderr
    check_completion(X, M, mask)


# -- dmc complete --pairs ------------------------------------------------------------------
def test_pairs_csv(tmp_path, problem):
    M, mask = problem
    write_triplets(tmp_path / "in.csv", M, mask, one_based=True)
    rows, cols = np.nonzero(~mask)
    rows, cols = rows[:25], cols[:25]
    (tmp_path / "pairs.csv").write_text("user,item\n" + "".join(f"{i + 1},{j + 1}\n" for i, j in zip(rows, cols)))
    proc = run_dmc("complete", tmp_path / "in.csv", "--one-based", "--pairs", tmp_path / "pairs.csv",
                   "-o", tmp_path / "pred.csv", *FAST)
    assert proc.returncode == 0, proc.stderr
    lines = (tmp_path / "pred.csv").read_text().splitlines()
    assert lines[0] == "row,col,value" and len(lines) == 26
    table = np.loadtxt(lines[1:], delimiter=",")
    np.testing.assert_array_equal(table[:, 0], rows + 1)  # the input's index base
    np.testing.assert_array_equal(table[:, 1], cols + 1)
    truth = M[rows, cols]
    assert np.linalg.norm(table[:, 2] - truth) / np.linalg.norm(truth) < 2e-2


def test_pairs_npy(tmp_path, problem):
    M, mask = problem
    np.save(tmp_path / "in.npy", np.where(mask, M, np.nan))
    pairs = np.array([[0, 0], [39, 39], [5, 17], [17, 5]])
    np.save(tmp_path / "pairs.npy", pairs)
    proc = run_dmc("complete", tmp_path / "in.npy", "--pairs", tmp_path / "pairs.npy",
                   "-o", tmp_path / "pred.npy", *FAST)
    assert proc.returncode == 0, proc.stderr
    values = np.load(tmp_path / "pred.npy")
    truth = M[pairs[:, 0], pairs[:, 1]]
    assert values.shape == (4,) and np.linalg.norm(values - truth) / np.linalg.norm(truth) < 2e-2


def test_save_model(tmp_path, problem):
    from dmc import DeepMatrixCompleter

    M, mask = problem
    np.save(tmp_path / "in.npy", np.where(mask, M, np.nan))
    proc = run_dmc("complete", tmp_path / "in.npy", "-o", tmp_path / "X.npy", "--save-model",
                   tmp_path / "model.npz", *FAST)
    assert proc.returncode == 0, proc.stderr
    model = DeepMatrixCompleter.load(tmp_path / "model.npz")
    np.testing.assert_allclose(model.transform(as_numpy=True), np.load(tmp_path / "X.npy"), rtol=1e-12, atol=1e-12)


# -- bad input: exit 2, one line ------------------------------------------------------------
def _bad_cases(tmp_path, M, mask):
    np.save(tmp_path / "good.npy", np.where(mask, M, np.nan))
    np.save(tmp_path / "vector.npy", np.arange(5.0))
    (tmp_path / "data.xyz").write_text("1,2,3\n")
    (tmp_path / "letters.csv").write_text("row,col,value\n0,1,2.5\n1,x,3.0\n")
    (tmp_path / "short.csv").write_text("0,1,2.5\n1,2\n")
    (tmp_path / "float_index.csv").write_text("0,1,2.5\n1.5,2,3.0\n")
    (tmp_path / "zero.csv").write_text("0,1,2.5\n1,2,3.0\n")
    (tmp_path / "duplicate.csv").write_text("0,1,2.5\n1,2,3.0\n0,1,4.0\n")
    (tmp_path / "empty.csv").write_text("")
    np.savez(tmp_path / "keys.npz", a=np.ones((3, 3)), b=np.ones((3, 3)))
    np.save(tmp_path / "pairs.npy", np.array([[0, 0], [40, 1]]))
    out = tmp_path / "X.npy"
    good = tmp_path / "good.npy"
    return {
        "missing file": (["complete", tmp_path / "missing.npy", "-o", out], "does not exist"),
        "wrong extension": (["complete", tmp_path / "data.xyz", "-o", out], "unknown input format"),
        "not a number": (["complete", tmp_path / "letters.csv", "-o", out], "line 3"),
        "field count": (["complete", tmp_path / "short.csv", "-o", out], "line 2"),
        "float index": (["complete", tmp_path / "float_index.csv", "-o", out], "integers"),
        "zero with --one-based": (["complete", tmp_path / "zero.csv", "--one-based", "-o", out], "start at 1"),
        "duplicate entry": (["complete", tmp_path / "duplicate.csv", "-o", out], "more than once"),
        "empty csv": (["complete", tmp_path / "empty.csv", "-o", out], "empty"),
        "index outside --shape": (["complete", tmp_path / "zero.csv", "--shape", "2", "2", "-o", out], "outside"),
        "npz keys": (["complete", tmp_path / "keys.npz", "-o", out], "expected one dense array"),
        "not 2-D": (["complete", tmp_path / "vector.npy", "-o", out], "2-D"),
        "rank too large": (["complete", good, "--rank", "30", "-o", out], "rank"),
        "output extension": (["complete", good, "-o", tmp_path / "X.txt.bad"], "unknown format"),
        "output folder": (["complete", good, "-o", tmp_path / "nowhere" / "X.npy"], "does not exist"),
        "pairs out of range": (["complete", good, "--pairs", tmp_path / "pairs.npy", "-o", out], "outside"),
        "missing -o": (["complete", good], "-o"),
        "unknown benchmark": (["bench", "no_such_benchmark"], "available"),
    }


def test_bad_inputs_exit_2_with_one_line(tmp_path, problem):
    cases = _bad_cases(tmp_path, *problem)
    failures = []
    for name, (args, expected) in cases.items():
        proc = run_dmc(*args)
        try:
            assert_one_line_error(proc, contains=expected)
        except AssertionError as exc:
            failures.append(f"{name}: {exc}")
    assert not failures, "\n".join(failures)
    assert not (tmp_path / "X.npy").exists()


def test_debug_shows_traceback(tmp_path):
    proc = run_dmc("--debug", "complete", tmp_path / "missing.npy", "-o", tmp_path / "X.npy")
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_bench_unknown_lists_names():
    line = assert_one_line_error(run_dmc("bench", "nope"))
    assert "core" in line


def test_model_defaults_match_the_estimator():
    """The command spells the estimator's defaults out (its --help shows them without
    importing the estimator); they must not drift apart."""
    import inspect

    from dmc import DeepMatrixCompleter
    from dmc.cli import _MODEL_DEFAULTS

    signature = inspect.signature(DeepMatrixCompleter.__init__).parameters
    assert _MODEL_DEFAULTS == {name: signature[name].default for name in _MODEL_DEFAULTS}


# -- model options reach the model: one tiny in-process fit per option --------------------------
def _has_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _history_steps(model):
    return model.history_["iteration"].tolist()


# option arguments -> check on the fitted DeepMatrixCompleter; every fit also gets
# --rank 2 --max-iter 20 --init-scale 0.1 unless the case sets them
MODEL_OPTION_CASES = {
    "rank": (["--rank", "3"], lambda m: m.rank == 3 and m.left_factor_.shape == (40, 6)),
    "depth": (["--depth", "4"], lambda m: m.depth == 4 and len(m.inner_factors_) == 4),
    "method": (["--method", "original"], lambda m: m.method == "original" and m.left_factor_.shape == (40, 40)),
    "max-iter": (["--max-iter", "7"], lambda m: m.max_iter == 7 and m.n_iter_ == 7),
    "tol": (["--tol", "0.9", "--max-iter", "2000"],
            lambda m: m.tol == 0.9 and m.stop_reason_ == "tol" and m.n_iter_ < 2000),
    "init-scale": (["--init-scale", "0.05"], lambda m: m.init_scale == 0.05),
    "lr": (["--lr", "0.0123"], lambda m: m.lr == 0.0123 and m.lr_ == 0.0123),
    "gamma": (["--gamma", "0.25"], lambda m: m.gamma == 0.25),
    "step-rule": (["--step-rule", "preconditioned"], lambda m: m.step_rule == "preconditioned"
                  and m.history_["step_size"][-1] != m.lr_),
    "no-normalize": (["--no-normalize"], lambda m: m.normalize is False and m.scale_ == 1.0),
    "record-every": (["--record-every", "3"], lambda m: m.record_every == 3
                     and _history_steps(m) == [0, 3, 6, 9, 12, 15, 18, 20]),
    "seed": (["--seed", "5"], lambda m: m.random_state == 5),
    "early-stopping": (["--early-stopping", "--max-iter", "2000"],
                       lambda m: m.early_stopping is True and "validation_rmse" in m.history_),
    "validation-fraction": (["--early-stopping", "--validation-fraction", "0.25"],
                            lambda m: m.validation_fraction == 0.25),
    "n-iter-no-change": (["--early-stopping", "--n-iter-no-change", "2"],
                         lambda m: m.n_iter_no_change == 2 and m.early_stopping is True),
    "backend": (["--backend", "numpy"], lambda m: m.backend == "numpy" and m.backend_.name == "numpy"),
    "device": (["--device", "cpu", "--backend", "torch"],
               lambda m: m.device == "cpu" and str(m.left_factor_.device) == "cpu"),
    "dtype": (["--dtype", "float32"], lambda m: m.dtype == "float32" and m.transform().dtype == np.float32),
    "verbose": (["-vv"], lambda m: m.verbose == 2),
}


@pytest.mark.filterwarnings("ignore::dmc.ConvergenceWarning")  # 20 steps stop at --max-iter on purpose
@pytest.mark.parametrize("option", sorted(MODEL_OPTION_CASES))
def test_model_option_reaches_the_model(option, tmp_path, problem, monkeypatch, capsys):
    """``dmc complete`` passes each model option on: a fit in-process with the estimator
    class replaced by a subclass that keeps the fitted instance."""
    import dmc.estimator
    from dmc import cli

    args, check = MODEL_OPTION_CASES[option]
    if "torch" in args and not _has_torch():
        pytest.skip("torch not installed")
    fitted = []

    class Keeping(dmc.estimator.DeepMatrixCompleter):
        def fit(self, *a, **kw):
            fitted.append(self)
            return super().fit(*a, **kw)

    monkeypatch.setattr(dmc.estimator, "DeepMatrixCompleter", Keeping)
    M, mask = problem
    np.save(tmp_path / "in.npy", np.where(mask, M, np.nan))
    defaults = {"--rank": "2", "--max-iter": "20", "--init-scale": "0.1"}
    extra = [a for flag, value in defaults.items() if flag not in args for a in (flag, value)]
    status = cli.main(["complete", str(tmp_path / "in.npy"), "-o", str(tmp_path / "X.npy"),
                       *extra, *args])
    capsys.readouterr()
    assert status == 0 and len(fitted) == 1
    model = fitted[0]
    assert check(model), {k: v for k, v in model.get_params().items() if k != "callbacks"}
    # what was written is the fitted model's completion
    np.testing.assert_array_equal(np.load(tmp_path / "X.npy"), model.transform(as_numpy=True))
