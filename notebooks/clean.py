"""Strip outputs and execution counts from the notebooks before committing.

    python notebooks/clean.py              # every notebook in this folder
    python notebooks/clean.py a.ipynb ...  # the ones named

Needs only nbformat (``pip install "dmc[notebooks]"``).  The test suite
(tests/test_notebook.py) fails on a committed notebook that still has outputs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

# cell metadata Jupyter adds while running or viewing a notebook
VOLATILE_METADATA = ("execution", "collapsed", "scrolled", "jp-MarkdownHeadingCollapsed")


def clean(path) -> bool:
    """Strip ``path`` in place; return whether anything changed."""
    nb = nbformat.read(str(path), as_version=4)
    before = nbformat.writes(nb)
    for cell in nb.cells:
        for key in VOLATILE_METADATA:
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    nb.metadata.pop("widgets", None)
    after = nbformat.writes(nb)
    if after != before:
        Path(path).write_text(after + ("" if after.endswith("\n") else "\n"), encoding="utf-8")
    return after != before


def main(argv=None):
    paths = [Path(p) for p in (sys.argv[1:] if argv is None else argv)]
    if not paths:
        paths = sorted(Path(__file__).resolve().parent.glob("*.ipynb"))
    for path in paths:
        print(f"{'cleaned' if clean(path) else 'clean  '} {path}")


if __name__ == "__main__":
    main()
