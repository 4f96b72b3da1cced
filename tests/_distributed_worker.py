"""One process of a distributed test fit (started by tests/test_distributed.py).

Usage: python _distributed_worker.py SPEC.json OUTDIR, with RANK, WORLD_SIZE,
MASTER_ADDR and MASTER_PORT in the environment (or under torchrun).  The spec
names a .npz with the observed triplets, which process holds each entry, the
estimator parameters and the scenario.  Each process writes OUTDIR/rank<r>.npz
(the fitted model) or OUTDIR/rank<r>.err (the error it raised: type and message).
"""

import datetime
import json
import os
import sys
import traceback

import numpy as np
import scipy.sparse as sp


def main(spec_path, out_dir):
    import torch.distributed as dist

    with open(spec_path) as handle:
        spec = json.load(handle)
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    data = np.load(spec["data"])
    out = os.path.join(out_dir, f"rank{rank}")
    try:
        if spec.get("scenario") != "no_group":
            dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=spec.get("timeout", 60)))
        from dmc import DeepMatrixCompleter

        shape = tuple(data["shape"])
        if spec.get("scenario") == "mismatched_shape" and rank == size - 1:
            shape = (shape[0] + 1, shape[1])
        mine = data["owner"] == rank
        M = sp.coo_matrix((data["values"][mine], (data["rows"][mine], data["cols"][mine])),
                          shape=shape).tocsr()
        params = dict(spec["params"])
        if spec.get("scenario") == "mismatched_params" and rank == size - 1:
            params["depth"] = params.get("depth", 3) + 1
        if spec.get("scenario") == "absent" and rank == size - 1:
            raise RuntimeError("this process does not take part in the fit")
        truth = None
        if "truth_A" in data.files:
            truth = (data["truth_A"], data["truth_B"]) if spec.get("factor_truth") else \
                data["truth_A"] @ data["truth_B"].T
        model = DeepMatrixCompleter(**params, backend="torch", distributed=True)
        model.fit(M, ground_truth=truth)
        result = {"X": model.transform(as_numpy=True), "n_iter": model.n_iter_,
                  "left": model.left_factor_.numpy(), "right": model.right_factor_.numpy(),
                  "predicted": model.predict(data["rows"], data["cols"], as_numpy=True)}
        for key, values in model.history_.items():
            result["history_" + key] = values
        if rank == 0 and spec.get("save"):
            model.save(os.path.join(out_dir, "model.npz"))
        np.savez(out + ".npz", **result)
    except Exception as error:  # reported to the test, which checks the message
        with open(out + ".err", "w") as handle:
            handle.write(f"{type(error).__name__}\n{error}\n{traceback.format_exc()}")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
