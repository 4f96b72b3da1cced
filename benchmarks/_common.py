"""Shared helpers of the benchmark scripts: paths, CLI, machine description,
JSON and README writing, timing, and the separate interpreter for the peers.

Each benchmark ``benchmarks/NAME.py`` runs as ``python benchmarks/NAME.py
[--quick]`` or ``dmc bench NAME [--quick]``.  Full mode writes
``benchmarks/results/NAME.json``, ``benchmarks/figures/NAME*.png`` and its
own section of ``benchmarks/README.md``; ``--quick`` runs tiny sizes and
writes to a temporary directory (or ``--output-dir``) and never touches the
committed results or the README.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

# Single-threaded kernels and BLAS by default (override: DMC_BENCH_THREADS=N):
# on a shared, loaded machine numba's parallel kernels with more threads than
# free cores spin and run tens of times slower, and one thread everywhere keeps
# dmc and the peers on equal terms.  Must be set before numpy/numba load.
BENCH_THREADS = os.environ.get("DMC_BENCH_THREADS", "1")
for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, BENCH_THREADS)

import numpy as np  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
FIGURES_DIR = BENCH_DIR / "figures"
README = BENCH_DIR / "README.md"

if str(REPO) not in sys.path:  # run from a source checkout without installing
    sys.path.insert(0, str(REPO))

# The peers (fancyimpute 0.7.0) need a scikit-learn that still accepts
# check_array(force_all_finite=...), i.e. < 1.6: they live in their own venv.
PEERS_VENV = Path(os.environ.get("DMC_PEERS_VENV", "/tmp/dmc-peers-venv"))
PEERS_REQUIREMENTS = ["scikit-learn>=1.3,<1.6", "fancyimpute==0.7.0", "cmfrec",
                      "numpy", "scipy", "numba", "array-api-compat", "matplotlib", "psutil"]

README_INTRO_BODY = """## Synthetic recovery benchmarks and peers

Synthetic recovery benchmarks after Yaras et al. (ICML 2024) and comparisons
with other completion methods ("peers"). Every number and figure below is
written by the scripts in this folder from real runs; rerun one with

    python benchmarks/NAME.py          # full mode: rewrites results/, figures/ and its section here
    python benchmarks/NAME.py --quick  # tiny sizes, seconds, writes to a temp dir
    dmc bench NAME [--quick]           # the same through the CLI

Settings are labelled: **paper** = `normalize=False, lr=5e-3, init_scale=1e-3,
gamma=0.01, depth=3` (the paper's loss scaling), **dmc default** =
`normalize=True, lr="auto"`.  Timings are wall-clock on the machine named in
each section, which is shared with other work: compare ratios measured within
one run, not absolute times across sections.

Peers that need scikit-learn < 1.6 (fancyimpute 0.7.0) run in a separate
virtual environment, created on demand by `python benchmarks/_common.py
--setup-peers-venv` at `/tmp/dmc-peers-venv` (override with `DMC_PEERS_VENV`);
`peers.py`, `low_sample.py` and `approximate_low_rank.py` re-run themselves under it when it exists and
skip the unavailable peers (saying so in their JSON) when it does not.

Budget: the seven synthetic scripts (`original_vs_compressed`, `rank_overestimation`,
`depth_benefit`, `low_sample`, `peers`, `scaling`, `conditioning`) are sized to
finish in about 40 minutes together in full mode on a 2-core machine, one thread
each, run one after the other; each fit is capped in steps and wall time, and each section
states its caps and the script's own wall time.
"""
README_INTRO = "# dmc benchmarks\n\n"


# -- command line -------------------------------------------------------------
def parse_args(name, description, argv=None, extra=None):
    """Parse ``--quick`` / ``--output-dir`` / ``--no-readme``; returns (args, out).

    ``out`` holds the paths to write: ``out.json``, ``out.figure(suffix)``
    and ``out.readme`` (None when the README must not be touched).
    """
    parser = argparse.ArgumentParser(prog=f"benchmarks/{name}.py", description=description)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, seconds; writes to a temp dir")
    parser.add_argument("--output-dir", default=None,
                        help="write results/ and figures/ here instead of benchmarks/")
    parser.add_argument("--no-readme", action="store_true", help="do not update benchmarks/README.md")
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    if args.output_dir is not None:
        base = Path(args.output_dir)
    elif args.quick:
        base = Path(tempfile.mkdtemp(prefix=f"dmc-bench-{name}-"))
    else:
        base = BENCH_DIR
    suffix = "_quick" if args.quick else ""
    readme = None if (args.quick or args.no_readme or args.output_dir) else README
    return args, Outputs(name, base, suffix, readme)


class Outputs:
    def __init__(self, name, base, suffix, readme):
        self.name, self.base, self.suffix, self.readme = name, Path(base), suffix, readme
        (self.base / "results").mkdir(parents=True, exist_ok=True)
        (self.base / "figures").mkdir(parents=True, exist_ok=True)

    @property
    def json(self):
        return self.base / "results" / f"{self.name}{self.suffix}.json"

    def figure(self, part=""):
        part = f"_{part}" if part else ""
        return self.base / "figures" / f"{self.name}{part}{self.suffix}.png"

    def rel(self, path):
        """Path as written in the README (relative to benchmarks/)."""
        try:
            return Path(path).relative_to(BENCH_DIR).as_posix()
        except ValueError:
            return str(path)


# -- machine --------------------------------------------------------------------
def _cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module):
    try:
        mod = __import__(module)
        return getattr(mod, "__version__", "?")
    except Exception:  # noqa: BLE001 - any import problem means "not available"
        return None


def machine_info(extra_modules=()):
    """CPU model, core count, memory, Python and library versions, date."""
    info = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "threads": os.environ.get("NUMBA_NUM_THREADS"),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    try:
        import psutil

        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
        info["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    except Exception:  # noqa: BLE001
        pass
    for module in ("numpy", "scipy", "numba", "dmc", *extra_modules):
        info[module] = _version(module)
    return info


_START = time.perf_counter()


def elapsed_minutes():
    """Minutes since this module was imported (the script's wall time so far)."""
    return (time.perf_counter() - _START) / 60.0


def machine_line(info, wall_minutes=None):
    """One line naming the machine; ``wall_minutes`` defaults to the time since import."""
    parts = [f"{info['cpu']}, {info['cores']} cores (benchmarks run on {info.get('threads')} thread)"]
    if "memory_gb" in info:
        parts.append(f"{info['memory_gb']} GiB")
    parts.append(f"Python {info['python']}, numpy {info['numpy']}, scipy {info['scipy']}, "
                 f"numba {info['numba']}")
    if info.get("load_average_at_start"):
        parts.append(f"load average at start {info['load_average_at_start'][0]}")
    parts.append(info["date"])
    minutes = elapsed_minutes() if wall_minutes is None else wall_minutes
    parts.append(f"script wall time {minutes:.1f} min")
    return "; ".join(parts)


# -- writing --------------------------------------------------------------------
def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        value = float(obj)
        return value if np.isfinite(value) else None
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    return obj


def write_json(path, payload):
    path = Path(path)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_jsonable(payload), indent=1) + "\n")
    tmp.replace(path)
    print(f"wrote {path}")
    return path


def save_figure(fig, path, dpi=90):
    fig.savefig(path, dpi=dpi)
    size = Path(path).stat().st_size
    print(f"wrote {path} ({size // 1024} KB)")
    return path


def replace_readme_section(name, body, readme=README):
    """Replace the text between ``<!-- BEGIN name -->`` and ``<!-- END name -->``
    (appending the section if absent; creating the README with an intro if
    missing).  Other sections are preserved byte for byte."""
    readme = Path(readme)
    text = readme.read_text() if readme.exists() else README_INTRO
    text = _with_about(text) if name != "about" else text
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    readme.write_text(text)
    print(f"updated section {name} of {readme}")


def _with_about(text):
    """Insert the synthetic-benchmarks intro (section ``about``) after the
    title when it is missing; later runs leave it as it is."""
    begin, end = "<!-- BEGIN about -->", "<!-- END about -->"
    if begin in text:
        return text
    block = f"{begin}\n{README_INTRO_BODY.rstrip()}\n{end}\n\n"
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.startswith("# "):
            rest = "".join(lines[i + 1:]).lstrip("\n")
            return "".join(lines[:i + 1]) + "\n" + block + rest
    return block + text


def write_section(name, lines, payload, out):
    """Close a README section with the machine line and write it (full mode only)."""
    body = "\n".join([*lines, "", f"Machine: {machine_line(payload['machine'])}."])
    if out.readme:
        replace_readme_section(name, body, out.readme)


def markdown_table(headers, rows):
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(x, spec=".2e", missing="-"):
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return missing
    return format(x, spec)


# -- timing ---------------------------------------------------------------------
@contextmanager
def timer():
    """``with timer() as t: ...``; then ``t()`` is the elapsed seconds."""
    start = time.perf_counter()
    end = [None]
    yield lambda: (end[0] if end[0] is not None else time.perf_counter()) - start
    end[0] = time.perf_counter()


def first_time_below(history, threshold, key="recovery_error"):
    """``(iteration, time)`` of the first record with ``key <= threshold``, or (None, None)."""
    values = np.asarray(history[key])
    hits = np.nonzero(values <= threshold)[0]
    if hits.size == 0:
        return None, None
    i = hits[0]
    return int(history["iteration"][i]), float(history["time"][i])


def history_dict(history):
    return {k: np.asarray(v).tolist() for k, v in history.items()}


def warm_up_numba():
    """Compile dmc's numba kernels once so the first timed fit does not pay for it."""
    import warnings

    from dmc import DeepMatrixCompleter
    from dmc.datasets import make_low_rank

    M, mask = make_low_rank((40, 40), 2, 0.5, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        DeepMatrixCompleter(rank=2, max_iter=5).fit(M, mask, ground_truth=M)


# -- peers venv -----------------------------------------------------------------
def peers_python():
    """The peers venv's interpreter, or None when it has not been created."""
    python = PEERS_VENV / "bin" / "python"
    return python if python.exists() else None


def have_module(name):
    try:
        __import__(name)
        return True
    except Exception:  # noqa: BLE001
        return False


def reexec_in_peers_venv(script):
    """Re-run ``script`` with the same arguments under the peers venv when the
    current interpreter lacks fancyimpute and the venv exists (once)."""
    if have_module("fancyimpute") or os.environ.get("DMC_PEERS_REEXEC"):
        return
    python = peers_python()
    if python is None:
        print(f"note: peers venv {PEERS_VENV} not found; fancyimpute-based peers will be skipped "
              f"(create it with: python benchmarks/_common.py --setup-peers-venv)")
        return
    env = dict(os.environ, DMC_PEERS_REEXEC="1",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    print(f"re-running under the peers venv {python}", flush=True)
    sys.stdout.flush()
    code = subprocess.call([str(python), str(script), *sys.argv[1:]], env=env)
    sys.exit(code)


def setup_peers_venv():
    """Create the peers venv with pinned scikit-learn (< 1.6) and the peers."""
    if peers_python() is None:
        subprocess.check_call([sys.executable, "-m", "venv", str(PEERS_VENV)])
    subprocess.check_call([str(PEERS_VENV / "bin" / "python"), "-m", "pip", "install", "-q",
                           *PEERS_REQUIREMENTS])
    print(f"peers venv ready at {PEERS_VENV}")


if __name__ == "__main__":
    if "--setup-peers-venv" in sys.argv[1:]:
        setup_peers_venv()
    else:
        print(__doc__)
