"""The notebooks in notebooks/ run end to end and are committed without outputs.

Each notebook is executed with nbclient in a Jupyter kernel at small sizes:
its first code cell (tagged ``parameters``) is replaced by the small values
below, and a check cell appended at the end asserts on the results.  The
kernel is the interpreter running the tests (a kernelspec named ``python3``
that points at ``sys.executable`` is put first on ``JUPYTER_PATH``, and the
first cell checks ``sys.prefix``), with ``MPLBACKEND=Agg`` and the ``dmc``
package the tests import on its path.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
ML100K = Path(os.environ.get("DMC_MOVIELENS") or REPO.parent / "shared" / "data" / "ml-100k")

# notebook -> (parameters cell source at test size, check cell source, figures expected)
CASES = {
    "quickstart.ipynb": ("""
shape = (100, 100)
true_rank = 5
observed_fraction = 0.3
rank = 10
max_iter = 20000
random_state = 0
""", """
assert model.converged_, model.n_iter_
assert error < 1e-5, error
assert row_factors.shape == col_factors.shape == (100, 2 * 10)  # k = 2 * rank
""", 1),
    "paper_figures.ipynb": ("""
shape = (60, 60)
true_rank = 5
observed_fraction = 0.4
init_scale = 1e-2
max_iter = 6000
record_every = 20
target = 1e-2
sweep_shape = (60, 60)
sweep_fraction = 0.4
sweep_init_scale = 1e-2
sweep_max_iter = 6000
ranks = [5, 8]
seeds = [0]
""", """
assert set(final_error) == set(methods) and len(methods) == 3
assert all(e < 1e-2 for e in final_error.values()), final_error
assert final_error["original (wide, dense)"] < 1e-4 and final_error["narrow"] < 1e-4, final_error
assert np.isfinite(summary[f"steps to {target:g}"]).all(), summary
for m in ("compressed", "narrow"):
    assert sweep_final[m].shape == sweep_steps[m].shape == (2, 1)
    assert (sweep_final[m] < 0.1).all(), (m, sweep_final[m])
    assert np.isfinite(sweep_steps[m]).all(), (m, sweep_steps[m])
""", 3),
    "movielens.ipynb": (f"""
data_dir = {str(ML100K)!r}
split = "u1"
rank = 8
max_iter = 300
subsample = None
user = 1
k = 10
random_state = 0
""", """
assert data.train.ratings.size == 80000 and data.test.ratings.size == 20000
assert test_rmse < 1.0 and test_rmse < baseline_rmse - 0.1, (test_rmse, baseline_rmse)
assert test_mae < 0.8, test_mae
assert len(recommended) == k and np.all(np.diff(scores) <= 0)
assert not set(recommended.tolist()) & set(items[users == user].tolist())
assert len(titles) == 1682 and titles[1] == "Toy Story (1995)"
""", 1),
}


def _read(name):
    nbformat = pytest.importorskip("nbformat")
    return nbformat.read(str(NOTEBOOKS / name), as_version=4)


def _parameters_cell(nb):
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code and "parameters" in code[0].metadata.get("tags", []), \
        "the first code cell must be tagged 'parameters'"
    return code[0]


def test_every_notebook_is_tested():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_notebook_is_clean(name):
    """No outputs or execution counts are committed; strip with ``python notebooks/clean.py``."""
    nbformat = pytest.importorskip("nbformat")
    nb = _read(name)
    nbformat.validate(nb)
    dirty = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
             and (cell.outputs or cell.execution_count is not None)]
    assert not dirty, (f"{name}: cells {dirty} hold outputs or execution counts; "
                       "run `python notebooks/clean.py` before committing")
    _parameters_cell(nb)
    # the test-size parameters set every name the notebook's own parameters cell sets
    names = {line.split("=")[0].strip() for line in _parameters_cell(nb).source.splitlines()
             if "=" in line and not line.startswith(("#", " "))}
    small = {line.split("=")[0].strip() for line in CASES[name][0].splitlines() if "=" in line}
    assert names == small, (name, names ^ small)


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    """Environment for a ``python3`` kernel running this interpreter and this dmc."""
    for module in ("nbclient", "nbformat", "ipykernel", "matplotlib", "pandas"):
        pytest.importorskip(module)
    import dmc

    kernels = tmp_path_factory.mktemp("jupyter") / "kernels" / "python3"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (dmc tests)", "language": "python"}))
    package_root = str(Path(dmc.__file__).resolve().parents[1])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", os.pathsep.join(
            [str(kernels.parents[1]), *filter(None, [os.environ.get("JUPYTER_PATH")])]))
        mp.setenv("PYTHONPATH", os.pathsep.join(
            [package_root, *filter(None, [os.environ.get("PYTHONPATH")])]))
        mp.setenv("MPLBACKEND", "Agg")
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            mp.setenv(var, os.environ.get(var, "1"))  # small problems: threads only contend
        yield package_root


def _execute(name, package_root):
    from nbclient import NotebookClient
    from nbformat.v4 import new_code_cell

    nb = _read(name)
    parameters, checks, figures = CASES[name]
    _parameters_cell(nb).source = parameters.strip()
    nb.cells.insert(0, new_code_cell(
        "import sys, os, dmc\n"
        f"assert os.path.realpath(sys.prefix) == {os.path.realpath(sys.prefix)!r}, sys.executable\n"
        f"assert os.path.dirname(os.path.dirname(os.path.realpath(dmc.__file__))) == {package_root!r}"))
    nb.cells.append(new_code_cell(checks.strip()))
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    images = sum("image/png" in output.get("data", {})
                 for cell in nb.cells if cell.cell_type == "code" for output in cell.outputs)
    assert images == figures, f"{name}: {images} figures shown, expected {figures}"
    return nb


def test_quickstart_runs(kernel_env):
    _execute("quickstart.ipynb", kernel_env)


def test_paper_figures_runs(kernel_env):
    _execute("paper_figures.ipynb", kernel_env)


def test_movielens_runs(kernel_env):
    if not (ML100K / "u1.base").is_file():
        pytest.skip(f"MovieLens 100K not found at {ML100K} (set DMC_MOVIELENS to an ml-100k "
                    "folder, or place it at ../shared/data/ml-100k relative to the repo)")
    _execute("movielens.ipynb", kernel_env)


def test_interrupting_a_notebook_cell_stops_the_fit_cleanly(kernel_env):
    """Jupyter's "interrupt kernel" (SIGINT) ends a fit with its state, not a traceback."""
    from jupyter_client.manager import start_new_kernel

    code = (
        "from dmc import DeepMatrixCompleter\n"
        "from dmc.datasets import make_low_rank\n"
        "M, mask = make_low_rank((60, 60), 3, 0.3, random_state=0)\n"
        "started = lambda r: print('started', flush=True) if r['iteration'] == 50 else None\n"
        "model = DeepMatrixCompleter(rank=4, max_iter=10**7, tol=0, callbacks=started,\n"
        "                            random_state=0).fit(M, mask)\n"
        "print('stopped', model.stop_reason_, model.n_iter_ > 50)\n"
    )
    manager, client = start_new_kernel(kernel_name="python3")
    try:
        msg_id = client.execute(code)
        outputs, errors, interrupted = [], [], False
        while True:
            msg = client.get_iopub_msg(timeout=120)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                outputs.append(content["text"])
                if "started" in content["text"] and not interrupted:
                    manager.interrupt_kernel()
                    interrupted = True
            elif kind == "error":
                errors.append(content["ename"])
            elif kind == "status" and content["execution_state"] == "idle":
                break
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    text = "".join(outputs)
    assert not errors, errors
    assert "stopped interrupted True" in text and "FitInterruptedWarning" in text, text
