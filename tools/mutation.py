"""Mutation testing of dmc's core modules with mutmut 3, one module at a time.

Run from the repository root (needs ``pip install mutmut==3.8.1``; too slow for CI)::

    nice -n 10 python tools/mutation.py                  # every core module
    nice -n 10 python tools/mutation.py models steps     # some of them
    python tools/mutation.py --list                      # the module -> test files map
    python tools/mutation.py --report-only               # rebuild the table from results

For each module the script builds a scratch copy of the repository under
``build/mutation/<module>/`` (``dmc/``, ``tests/`` and a ``pyproject.toml``
whose ``[tool.mutmut]`` section mutates that one module and selects only its
test files, the map ``MODULES`` below), runs ``mutmut run`` there, and
records the verdicts: killed, survived, timeout, no tests (no selected test
reaches the mutated function), suspicious, segfault.  mutmut 3 runs, for each
mutant, only the selected tests that called the mutated function (measured
once, in its stats pass), in a process forked from a warm interpreter, so a
short per-module test list keeps each mutant's run to about a second.

Results go to ``benchmarks/results/mutation.json`` (per module: counts, kill
rate, the surviving mutants' names and diffs) and the ``mutation`` section of
``benchmarks/README.md``.  A module run again replaces its own entry; the
others are kept.  Inspect one survivor with
``cd build/mutation/<module> && mutmut show <name>``.

Hypothesis runs under the ``mutation`` profile (tests/conftest.py: fewer
examples, no example database) so that property tests stay short per mutant.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
import _common  # noqa: E402  (machine_info, write_json, README sections)

RESULTS = REPO / "benchmarks" / "results" / "mutation.json"
# survivors judged equivalent (same behaviour as the original), with the reason:
# {module: {mutant name: reason}}, written by hand after inspecting each one
EQUIVALENT = Path(__file__).resolve().parent / "mutation_equivalent.json"
WORK = REPO / "build" / "mutation"

# module -> the fast test files (pytest arguments: files, node ids, -k) that check it (each mutant runs the subset of
# these that reach the mutated function).  Slow files (MovieLens, notebooks,
# benchmarks, CLI subprocesses, scikit-learn's estimator checks) stay out.
MODULES = {
    "models": ["tests/test_models.py",
               "tests/test_gradients.py::test_sparse_gradients_match_finite_differences",
               "tests/test_gradients.py::test_dense_gradients_match_finite_differences"],
    "observations": ["tests/test_observations.py", "tests/test_validation.py"],
    "subspace": ["tests/test_subspace.py"],
    # the real tqdm bar hangs in mutmut's forked workers (a timeout, not a kill):
    # _BarProgress is checked against a fake tqdm instead
    "solver": ["tests/test_solver.py", "-k", "not verbose_1_bar"],
    "steps": ["tests/test_steps.py", "-k",
              "not follows_the_constant and not completes and not leaves_the_plateau "
              "and not never_diverges and not stable_and_long and not reaches_tol"],
    "refresh": ["tests/test_refresh.py"],
    "persistence": ["tests/test_persistence.py",
                    "tests/test_reliability.py::test_truncated_and_bit_flipped_model_files",
                    "tests/test_reliability.py::test_tampered_model_files_say_what_is_wrong",
                    "tests/test_reliability.py::test_loading_never_unpickles"],
    "estimator": ["tests/test_estimator.py", "tests/test_validation.py"],
    "ratings": ["tests/test_ratings.py", "tests/test_movielens.py", "tests/test_early_stopping.py",
                "-k", "not benchmark_quick and not loader and not fetch and not readme"],
}



# verdicts that count as detected: a test failed, the tests ran out of CPU time, or
# the mutant made the test run stop with KeyboardInterrupt (a mutant of the
# solver's Ctrl-C handling; mutmut reports it as "check was interrupted by user")
KILLED = ("killed", "timeout", "check was interrupted by user")


def _toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    return "[" + ", ".join(_toml_value(v) for v in value) + "]"


def _pyproject(module, tests):
    """The scratch copy's pyproject.toml: the repo's pytest options and mutmut
    base config, narrowed to one module and its test files."""
    import tomllib

    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    pytest_opts = data["tool"]["pytest"]["ini_options"]
    mutmut = dict(data["tool"].get("mutmut", {}))
    mutmut["source_paths"] = ["dmc"]
    mutmut["only_mutate"] = [f"dmc/{module}.py"]
    mutmut["pytest_add_cli_args_test_selection"] = [t for t in tests if not t.startswith("tests/")
                                                     or (REPO / t.split("::")[0]).exists()]
    lines = ["[tool.pytest.ini_options]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in pytest_opts.items()]
    lines += ["", "[tool.mutmut]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in mutmut.items()]
    return "\n".join(lines) + "\n"


def _prepare(module):
    work = WORK / module
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis")
    shutil.copytree(REPO / "dmc", work / "dmc", ignore=ignore)
    shutil.copytree(REPO / "tests", work / "tests", ignore=ignore)
    (work / "pyproject.toml").write_text(_pyproject(module, MODULES[module]))
    _undecorate(work / "dmc" / f"{module}.py")
    return work


def _undecorate(path):
    """Move module-level decorators after the module's code, in the scratch copy.

    mutmut 3 does not mutate decorated functions (``gradient_descent`` under
    ``@np.errstate``, ``_deferred_interrupt`` under ``@contextmanager``);
    ``@d def f`` is rewritten as ``def f`` plus ``f = d(f)`` at the end of the
    module, which behaves the same once the module is imported.
    """
    text = path.read_text()
    pattern = re.compile(r"^@(?!staticmethod|classmethod|property)([^\n]+)\n(def (\w+)\()", re.M)
    moved = [(m.group(3), m.group(1)) for m in pattern.finditer(text)]
    if moved:
        text = pattern.sub(r"\2", text)
        text += "\n\n# tools/mutation.py: decorators moved here so that mutmut mutates the functions\n"
        text += "".join(f"{name} = {decorator}({name})\n" for name, decorator in moved)
        path.write_text(text)


def _verdicts(work, module):
    meta = work / "mutants" / "dmc" / f"{module}.py.meta"
    from mutmut.stats import status_by_exit_code  # exit code -> killed, survived, ...

    data = json.loads(meta.read_text())
    return {name: status_by_exit_code[code]
            for name, code in data["exit_code_by_key"].items()}


def _diff(work, name):
    proc = subprocess.run([sys.executable, "-m", "mutmut", "show", name], cwd=work,
                          capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines()
             if ln.startswith(("+", "-")) and not ln.startswith(("+++", "---"))]
    return "\n".join(lines)


def run_module(module, max_children):
    work = _prepare(module)
    env = dict(os.environ, HYPOTHESIS_PROFILE="mutation", OMP_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", NUMBA_NUM_THREADS="1",
               PYTHONPATH="")
    mutmut = shutil.which("mutmut", path=str(Path(sys.executable).parent)) or "mutmut"
    start = time.perf_counter()
    proc = subprocess.run([mutmut, "run", "--max-children", str(max_children)], cwd=work, env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    (work / "mutmut.log").write_text(proc.stdout + proc.stderr)
    (work / "wall_seconds").write_text(f"{wall:.1f}\n")
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"mutmut failed on {module} (exit {proc.returncode}); log in {work}/mutmut.log")
    return collect_module(module, max_children)


def collect_module(module, max_children=1):
    """The results entry of ``module`` from its finished work directory."""
    work = WORK / module
    wall = float((work / "wall_seconds").read_text()) if (work / "wall_seconds").exists() else None
    verdicts = _verdicts(work, module)
    counts = {}
    for status in verdicts.values():
        counts[status] = counts.get(status, 0) + 1
    total = len(verdicts)
    killed = sum(counts.get(k, 0) for k in KILLED)
    survivors = sorted(n for n, s in verdicts.items() if s in ("survived", "no tests"))
    return {
        "module": f"dmc/{module}.py",
        "tests": MODULES[module],
        "mutants": total,
        "counts": counts,
        "kill_rate": killed / total if total else None,
        "wall_seconds": None if wall is None else round(wall, 1),
        "max_children": max_children,
        "survivors": {name: {"status": verdicts[name], "diff": _diff(work, name)}
                      for name in survivors},
    }


def _load():
    if RESULTS.exists():
        return json.loads(RESULTS.read_text())
    return {"benchmark": "mutation", "tool": None, "modules": {}}


def _equivalent(entry):
    """Survivors of this entry listed as equivalent in tools/mutation_equivalent.json."""
    listed = json.loads(EQUIVALENT.read_text()) if EQUIVALENT.exists() else {}
    module = Path(entry["module"]).stem
    return set(listed.get(module, {})) & set(entry["survivors"])


def _table(payload):
    rows = []
    for module in MODULES:
        entry = payload["modules"].get(module)
        if entry is None:
            rows.append([f"`dmc/{module}.py`", "not run"] + [""] * 8)
            continue
        c = entry["counts"]
        equivalent = len(_equivalent(entry))
        live = entry["mutants"] - equivalent
        killed = sum(c.get(k, 0) for k in KILLED)
        rows.append([f"`dmc/{module}.py`", entry["mutants"],
                     c.get("killed", 0) + c.get("check was interrupted by user", 0), c.get("timeout", 0),
                     c.get("survived", 0), c.get("no tests", 0), equivalent, f"{entry['kill_rate']:.1%}",
                     f"{killed / live:.1%}" if live else "-",
                     "-" if entry["wall_seconds"] is None else f"{entry['wall_seconds'] / 60:.1f}"])
    return _common.markdown_table(
        ["module", "mutants", "killed", "timeout", "survived", "no tests", "equivalent", "kill rate",
         "kill rate excl. equivalent", "wall (min)"], rows)


# measured once on dmc/models.py with the same test list, hypothesis profile
# "mutation", one worker, under nice on the shared 2-core machine (load ~9)
TOOL_COMPARISON = (
    "mutmut 3.8.1 was chosen over cosmic-ray 8.7.0 after one measurement on `dmc/models.py` "
    "with the same test list (one worker, same machine and load): mutmut ran its 243 mutants in "
    "217 s (0.9 s per mutant; it forks each mutant run from a warm interpreter and runs only "
    "the tests that reach the mutated function); cosmic-ray finished 12 of its 370 mutants in "
    "150 s (12.5 s per mutant: a fresh pytest process per mutant that imports numpy, scipy and "
    "hypothesis and runs every selected test), about 14 times slower per mutant, so about 77 min "
    "for this one module.  cosmic-ray also edits the source files in place (a run stopped "
    "midway leaves a mutant in the file).  mutmut's limits: it skips decorated functions "
    "(handled here for module-level decorators, not for properties) and a forked worker cannot "
    "run tqdm's bar (those tests are left out of the per-mutant lists).")


def write_readme(payload):
    lines = [
        "## Mutation testing (mutmut 3)",
        "",
        "Each core module is mutated by mutmut and checked against a short list of test",
        "files (`tools/mutation.py --list`); a mutant is *killed* when a test fails and",
        "*survived* when all pass.  *Kill rate excl. equivalent* leaves out the survivors",
        "judged equivalent (same behaviour as the original; each listed with its reason",
        "under `equivalent` in `results/mutation.json`).  Rerun with",
        "`nice -n 10 python tools/mutation.py [MODULE ...]` (not part of CI: minutes per module).",
        "",
        _table(payload),
        "",
        TOOL_COMPARISON,
        "",
        f"Tool: {payload.get('tool')}.  Machine: {payload.get('machine', {}).get('cpu')}, "
        f"{payload.get('machine', {}).get('cores')} cores shared with other work; "
        f"run under `nice -n 10`.",
    ]
    _common.replace_readme_section("mutation", "\n".join(lines))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="tools/mutation.py", description=__doc__.split("\n")[0])
    parser.add_argument("modules", nargs="*", help=f"modules to mutate (default: all of {', '.join(MODULES)})")
    parser.add_argument("--max-children", type=int, default=1, help="parallel mutant runs (default 1)")
    parser.add_argument("--list", action="store_true", help="print the module -> test files map")
    parser.add_argument("--report-only", action="store_true", help="rewrite the README table only")
    parser.add_argument("--collect", action="store_true",
                        help="record the modules' finished runs in build/mutation/ without rerunning")
    args = parser.parse_args(argv)
    if args.list:
        for module, tests in MODULES.items():
            print(f"dmc/{module}.py: {' '.join(tests)}")
        return 0
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        parser.error(f"unknown module(s) {unknown}; choose among {', '.join(MODULES)}")
    payload = _load()
    equivalent = json.loads(EQUIVALENT.read_text()) if EQUIVALENT.exists() else {}
    if args.collect:
        for module in args.modules or list(MODULES):
            payload["modules"][module] = collect_module(module)
    elif not args.report_only:
        from importlib.metadata import version

        payload["tool"] = f"mutmut {version('mutmut')}"
        payload["machine"] = _common.machine_info()
        for module in args.modules or list(MODULES):
            print(f"mutating dmc/{module}.py against {' '.join(MODULES[module])} ...", flush=True)
            entry = run_module(module, args.max_children)
            payload = _load()  # another run may have written other modules meanwhile
            payload["modules"][module] = entry
            print(f"  {entry['mutants']} mutants, {entry['counts']}, kill rate {entry['kill_rate']:.1%}, "
                  f"{entry['wall_seconds']:.0f} s", flush=True)
            _common.write_json(RESULTS, payload)
            unexplained = sorted(set(entry["survivors"]) - set(equivalent.get(module, {})))
            if unexplained:
                print(f"  survivors not listed in {EQUIVALENT.name}: {' '.join(unexplained)}")
    payload["tool_comparison"] = TOOL_COMPARISON
    for module, entry in payload["modules"].items():
        entry["equivalent"] = {name: reason for name, reason in equivalent.get(module, {}).items()
                               if name in entry["survivors"]}
    _common.write_json(RESULTS, payload)
    write_readme(payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
