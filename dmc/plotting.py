"""Matplotlib figures of fits: histories, rank sweeps, success-rate maps, spectra.

Every function takes plain results (dicts, lists, arrays) and returns a
:class:`matplotlib.figure.Figure`; nothing is shown and no global pyplot
state is touched (figures are built with :class:`~matplotlib.figure.Figure`
directly, so no GUI backend is ever needed).  Save with
``fig.savefig(path, dpi=90)``.

matplotlib is an optional dependency: ``pip install "dmc[plot]"``.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "plot_histories",
    "plot_rank_sweep",
    "plot_success_map",
    "plot_spectra",
    "plot_loglog",
]


def _figure(ncols=1, nrows=1, size=(5.0, 3.6)):
    """A new Figure with an Agg canvas and its axes (no pyplot)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - exercised only without matplotlib
        raise ImportError(
            'dmc.plotting needs matplotlib; install it with pip install "dmc[plot]"'
        ) from exc
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _positive(values):
    """Values with non-positive entries masked (for log axes)."""
    values = np.asarray(values, dtype=float)
    return np.where(values > 0, values, np.nan)


def _has_positive(ax):
    """Whether any line of ``ax`` has a positive finite y value (log scale possible)."""
    for line in ax.get_lines():
        y = np.asarray(line.get_ydata(), dtype=float)
        if np.any(np.isfinite(y) & (y > 0)):
            return True
    return False


def plot_histories(runs, *, metric="recovery_error", x=("iteration", "time"),
                   title=None, logy=True):
    """Curves of ``metric`` against step and/or wall time, one line per run.

    Parameters
    ----------
    runs : dict or list of (str, dict) pairs
        ``{label: history}`` or ``[(label, history), ...]``.  Each history is a mapping with 1-D arrays, e.g. ``model.history_``
        (keys ``iteration``, ``time``, ``train_loss``, ``recovery_error``).
    metric : str, default="recovery_error"
        The history key on the y axis.
    x : str or sequence of str, default=("iteration", "time")
        One panel per x key, side by side (``"iteration"``, ``"time"``).
    title : str, optional
        Figure title.
    logy : bool, default=True
        Log scale on y (non-positive values are dropped).

    Returns
    -------
    matplotlib.figure.Figure
    """
    items = list(runs.items()) if isinstance(runs, dict) else list(runs)
    xs = [x] if isinstance(x, str) else list(x)
    fig, axes = _figure(ncols=len(xs))
    labels = {"iteration": "gradient step", "time": "wall time (s)"}
    for ax, key in zip(axes[0], xs):
        for label, history in items:
            y = np.asarray(history[metric], dtype=float)
            ax.plot(np.asarray(history[key], dtype=float), _positive(y) if logy else y, label=label)
        if logy and _has_positive(ax):
            ax.set_yscale("log")
        ax.set_xlabel(labels.get(key, key))
        ax.set_ylabel(metric.replace("_", " "))
        ax.grid(True, which="major", alpha=0.3)
    if items:
        axes[0][0].legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def plot_rank_sweep(ranks, series, *, ylabel="steps", title=None, logy=False, spread="minmax"):
    """Mean and spread of a quantity against the rank budget, one line per method.

    Parameters
    ----------
    ranks : sequence of int
        The x values.
    series : dict of str to 2-D array
        ``{label: values}`` with ``values`` of shape ``(len(ranks), n_seeds)``.
        NaN entries (runs that did not get there) are ignored in the mean
        and spread, and the number of such entries is annotated.
    ylabel : str, default="steps"
        Label of the y axis.
    title : str, optional
        Axes title.
    logy : bool, default=False
        Log scale on y.
    spread : {"minmax", "std"}, default="minmax"
        Shaded band: min..max over seeds, or mean +- one standard deviation.

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig, axes = _figure()
    ax = axes[0][0]
    ranks = np.asarray(ranks, dtype=float)
    for label, values in series.items():
        values = np.asarray(values, dtype=float).reshape(len(ranks), -1)
        finite = np.isfinite(values)
        with np.errstate(all="ignore"):
            counts = finite.sum(axis=1)
            safe = np.where(finite, values, 0.0)
            mean = np.where(counts > 0, safe.sum(axis=1) / np.maximum(counts, 1), np.nan)
            if spread == "std":
                var = np.where(finite, (values - mean[:, None]) ** 2, 0.0).sum(axis=1) / np.maximum(counts, 1)
                lo, hi = mean - np.sqrt(var), mean + np.sqrt(var)
            else:
                lo = np.where(counts > 0, np.where(finite, values, np.inf).min(axis=1), np.nan)
                hi = np.where(counts > 0, np.where(finite, values, -np.inf).max(axis=1), np.nan)
        (line,) = ax.plot(ranks, mean, marker="o", label=label)
        ax.fill_between(ranks, lo, hi, color=line.get_color(), alpha=0.2)
        for r, c, total in zip(ranks, counts, [values.shape[1]] * len(ranks)):
            if c < total:
                y = mean[list(ranks).index(r)]
                ax.annotate(f"{total - c}/{total} failed", (r, y if np.isfinite(y) else 0),
                            fontsize="x-small", color=line.get_color())
    if logy and _has_positive(ax):
        ax.set_yscale("log")
    ax.set_xlabel("rank budget")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return fig


def plot_success_map(success, *, row_labels, col_labels, row_name="method",
                     col_name="observed entries", title=None):
    """A heat map of success rates (0..1), rows x columns, values written in.

    Parameters
    ----------
    success : 2-D array of shape (len(row_labels), len(col_labels))
        Success rates in [0, 1]; NaN cells are left blank.
    row_labels, col_labels : sequence of str or numbers
        Tick labels of the rows and columns.
    row_name : str, default="method"
        Label of the y axis.
    col_name : str, default="observed entries"
        Label of the x axis.
    title : str, optional
        Axes title.

    Returns
    -------
    matplotlib.figure.Figure
    """
    success = np.asarray(success, dtype=float)
    fig, axes = _figure(size=(max(4.0, 0.8 * len(col_labels) + 2.0), max(2.5, 0.45 * len(row_labels) + 1.2)))
    ax = axes[0][0]
    image = ax.imshow(success, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(col_labels)), [str(c) for c in col_labels])
    ax.set_yticks(range(len(row_labels)), [str(r) for r in row_labels])
    ax.set_xlabel(col_name)
    ax.set_ylabel(row_name)
    for i in range(success.shape[0]):
        for j in range(success.shape[1]):
            if np.isfinite(success[i, j]):
                ax.text(j, i, f"{success[i, j]:.2f}", ha="center", va="center", fontsize="x-small",
                        color="white" if success[i, j] < 0.6 else "black")
    fig.colorbar(image, ax=ax, label="success rate")
    if title:
        ax.set_title(title)
    return fig


def plot_spectra(snapshots, *, title=None, top=None, logy=True):
    """Singular values of a factor (or product) over training.

    Parameters
    ----------
    snapshots : list of (int, array) pairs
        ``[(iteration, singular_values), ...]``, in any order.
    title : str, optional
        Figure title.
    top : int, optional
        Draw only the largest ``top`` singular values.
    logy : bool, default=True
        Log scale on y.

    Returns
    -------
    matplotlib.figure.Figure
        Left: each singular value (index) against the iteration; right: the
        sorted spectrum at each snapshot.
    """
    snapshots = sorted(((int(it), np.sort(np.asarray(s, dtype=float))[::-1]) for it, s in snapshots),
                       key=lambda pair: pair[0])
    fig, axes = _figure(ncols=2)
    left, right = axes[0]
    if snapshots:
        width = max(len(s) for _, s in snapshots)
        width = min(width, top) if top else width
        table = np.full((len(snapshots), width), np.nan)
        for row, (_, s) in enumerate(snapshots):
            table[row, :min(width, len(s))] = s[:width]
        iterations = np.array([it for it, _ in snapshots], dtype=float)
        for index in range(width):
            left.plot(iterations, _positive(table[:, index]) if logy else table[:, index],
                      lw=1.0, label=f"sigma_{index + 1}" if index < 6 else None)
        for row, (it, _) in enumerate(snapshots):
            right.plot(np.arange(1, width + 1), _positive(table[row]) if logy else table[row],
                       marker=".", lw=0.8, label=f"step {it}")
    for ax in (left, right):
        if logy and _has_positive(ax):
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.set_ylabel("singular value")
    left.set_xlabel("gradient step")
    right.set_xlabel("index")
    if snapshots:
        left.legend(fontsize="x-small")
        right.legend(fontsize="x-small", ncol=2)
    if title:
        fig.suptitle(title)
    return fig


def plot_loglog(series, *, xlabel, ylabel, title=None, fit=True):
    """Log-log lines with a fitted power law ``y ~ x^slope`` in each label.

    Parameters
    ----------
    series : dict of str to (array, array)
        ``{label: (x, y)}``; non-positive and non-finite points are dropped.
    xlabel, ylabel : str
        Axis labels.
    title : str, optional
        Axes title.
    fit : bool, default=True
        Fit the slope by least squares on the logs and show it.

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig, axes = _figure()
    ax = axes[0][0]
    for label, (xv, yv) in series.items():
        xv, yv = np.asarray(xv, dtype=float), np.asarray(yv, dtype=float)
        keep = (xv > 0) & (yv > 0) & np.isfinite(xv) & np.isfinite(yv)
        text = label
        if fit and keep.sum() >= 2:
            slope, _ = np.polyfit(np.log(xv[keep]), np.log(yv[keep]), 1)
            text = f"{label} (slope {slope:.2f})"
        ax.plot(xv[keep], yv[keep], marker="o", label=text)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    if series:
        ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return fig
