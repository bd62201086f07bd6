"""scikit-learn MLPClassifier throughput on the same data, model, batch and epochs (1 process).

    python bench/train_sklearn.py --prefix out/bench/big --hidden 512,512 --batch 256

One fit(max_iter=1, warm_start=True) call per epoch, each timed; samples/s from the best epoch
after the first, as for mpinn. float32 data stays float32 (sklearn keeps the input dtype).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import blas_info, emit, peak_rss_bytes  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--prefix", required=True, help="PREFIX_X.npy and PREFIX_y.npy")
    p.add_argument("--hidden", default="512,512")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--epochs", type=int, default=3)
    a = p.parse_args(argv)
    import numpy as np
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    X = np.load(a.prefix + "_X.npy")
    y = np.load(a.prefix + "_y.npy")
    clf = MLPClassifier(hidden_layer_sizes=tuple(int(h) for h in a.hidden.split(",")), batch_size=a.batch,
                        solver="adam", max_iter=1, warm_start=True, tol=0.0, n_iter_no_change=10**9,
                        random_state=0)
    secs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for _ in range(a.epochs):
            t0 = time.perf_counter()
            clf.fit(X, y)
            secs.append(time.perf_counter() - t0)
    timed = secs[1:] if len(secs) > 1 else secs
    emit({"samples_per_second": len(X) / min(timed), "samples_per_second_mean": len(X) * len(timed) / sum(timed),
          "epoch_seconds": secs, "dtype": str(clf.coefs_[0].dtype), "peak_rss": peak_rss_bytes(),
          "blas": blas_info()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
