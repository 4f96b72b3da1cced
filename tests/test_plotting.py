"""Figures of dmc.plotting build from small fake results."""

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from dmc import plotting  # noqa: E402


def _history(n=20, rate=0.5):
    it = np.arange(0, 10 * n, 10)
    return {"iteration": it, "time": it * 1e-3, "train_loss": np.exp(-rate * it / 10),
            "recovery_error": np.exp(-rate * it / 10)}


def test_histories_two_panels(tmp_path):
    fig = plotting.plot_histories({"a": _history(), "b": _history(rate=0.2)}, title="t")
    axes = fig.get_axes()
    assert len(axes) == 2
    assert all(len(ax.get_lines()) == 2 for ax in axes)
    assert axes[0].get_yscale() == "log"
    assert axes[1].get_xlabel() == "wall time (s)"
    fig.savefig(tmp_path / "h.png", dpi=50)
    assert (tmp_path / "h.png").stat().st_size > 0


def test_histories_single_panel_list_input():
    fig = plotting.plot_histories([("only", _history())], x="iteration", metric="train_loss")
    (ax,) = fig.get_axes()
    assert len(ax.get_lines()) == 1 and ax.get_ylabel() == "train loss"


def test_rank_sweep_handles_failures():
    ranks = [5, 8, 11]
    values = np.array([[100, 120, 110], [105, np.nan, 100], [np.nan] * 3])
    fig = plotting.plot_rank_sweep(ranks, {"compressed": values, "narrow": values * 2}, logy=True)
    (ax,) = fig.get_axes()
    assert len(ax.get_lines()) == 2
    assert len(ax.collections) == 2  # spread bands
    assert any("failed" in t.get_text() for t in ax.texts)


def test_success_map():
    fig = plotting.plot_success_map(np.array([[0.0, 0.5, 1.0], [1.0, 1.0, 1.0]]),
                                    row_labels=["d2", "d3"], col_labels=[1000, 2000, 3000])
    ax = fig.get_axes()[0]
    assert len(ax.images) == 1 and len(ax.texts) == 6


def test_spectra():
    snaps = [(it, np.array([3.0, 2.0, 1.0, 1e-3]) * (1 + it)) for it in (0, 10, 20)]
    fig = plotting.plot_spectra(snaps, top=3)
    left, right = fig.get_axes()[:2]
    assert len(left.get_lines()) == 3 and len(right.get_lines()) == 3


def test_loglog_slope_in_label():
    x = np.array([1e3, 1e4, 1e5])
    fig = plotting.plot_loglog({"t": (x, 2 * x)}, xlabel="x", ylabel="y")
    (ax,) = fig.get_axes()
    assert "slope 1.00" in ax.get_legend().get_texts()[0].get_text()
