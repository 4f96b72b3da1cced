"""The documentation site builds with ``mkdocs build --strict``, and every page is reachable."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

pytest.importorskip("mkdocs", reason='the docs build needs mkdocs: pip install "dmc[docs]"')
pytest.importorskip("mkdocstrings", reason='the docs build needs mkdocstrings[python]: pip install "dmc[docs]"')
pytest.importorskip("mkdocstrings_handlers.python",
                    reason='the docs build needs mkdocstrings[python]: pip install "dmc[docs]"')
yaml = pytest.importorskip("yaml", reason="reading mkdocs.yml needs PyYAML (a dependency of mkdocs)")


def _nav_pages(nav):
    """Every page path listed in an mkdocs ``nav`` (nested lists and dicts)."""
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [page for entry in nav for page in _nav_pages(entry)]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in _nav_pages(value)]
    return []


def _config():
    # mkdocs.yml has no Python-specific tags, so a safe load reads all of it
    return yaml.safe_load((ROOT / "mkdocs.yml").read_text())


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site built once for this module, with warnings as errors."""
    site_dir = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site_dir)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, (
        f"mkdocs build --strict failed (exit {result.returncode}):\n{result.stderr}\n{result.stdout}")
    return site_dir


def test_site_builds_strict(site):
    assert (site / "index.html").is_file()


def test_every_page_is_in_the_nav():
    nav = set(_nav_pages(_config()["nav"]))
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")
             if not any(part.startswith("_") for part in p.relative_to(DOCS).parts)}
    assert pages - nav == set(), f"pages missing from the nav in mkdocs.yml: {sorted(pages - nav)}"
    assert nav - pages == set(), f"nav entries without a page: {sorted(nav - pages)}"


def test_api_page_renders_the_estimator_parameters(site):
    html = (site / "api" / "estimators" / "index.html").read_text()
    assert 'id="dmc.DeepMatrixCompleter"' in html
    for parameter in ("init_scale", "record_every", "normalize", "gamma"):
        assert parameter in html, f"{parameter} missing from the DeepMatrixCompleter reference"
    assert 'id="dmc.RatingsCompleter"' in html
    # Sphinx roles in docstrings are rewritten by docs/_ext/sphinx_roles.py
    assert ":func:`" not in html and ":class:`" not in html
