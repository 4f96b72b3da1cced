"""Approximately low rank: the defaults on matrices like photos, elevation
grids and sensor data (one dominant direction, a decaying tail, noise), not
only on exact low-rank ones.

Full mode: 30% of the entries observed (uniform), Gaussian noise on the
observed entries; error = relative Frobenius error of the completed matrix
against the NOISELESS one over all entries (what ``ground_truth`` records).
Matrices (one seed each):

* ``field``: a smooth 256 x 200 field (a linear trend plus 12 rotated,
  elongated Gaussian ridges of random centre, size and sign; the kind of
  surface an elevation grid or a blurred photo is), noise 1% and 10% of its
  RMS;
* ``power a``: 300 x 250, random singular vectors, singular values
  ``i ** -a`` (a = 1, 1.5, 2; full rank), noise 10% / 5% / 2% of the RMS;
* ``dominant + tail``: 300 x 250, a top singular value 5 times the next,
  then a geometric tail with ratio 0.7 (full rank), noise 30% of the RMS.

dmc: ``DeepMatrixCompleter()`` with its defaults (rank 10; ``step_rule="auto"``
records the rule it chose), the same with ``step_rule="adaptive"``, and both
with ``early_stopping=True``.  Peers (fancyimpute, in the peers venv):
SoftImpute with its default shrinkage (sigma_max / 50) and with the
shrinkage tuned on a validation split of the observed entries (10%, grid
sigma_max times 1/5 ... 1/200; refitted on all entries), and IterativeSVD
at rank 10.  The best achievable by a rank-10 fit, the truncated SVD of the
noiseless matrix, is the floor column.
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

import numpy as np  # noqa: E402

NAME = "approximate_low_rank"
RANK = 10  # DeepMatrixCompleter's default rank budget, and the peers' rank cap
SOFT_IMPUTE_GRID = (5.0, 10.0, 25.0, 50.0, 100.0, 200.0)  # shrinkage = sigma_max / value
DMC_CONFIGS = {
    "dmc defaults": {},
    "dmc adaptive": {"step_rule": "adaptive"},
    "dmc defaults, early stopping": {"early_stopping": True},
    "dmc adaptive, early stopping": {"step_rule": "adaptive", "early_stopping": True},
}


# -- matrices ---------------------------------------------------------------------
def smooth_field(shape, rng, bumps=12):
    """A linear trend plus rotated elliptical Gaussian bumps on the unit square.

    Round or axis-aligned bumps would be separable (rank one each); rotated
    elongated ones are not, so the field has a decaying tail of singular values.
    """
    y, x = np.meshgrid(np.linspace(0, 1, shape[0]), np.linspace(0, 1, shape[1]), indexing="ij")
    field = rng.normal() * x + rng.normal() * y
    for _ in range(bumps):
        cy, cx = rng.uniform(0, 1, 2)
        angle = rng.uniform(0, np.pi)
        along, across = rng.uniform(0.1, 0.4), rng.uniform(0.02, 0.1)
        d1 = (x - cx) * np.cos(angle) + (y - cy) * np.sin(angle)
        d2 = -(x - cx) * np.sin(angle) + (y - cy) * np.cos(angle)
        field += rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 2.0) * np.exp(
            -d1**2 / (2 * along**2) - d2**2 / (2 * across**2))
    return field


def spectrum_matrix(shape, singular_values, rng):
    """``U diag(s) V^T`` with Haar-random orthonormal ``U, V``."""
    k = len(singular_values)
    U = np.linalg.qr(rng.standard_normal((shape[0], k)))[0]
    V = np.linalg.qr(rng.standard_normal((shape[1], k)))[0]
    return (U * np.asarray(singular_values)) @ V.T


def problems(quick):
    """``[(label, noiseless M, noise as a fraction of M's RMS)]``."""
    rng = np.random.default_rng(0)
    if quick:
        shape = (60, 50)
        return [("field, noise 10%", smooth_field(shape, rng), 0.1),
                ("dominant + tail, noise 30%",
                 spectrum_matrix(shape, _dominant_tail(min(shape)), rng), 0.3)]
    field = smooth_field((256, 200), rng)
    out = [("field, noise 1%", field, 0.01), ("field, noise 10%", field, 0.1)]
    n = 250
    for a, noise in ((1.0, 0.1), (1.5, 0.05), (2.0, 0.02)):
        s = np.arange(1, n + 1, dtype=float) ** -a
        out.append((f"power {a:g}, noise {100 * noise:g}%", spectrum_matrix((300, n), s, rng), noise))
    out.append(("dominant + tail, noise 30%",
                spectrum_matrix((300, n), _dominant_tail(n), rng), 0.3))
    return out


def _dominant_tail(n):
    return np.r_[5.0, 0.7 ** np.arange(n - 1)]


def observe(M, fraction, noise, seed):
    """``(mask, M_obs)``: a uniform mask and the observed entries plus noise (0 elsewhere)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(M.size, bool)
    mask[rng.choice(M.size, int(round(fraction * M.size)), replace=False)] = True
    mask = mask.reshape(M.shape)
    rms = np.sqrt(np.mean(M**2))
    noisy = M + noise * rms * rng.standard_normal(M.shape)
    return mask, np.where(mask, noisy, 0.0)


def relative_error(X, M):
    return float(np.linalg.norm(X - M) / np.linalg.norm(M))


# -- methods ----------------------------------------------------------------------
def run_dmc(M_obs, mask, M, params, max_iter):
    from dmc import DeepMatrixCompleter

    model = DeepMatrixCompleter(rank=RANK, max_iter=max_iter, random_state=0, **params)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(M_obs, mask, ground_truth=M)
    seconds = time.perf_counter() - start
    X = model.transform(as_numpy=True)
    return dict(available=True, error=relative_error(X, M), time=seconds,
                iterations=int(model.n_iter_), best_iter=int(getattr(model, "best_iter_", model.n_iter_)),
                step_rule=str(getattr(model, "step_rule_", params.get("step_rule", "constant"))),
                stop_reason=str(model.stop_reason_))


def _soft_impute(M_obs, mask, shrinkage):
    """fancyimpute SoftImpute at a given shrinkage, rank cap ``RANK``: the filled matrix."""
    import fancyimpute

    X = np.where(mask, M_obs, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fancyimpute.SoftImpute(shrinkage_value=shrinkage, max_rank=RANK, max_iters=500,
                                      convergence_threshold=1e-6, verbose=False).fit_transform(X)


def run_soft_impute_tuned(M_obs, mask, M, seed=0):
    """SoftImpute with its shrinkage chosen on 10% of the observed entries, then refitted."""
    try:
        import fancyimpute  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        return dict(available=False, reason=f"fancyimpute not importable ({type(exc).__name__})")
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    rows, cols = np.nonzero(mask)
    held = rng.random(rows.size) < 0.1
    fit_mask = mask.copy()
    fit_mask[rows[held], cols[held]] = False
    # fancyimpute's default shrinkage is the top singular value of the zero-filled input / 50
    sigma_max = float(np.linalg.norm(np.where(fit_mask, M_obs, 0.0), 2))
    scores = {}
    for divisor in SOFT_IMPUTE_GRID:
        filled = _soft_impute(M_obs, fit_mask, sigma_max / divisor)
        err = filled[rows[held], cols[held]] - M_obs[rows[held], cols[held]]
        scores[divisor] = float(np.sqrt(np.mean(err**2)))
    best = min(scores, key=scores.get)
    sigma_all = float(np.linalg.norm(M_obs, 2))
    X = _soft_impute(M_obs, mask, sigma_all / best)
    return dict(available=True, error=relative_error(X, M), time=time.perf_counter() - start,
                chosen=f"sigma_max / {best:g}", validation_rmse={str(k): v for k, v in scores.items()})


def run_fancy(name, M_obs, mask, M):
    import _peers as P

    run = {"SoftImpute (default shrinkage)": P.run_softimpute,
           "IterativeSVD": P.run_iterative_svd}[name]
    res = run(M_obs, mask, M, RANK, cap_s=120.0)
    res.pop("history", None)
    return res


def floor_error(M):
    """The best rank-``RANK`` approximation of the noiseless matrix (Eckart-Young)."""
    U, s, Vt = np.linalg.svd(M, full_matrices=False)
    return relative_error((U[:, :RANK] * s[:RANK]) @ Vt[:RANK], M)


# -- report -----------------------------------------------------------------------
def cell(res):
    if not res.get("available"):
        return "n/a"
    return f"{res['error']:.3f} ({res['time']:.1f} s)"


def main(argv=None):
    C.reexec_in_peers_venv(__file__)
    args, out = C.parse_args(NAME, __doc__.splitlines()[0], argv)
    fraction = 0.3
    max_iter = 2000 if args.quick else 20000
    C.warm_up_numba()
    results, labels = [], []
    peers = ["SoftImpute (tuned shrinkage)", "SoftImpute (default shrinkage)", "IterativeSVD"]
    for index, (label, M, noise) in enumerate(problems(args.quick)):
        labels.append(label)
        mask, M_obs = observe(M, fraction, noise, seed=index)
        entry = dict(problem=label, shape=list(M.shape), noise=noise, floor=floor_error(M),
                     zero_fill=relative_error(M_obs / fraction, M), methods={})
        for name, params in DMC_CONFIGS.items():
            entry["methods"][name] = run_dmc(M_obs, mask, M, params, max_iter)
        entry["methods"][peers[0]] = run_soft_impute_tuned(M_obs, mask, M)
        for name in peers[1:]:
            try:
                entry["methods"][name] = run_fancy(name, M_obs, mask, M)
            except Exception as exc:  # noqa: BLE001
                entry["methods"][name] = dict(available=False, reason=f"{type(exc).__name__}: {exc}")
        results.append(entry)
        print(f"{label}: floor {entry['floor']:.3f}; " + "; ".join(
            f"{name} {cell(res)}" + (f" [{res['step_rule']}]" if "step_rule" in res else "")
            for name, res in entry["methods"].items()), flush=True)

    payload = dict(benchmark=NAME, quick=args.quick, machine=C.machine_info(("fancyimpute",)),
                   setup=dict(observed_fraction=fraction, rank=RANK, dmc_max_iter=max_iter,
                              noise="Gaussian, sd = the fraction named times the RMS of the noiseless matrix",
                              error="relative Frobenius error against the noiseless matrix, all entries"),
                   results=results, wall_minutes=C.elapsed_minutes())
    C.write_json(out.json, payload)
    C.save_figure(figure(results), out.figure())

    if out.readme:
        render(payload, out.readme)


def render(payload, readme=C.README):
    """Write the README section from a results payload."""
    body = "\n".join([*section_lines(payload), "",
                      f"Machine: {C.machine_line(payload['machine'], payload.get('wall_minutes'))}."])
    C.replace_readme_section(NAME, body, readme)


def summary(results, ours="dmc defaults, early stopping"):
    """Where ``ours`` stands against the best available peer on each matrix (a sentence)."""
    wins, losses = [], []
    for entry in results:
        peers = {m: r for m, r in entry["methods"].items()
                 if not m.startswith("dmc") and r.get("available")}
        if not peers or not entry["methods"][ours].get("available"):
            continue
        best = min(peers, key=lambda m: peers[m]["error"])
        mine = entry["methods"][ours]["error"]
        text = f"{entry['problem']} ({mine:.3f} against {best} {peers[best]['error']:.3f})"
        (wins if mine <= peers[best]["error"] else losses).append(text)
    if not wins and not losses:
        return "No peer ran, so there is no comparison."
    return (f"`{ours}` against the best peer on each matrix: at or below it on {len(wins)} of "
            f"{len(wins) + len(losses)}" + (f": {'; '.join(wins)}" if wins else "")
            + (f". Above it on {'; '.join(losses)}" if losses else "") + ".")


def section_lines(payload):
    results, setup = payload["results"], payload["setup"]
    methods = list(results[0]["methods"])
    rows = []
    for entry in results:
        rule = entry["methods"]["dmc defaults"].get("step_rule", "?")
        rows.append([entry["problem"], f"{entry['floor']:.3f}", rule]
                    + [cell(entry["methods"][m]) for m in methods])
    skipped = sorted({f"{m}: {e['methods'][m]['reason']}" for e in results for m in methods
                      if not e["methods"][m].get("available")})
    return [
        f"## Approximately low-rank matrices (`{NAME}.py`)",
        "",
        "The defaults on data that are only approximately low rank (one dominant direction, a "
        "decaying tail, noise), as photos, elevation grids and sensor data are. "
        f"{100 * setup['observed_fraction']:g}% observed; "
        "Gaussian noise on the observed entries, its standard deviation the named fraction of the "
        "noiseless matrix's RMS; each cell: relative Frobenius error of the completed matrix "
        "against the noiseless one over all entries (fit seconds in brackets). Floor: the "
        f"noiseless matrix's best rank-{RANK} approximation (dmc's model is 2 x rank wide, so "
        f"it can go below). dmc: `DeepMatrixCompleter(rank={RANK})`, max_iter "
        f"{setup['dmc_max_iter']:,}, random_state 0; 'rule' is what the default "
        "`step_rule=\"auto\"` chose. SoftImpute (tuned): shrinkage chosen from sigma_max / "
        + " / ".join(f"{g:g}" for g in SOFT_IMPUTE_GRID)
        + " by RMSE on 10% of the observed entries, refitted on all. Matrices: see the script's "
        "docstring.",
        "",
        C.markdown_table(["matrix", "floor", "rule"] + methods, rows),
        "",
        summary(results),
        "",
        *([f"Not run: {'; '.join(skipped)}.", ""] if skipped else []),
        f"![errors](figures/{NAME}.png)",
    ]


def figure(results):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(results[0]["methods"])
    fig, ax = plt.subplots(figsize=(9, 3.6))
    width = 0.8 / len(methods)
    x = np.arange(len(results))
    for i, m in enumerate(methods):
        errs = [e["methods"][m]["error"] if e["methods"][m].get("available") else np.nan
                for e in results]
        ax.bar(x + i * width, errs, width, label=m)
    ax.scatter(x + 0.4 - width / 2, [e["floor"] for e in results], color="k", marker="_", s=200,
               label=f"rank-{RANK} floor", zorder=3)
    ax.set_xticks(x + 0.4 - width / 2, [e["problem"] for e in results], rotation=20, ha="right",
                  fontsize=7)
    ax.set_ylabel("relative error (noiseless truth)")
    ax.set_yscale("log")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    main()
