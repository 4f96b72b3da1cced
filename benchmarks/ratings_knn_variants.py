"""Two candidates on top of RatingsCompleter's item-kNN correction (issue 12), side by side.

* ``item + user kNN``: the same correction with the roles of users and items
  swapped (user-user residual similarities, the 40 most similar users who
  rated the item), added to the item one;
* ``3-seed ensemble``: the mean prediction of ``random_state`` 0, 1, 2.

Validation first (90% of u1.base fitted, the other 10% scored, carve seed
123: the number used to decide), then the official test splits u1..u5 for
the record.  Prints a markdown table and writes
``benchmarks/results/ratings_knn_variants.json``; the conclusions are quoted
in the notes of the "movielens" section (``benchmarks/movielens.py``).

    python benchmarks/ratings_knn_variants.py [--splits u1 u2] [--data PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from movielens import DEFAULT_DATA, limit_threads  # noqa: E402


def _corrections(model, users, items):
    """Deep predictions, item-kNN and user-kNN corrections at known pairs (rows of ``model``)."""
    import numpy as np
    import scipy.sparse as sp

    from dmc import _neighbours

    r, known_r = model._lookup(model.user_ids_, users)
    c, known_c = model._lookup(model.item_ids_, items)
    both = known_r & known_c
    deep = np.full(users.size, model.global_mean_)
    deep += np.where(known_r, model.user_bias_[r], 0.0) + np.where(known_c, model.item_bias_[c], 0.0)
    deep[both] += np.einsum("ij,ij->i", model.row_factors_[r[both]], model.column_factors_[c[both]])
    item, user = np.zeros(users.size), np.zeros(users.size)
    item[both] = _neighbours.pair_corrections(model.item_similarities_, model._residual_matrix(),
                                              r[both], c[both], 40, 1.0)
    rows, cols = model._observed
    order = np.lexsort((rows, cols))
    transposed = sp.csr_matrix((model._residuals[order], (cols[order], rows[order])),
                               shape=(model.item_ids_.size, model.user_ids_.size))
    similarities = _neighbours.item_similarities(cols, rows, model._residuals, model.user_ids_.size,
                                                 100.0)
    user[both] = _neighbours.pair_corrections(similarities, transposed, c[both], r[both], 40, 1.0)
    return deep, item, user


def _variants(train, test, seeds=(0, 1, 2)):
    """RMSE of each variant on ``test`` after fitting ``train``."""
    import numpy as np

    from dmc import RatingsCompleter

    parts = []
    for seed in seeds:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = RatingsCompleter(random_state=seed).fit(*train)
        parts.append(_corrections(model, test[0], test[1]))

    def rmse(pred):
        return float(np.sqrt(np.mean((np.clip(pred, 1, 5) - test[2]) ** 2)))

    deep, item, user = parts[0]
    return {"deep model alone": rmse(deep), "item kNN (default)": rmse(deep + item),
            "item + user kNN": rmse(deep + item + user),
            "3-seed ensemble, item kNN": rmse(np.mean([d + i for d, i, _ in parts], axis=0)),
            "3-seed ensemble, item + user kNN": rmse(np.mean([d + i + u for d, i, u in parts], axis=0))}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--splits", nargs="*", default=["u1", "u2", "u3", "u4", "u5"])
    parser.add_argument("--output", default=str(HERE / "results" / "ratings_knn_variants.json"))
    args = parser.parse_args(argv)
    limit_threads(1)
    import numpy as np

    from dmc.datasets import load_movielens_100k

    data = load_movielens_100k(args.data, "u1")
    held = np.random.default_rng(123).random(data.train.ratings.size) < 0.1
    results = {"validation": _variants([a[~held] for a in data.train], [a[held] for a in data.train])}
    print("validation", json.dumps(results["validation"]), flush=True)
    for split in args.splits:
        data = load_movielens_100k(args.data, split)
        results[split] = _variants(data.train, data.test)
        print(split, json.dumps(results[split]), flush=True)
    names = list(results["validation"])
    lines = ["| variant | validation RMSE | " + " | ".join(args.splits) + " | test mean |",
             "|---" * (len(args.splits) + 3) + "|"]
    for name in names:
        tests = [results[s][name] for s in args.splits]
        lines.append(f"| {name} | {results['validation'][name]:.4f} | "
                     + " | ".join(f"{t:.4f}" for t in tests) + f" | {np.mean(tests):.4f} |")
    results["table"] = lines
    print("\n".join(lines))
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
