"""Distributed fits (dmc.distributed): processes on localhost with gloo, against one process.

Every multi-process test starts plain Python processes (tests/_distributed_worker.py)
with RANK / WORLD_SIZE / MASTER_PORT set, under a hard timeout: a hang fails the
test instead of stalling the suite.  The reference is the single-process fit on
all the entries, computed here in the test process.
"""

import json
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import example, given, settings
from hypothesis import strategies as st

from dmc import DeepMatrixCompleter
from dmc.metrics import factor_recovery_error, recovery_error

torch = pytest.importorskip("torch", reason="distributed fits need torch (dmc[torch])")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

from dmc import distributed  # noqa: E402  (needs nothing from torch at import, but tested with it)

REPO = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "_distributed_worker.py"
# far above what a run here takes (a few seconds): only a hang reaches it
HARD_TIMEOUT = 240


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _problem(m=36, n=28, r=2, fraction=0.5, seed=0):
    rng = np.random.default_rng(seed)
    A, B = rng.standard_normal((m, r)), rng.standard_normal((n, r))
    mask = rng.random((m, n)) < fraction
    rows, cols = np.nonzero(mask)
    return A, B, rows, cols, (A @ B.T)[rows, cols]


def _owners(kind, rows, cols, m, size):
    """Which process holds each entry (``kind`` a partition name or the owners themselves)."""
    if not isinstance(kind, str):
        return np.asarray(kind)
    if kind == "row_blocks":
        return (rows * size) // m
    if kind == "checkerboard":
        return (rows % size + cols % size) % size
    if kind == "empty_rank":  # the last process holds nothing
        return rows % (size - 1)
    if kind == "random":
        return np.random.default_rng(1).integers(0, size, rows.shape[0])
    raise ValueError(kind)


def _run(tmp_path, size, *, params, partition="row_blocks", scenario=None, factor_truth=True,
         timeout_env=None, problem=None, save=False):
    """Start ``size`` worker processes; returns ``{rank: ("ok", npz) or ("error", (type, message))}``."""
    A, B, rows, cols, values = problem or _problem()
    m, n = A.shape[0], B.shape[0]
    np.savez(tmp_path / "data.npz", rows=rows, cols=cols, values=values,
             owner=_owners(partition, rows, cols, m, size), shape=np.array([m, n]),
             truth_A=A, truth_B=B)
    spec = {"data": str(tmp_path / "data.npz"), "params": params, "scenario": scenario,
            "factor_truth": factor_truth, "timeout": 60, "save": save}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    port = _free_port()
    env = dict(os.environ, WORLD_SIZE=str(size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
               OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    if timeout_env is not None:
        env["DMC_DISTRIBUTED_TIMEOUT"] = str(timeout_env)
    processes = [subprocess.Popen([sys.executable, str(WORKER), str(tmp_path / "spec.json"),
                                   str(tmp_path)], env=dict(env, RANK=str(rank)),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                 for rank in range(size)]
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=HARD_TIMEOUT)[0].decode(errors="replace"))
    except subprocess.TimeoutExpired:
        for process in processes:
            process.kill()
        pytest.fail(f"the distributed run hung (killed after {HARD_TIMEOUT} s)")
    results = {}
    for rank in range(size):
        error_file, result_file = tmp_path / f"rank{rank}.err", tmp_path / f"rank{rank}.npz"
        if error_file.exists():
            kind, message = error_file.read_text().split("\n", 2)[:2]
            results[rank] = ("error", (kind, message))
        elif result_file.exists():
            results[rank] = ("ok", dict(np.load(result_file)))
        else:
            pytest.fail(f"rank {rank} wrote nothing; its output:\n{outputs[rank][-3000:]}")
    return results


def _single_process(params, problem=None, ground_truth="factors"):
    A, B, rows, cols, values = problem or _problem()
    M = sp.coo_matrix((values, (rows, cols)), shape=(A.shape[0], B.shape[0])).tocsr()
    truth = (A, B) if ground_truth == "factors" else A @ B.T
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return DeepMatrixCompleter(**params, backend="torch").fit(M, ground_truth=truth)


PARAMS = dict(rank=3, max_iter=300, random_state=0, record_every=10, init_scale=0.1)


# -- every process ends with the single-process model --------------------------------
@pytest.mark.parametrize("size, partition, step_rule", [
    (2, "row_blocks", "auto"),
    (3, "checkerboard", "auto"),
    (2, "empty_rank", "constant"),
    (3, "random", "preconditioned"),
])
def test_every_rank_equals_the_single_process_fit(tmp_path, size, partition, step_rule):
    # the subspace refresh is single-process only; distributed fits run without it
    params = dict(PARAMS, step_rule=step_rule, refresh_every=None)
    results = _run(tmp_path, size, params=params, partition=partition)
    reference = _single_process(params, ground_truth="dense")
    X = reference.transform(as_numpy=True)
    A, B, rows, cols, _ = _problem()
    for rank, (status, result) in results.items():
        assert status == "ok", (rank, result)
        assert int(result["n_iter"]) == reference.n_iter_
        assert np.max(np.abs(result["X"] - X)) <= 1e-8 * np.max(np.abs(X)), rank
        predicted = reference.predict(rows, cols, as_numpy=True)
        np.testing.assert_allclose(result["predicted"], predicted, rtol=1e-8,
                                   atol=1e-8 * np.max(np.abs(predicted)))
        # factor-pair truth on the processes, dense truth in the reference
        np.testing.assert_allclose(result["history_recovery_error"],
                                   reference.history_["recovery_error"], rtol=1e-7)
        np.testing.assert_allclose(result["history_train_loss"],
                                   reference.history_["train_loss"], rtol=1e-8)
    # the same full model on every process
    first = results[0][1]
    for rank in range(1, size):
        assert np.array_equal(results[rank][1]["X"], first["X"])
    assert first["left"].shape == (A.shape[0], 2 * params["rank"])
    # the fit went somewhere: this is not two untrained models agreeing
    assert reference.history_["recovery_error"][-1] < 0.5 * reference.history_["recovery_error"][0]


def test_saved_on_rank_zero_loads_and_predicts(tmp_path):
    results = _run(tmp_path, 2, params=PARAMS, partition="checkerboard", save=True)
    assert all(status == "ok" for status, _ in results.values())
    loaded = DeepMatrixCompleter.load(tmp_path / "model.npz")
    np.testing.assert_allclose(loaded.transform(as_numpy=True), results[1][1]["X"], rtol=0,
                               atol=1e-12)


# -- clear errors on every process, never a hang ------------------------------------------
def test_mismatched_shapes_fail_on_every_rank(tmp_path):
    results = _run(tmp_path, 3, params=PARAMS, scenario="mismatched_shape")
    for rank, (status, (kind, message)) in results.items():
        assert status == "error" and kind == "ValueError", (rank, kind, message)
        assert "disagree on shape" in message and "rank 2: (37, 28)" in message


def test_mismatched_parameters_fail_on_every_rank(tmp_path):
    results = _run(tmp_path, 2, params=PARAMS, scenario="mismatched_params")
    for rank, (status, (kind, message)) in results.items():
        assert status == "error" and kind == "ValueError"
        assert "depth (rank 0: 3, rank 1: 4)" in message


def test_duplicate_entry_across_ranks_fails_on_every_rank(tmp_path):
    A, B, rows, cols, values = _problem()
    # entry 0 stored by both processes
    problem = (A, B, np.append(rows, rows[0]), np.append(cols, cols[0]), np.append(values, values[0]))
    owners = _owners("checkerboard", rows, cols, A.shape[0], 2)
    owners = np.append(owners, 1 - owners[0])
    results = _run(tmp_path, 2, params=PARAMS, partition=owners, problem=problem)
    kinds = {rank: result for rank, (status, result) in results.items()}
    assert all(status == "error" for status, _ in results.values())
    assert all(kind == "ValueError" and "more than once" in message
               for kind, message in kinds.values())


def test_a_process_that_never_fits_is_an_error_not_a_hang(tmp_path):
    results = _run(tmp_path, 2, params=PARAMS, scenario="absent", timeout_env=10)
    assert results[1][0] == "error" and results[1][1][0] == "RuntimeError"
    status, (kind, message) = results[0]
    assert status == "error" and kind == "DistributedError"
    assert "distributed fit" in message


def test_without_a_process_group_is_a_clear_error():
    A, B, rows, cols, values = _problem()
    M = sp.coo_matrix((values, (rows, cols)), shape=(A.shape[0], B.shape[0])).tocsr()
    assert not dist.is_initialized()
    with pytest.raises(ValueError, match="initialized torch.distributed process group"):
        DeepMatrixCompleter(rank=2, backend="torch", distributed=True).fit(M)
    with pytest.raises(ValueError, match='distributed=True needs backend="torch"'):
        DeepMatrixCompleter(rank=2, distributed=True).fit(M)
    with pytest.raises(TypeError, match="distributed must be True or False"):
        DeepMatrixCompleter(rank=2, distributed="yes").fit(M)


# -- the pieces, one process ---------------------------------------------------------------
class _FakeComm:
    """Stands in for the other processes: ``objects`` returns the given reports."""

    def __init__(self, others):
        self.others = others
        self.size = len(others) + 1

    def objects(self, obj):
        return [obj, *self.others]

    def sum(self, array):
        return array


def test_agree_names_every_difference():
    comm = _FakeComm([{"shape": "(4, 5)", "rank": "2"}])
    with pytest.raises(ValueError, match=r"shape \(rank 0: \(4, 4\), rank 1: \(4, 5\)\)"):
        distributed.agree(comm, {"shape": (4, 4), "rank": 2})
    distributed.agree(_FakeComm([{"shape": "(4, 4)"}]), {"shape": (4, 4)})


def test_agree_compares_generators_by_state():
    a, b = np.random.default_rng(0), np.random.default_rng(1)
    fingerprint = distributed._fingerprint
    assert fingerprint(a) == fingerprint(np.random.default_rng(0)) != fingerprint(b)


def test_collectively_raises_the_other_ranks_error():
    comm = _FakeComm([("ValueError", "bad input on this process")])
    with pytest.raises(ValueError, match="rank 1 failed while reading.*bad input"):
        distributed.collectively(comm, "reading", lambda: 1)
    with pytest.raises(distributed.DistributedError, match="rank 1 failed.*OSError"):
        distributed.collectively(_FakeComm([("OSError", "disk")]), "reading", lambda: 1)
    assert distributed.collectively(_FakeComm([None]), "reading", lambda: 7) == 7


@settings(max_examples=60, deadline=None)
@given(counts=st.lists(st.integers(0, 20), min_size=1, max_size=40), size=st.integers(1, 6))
def test_row_blocks_cover_the_rows_in_balanced_blocks(counts, size):
    counts = np.array(counts)
    offsets = distributed.row_blocks(counts, size)
    assert offsets.shape == (size + 1,) and offsets[0] == 0 and offsets[-1] == len(counts)
    assert np.all(np.diff(offsets) >= 0)
    per_block = [counts[offsets[r]:offsets[r + 1]].sum() for r in range(size)]
    assert sum(per_block) == counts.sum()
    # no block holds more than its share plus one row
    assert max(per_block) <= counts.sum() / size + counts.max()


def test_summed_operator_equals_the_whole_matrix():
    rng = np.random.default_rng(3)
    G = sp.random(12, 9, density=0.4, random_state=4, format="csr")
    op = distributed.SummedOperator(G, _FakeComm([]))
    x, y = rng.standard_normal(9), rng.standard_normal(12)
    dense = G.toarray()
    np.testing.assert_allclose(op.matvec(x), dense @ x)
    np.testing.assert_allclose(op.rmatvec(y), dense.T @ y)
    np.testing.assert_allclose(op.matmat(rng.standard_normal((9, 3))).shape, (12, 3))
    X = rng.standard_normal((12, 2))
    np.testing.assert_allclose(op.rmatmat(X), dense.T @ X)


# -- recovery error from a factor pair ------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(m=st.integers(1, 30), n=st.integers(1, 30), k=st.integers(1, 6), r=st.integers(1, 6),
       seed=st.integers(0, 2**16), backend=st.sampled_from(["numpy", "torch"]))
def test_factor_recovery_error_equals_the_dense_one(m, n, k, r, seed, backend):
    rng = np.random.default_rng(seed)
    P, Q = rng.standard_normal((m, k)), rng.standard_normal((n, k))
    A, B = rng.standard_normal((m, r)), rng.standard_normal((n, r))
    dense = recovery_error(P @ Q.T, A @ B.T)
    arrays = [torch.from_numpy(a) for a in (P, Q, A, B)] if backend == "torch" else (P, Q, A, B)
    assert factor_recovery_error(*arrays) == pytest.approx(dense, rel=1e-10)


def test_factor_recovery_error_stays_accurate_near_zero():
    """A Gram-matrix expansion loses everything below ~1e-8; the QR form does not."""
    rng = np.random.default_rng(5)
    A, B = rng.standard_normal((50, 3)), rng.standard_normal((40, 3))
    P = A + 1e-11 * rng.standard_normal(A.shape)
    dense = recovery_error(P @ B.T, A @ B.T)  # about 1e-11
    assert factor_recovery_error(P, B, A, B) == pytest.approx(dense, rel=1e-3)


def test_factor_pair_ground_truth_equals_the_dense_one_in_a_fit():
    dense = _single_process(dict(PARAMS, max_iter=100), ground_truth="dense")
    factors = _single_process(dict(PARAMS, max_iter=100), ground_truth="factors")
    np.testing.assert_allclose(factors.history_["recovery_error"],
                               dense.history_["recovery_error"], rtol=1e-9)


def test_factor_pair_ground_truth_is_checked():
    A, B, rows, cols, values = _problem()
    M = sp.coo_matrix((values, (rows, cols)), shape=(A.shape[0], B.shape[0])).tocsr()
    with pytest.raises(ValueError, match=r"A needs shape \(36, r\)"):
        DeepMatrixCompleter(rank=2).fit(M, ground_truth=(B, A))
    with pytest.raises(TypeError, match="tuple"):
        DeepMatrixCompleter(rank=2).fit(M, ground_truth=(A,))


# -- the command under torchrun ----------------------------------------------------------
def _torchrun(tmp_path, size, *args, timeout=HARD_TIMEOUT):
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={size}", "-m", "dmc", "complete", *map(str, args), "--distributed"]
    try:
        return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"torchrun hung (killed after {timeout} s)")


def _write_inputs(tmp_path):
    A, B, rows, cols, values = _problem()
    with open(tmp_path / "in.csv", "w") as handle:
        handle.write("row,col,value\n")
        np.savetxt(handle, np.c_[rows, cols, values], fmt=["%d", "%d", "%.17g"], delimiter=",")
    import scipy.io

    scipy.io.mmwrite(tmp_path / "in.mtx", sp.coo_matrix((values, (rows, cols)),
                                                         shape=(A.shape[0], B.shape[0])))
    return A, B, rows, cols, values


@pytest.mark.parametrize("size, name", [(2, "in.csv"), (3, "in.mtx")])
def test_command_under_torchrun_writes_the_single_process_completion(tmp_path, size, name):
    _write_inputs(tmp_path)
    options = ["--rank", "3", "--max-iter", "200", "--init-scale", "0.1", "--seed", "0"]
    proc = _torchrun(tmp_path, size, name, "-o", "out.npy", *options, "--save-model", "model.npz")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("wrote the completed 36 x 28 matrix to out.npy") == 1  # rank 0 only
    reference = _single_process(dict(rank=3, max_iter=200, init_scale=0.1, random_state=0))
    X = reference.transform(as_numpy=True)
    written = np.load(tmp_path / "out.npy")
    assert np.max(np.abs(written - X)) <= 1e-8 * np.max(np.abs(X))
    loaded = DeepMatrixCompleter.load(tmp_path / "model.npz")
    np.testing.assert_allclose(loaded.transform(as_numpy=True), written, rtol=0, atol=1e-12)


def test_command_shares_cover_the_file_once(tmp_path):
    from dmc.io import read_share

    A, B, rows, cols, values = _write_inputs(tmp_path)
    expected = sp.coo_matrix((values, (rows, cols)), shape=(A.shape[0], B.shape[0])).toarray()
    for name in ("in.csv", "in.mtx"):
        for size in (1, 2, 3, 7):
            shares = [read_share(tmp_path / name, r, size) for r in range(size)]
            got = np.zeros_like(expected)
            count = 0
            for share_rows, share_cols, share_values, _, _ in shares:
                got[share_rows, share_cols] += share_values
                count += share_rows.size
            assert count == len(values)
            np.testing.assert_array_equal(got, expected)


def test_command_bad_share_fails_on_every_process(tmp_path):
    _write_inputs(tmp_path)
    text = (tmp_path / "in.csv").read_text().splitlines()
    text[-2] = "3,abc,1.0"  # in the last process's share
    (tmp_path / "bad.csv").write_text("\n".join(text) + "\n")
    proc = _torchrun(tmp_path, 2, "bad.csv", "-o", "out.npy", "--rank", "3", "--max-iter", "5")
    assert proc.returncode != 0
    assert proc.stderr.count("dmc: error:") == 2, proc.stderr[-3000:]
    assert "'abc' is not a number" in proc.stderr or "not row,col,value" in proc.stderr
    assert not (tmp_path / "out.npy").exists()


def test_command_without_torchrun_is_a_usage_error(tmp_path):
    _write_inputs(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for key in ("RANK", "WORLD_SIZE"):
        env.pop(key, None)
    proc = subprocess.run([sys.executable, "-m", "dmc", "complete", "in.csv", "-o", "out.npy",
                           "--distributed"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=HARD_TIMEOUT)
    assert proc.returncode == 2
    assert "runs under torchrun" in proc.stderr


def test_a_process_that_owns_no_rows(tmp_path):
    """All entries in two rows: the third process's row block holds no entry."""
    A, B, _, _, _ = _problem()
    rows = np.repeat([0, 1], B.shape[0])
    cols = np.tile(np.arange(B.shape[0]), 2)
    values = (A @ B.T)[rows, cols]
    problem = (A, B, rows, cols, values)
    params = dict(PARAMS, rank=1, max_iter=50)
    results = _run(tmp_path, 3, params=params, partition="checkerboard", problem=problem)
    offsets = distributed.row_blocks(np.bincount(rows, minlength=A.shape[0]), 3)
    assert np.bincount(rows, minlength=A.shape[0])[offsets[2]:].sum() == 0
    reference = _single_process(params, problem=problem, ground_truth="dense")
    X = reference.transform(as_numpy=True)
    for rank, (status, result) in results.items():
        assert status == "ok", (rank, result)
        assert np.max(np.abs(result["X"] - X)) <= 1e-8 * np.max(np.abs(X))


@settings(max_examples=40, deadline=None)
@given(entries=st.lists(st.tuples(st.integers(0, 50), st.integers(0, 50),
                                  st.floats(-1e3, 1e3, allow_nan=False)), min_size=1, max_size=30,
                        unique_by=lambda e: e[:2]),
       header=st.booleans(), comments=st.lists(st.integers(0, 30), max_size=5),
       size=st.integers(1, 6), matrix_market=st.booleans())
# comment lines before the header, longer than the first process's share of the bytes
@example(entries=[(1, 2, 0.5)], header=True, comments=[0, 0], size=6, matrix_market=False)
def test_read_share_reads_every_line_exactly_once(tmp_path_factory, entries, header, comments,
                                                   size, matrix_market):
    from dmc.io import read_share

    path = tmp_path_factory.mktemp("share") / ("in.mtx" if matrix_market else "in.csv")
    lines = [f"{r + matrix_market} {c + matrix_market} {v!r}" if matrix_market else f"{r},{c},{v!r}"
             for r, c, v in entries]
    for position in sorted(comments, reverse=True):  # comment and blank lines anywhere
        lines.insert(min(position, len(lines)), "%" if matrix_market else "# a comment")
        lines.insert(min(position, len(lines)), "")
    if matrix_market:
        lines = ["%%MatrixMarket matrix coordinate real general", "% made by a test",
                 f"51 51 {len(entries)}"] + lines
    elif header:  # after comment lines, possibly
        lines = ["# a comment"] * (len(comments) % 3) + ["row,col,value"] + lines
    path.write_text("\n".join(lines) + "\n")
    read = []
    for rank in range(size):
        rows, cols, values, shape, declared = read_share(path, rank, size)
        read.extend(zip(rows.tolist(), cols.tolist(), values.tolist()))
        assert declared == (len(entries) if matrix_market else None)
    assert sorted(read) == sorted((r, c, float(v)) for r, c, v in entries)
