"""mpinn.HalvingGridSearchCV on epochs: promoted candidates retrained from epoch 0 (scikit-learn's
way) vs continued (warm_start_promoted=True).

    python bench/halving_warm.py              # digits, 27 candidates, factor 3, max_iter 3/9/27/81
    python bench/halving_warm.py --quick      # 9 candidates, max_iter 1/3/9, 300 rows (a smoke run)

Digits (1797 x 64 scaled to [0, 1], 10 classes), 3 folds, adam, batch 200, no early stop;
hidden (8,), (16,), (32,) x learning_rate_init 0.001, 0.003, 0.01 x alpha 1e-4, 1e-2, 1
(27 candidates), resource max_iter up to 81, factor 3, min_resources exhaust: 27 candidates on
3 epochs, 9 on 9, 3 on 27, 1 on 81. One process (1 rank), refit=False; the two searches
alternate --repeat times and each figure is the best run (this machine is shared). Prints the
epochs trained (each task's epochs, summed), wall and CPU seconds of fit, and the largest
difference between the two cv_results_ (scores and ranks): it must be 0 (see docs/search.md).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit  # noqa: E402

GRID = {"hidden_layer_sizes": [(8,), (16,), (32,)], "learning_rate_init": [0.001, 0.003, 0.01],
        "alpha": [1e-4, 1e-2, 1.0]}


def search(X, y, warm, max_iter, grid):
    import mpinn

    s = mpinn.HalvingGridSearchCV(mpinn.MLPClassifier(batch_size=200, random_state=0), grid, resource="max_iter",
                                  max_resources=max_iter, factor=3, cv=3, warm_start_promoted=warm, refit=False)
    wall, cpu = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # max_iter reached: short fits are the point
        s.fit(X, y)
    return s, time.perf_counter() - wall, time.process_time() - cpu


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="9 candidates, max_iter up to 9, 300 rows")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each search; the best is reported")
    args = ap.parse_args()
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    grid, max_iter = GRID, 81
    if args.quick:
        X, y, max_iter = X[:300], y[:300], 9
        grid = {k: v for k, v in GRID.items() if k != "alpha"}
    best = {}
    for _ in range(args.repeat):
        for warm in (False, True):
            s, wall, cpu = search(X, y, warm, max_iter, grid)
            old = best.get(warm)
            best[warm] = (s, min(wall, old[1]) if old else wall, min(cpu, old[2]) if old else cpu)
    cold, warm = best[False][0], best[True][0]
    keys = [k for k in cold.cv_results_ if k.startswith(("mean_test", "std_test", "split", "rank_", "mean_train"))]
    diff = max(float(np.nanmax(np.abs(np.asarray(cold.cv_results_[k], float) - np.asarray(warm.cv_results_[k], float))))
               for k in keys)
    print(f"digits {X.shape[0]} x {X.shape[1]}, {cold.n_candidates_[0]} candidates, factor 3, "
          f"max_iter {cold.n_resources_}, candidates {cold.n_candidates_}, 3 folds, 1 rank")
    print(f"{'search':<26}{'epochs':>8}{'wall s':>9}{'cpu s':>8}")
    for name, warm_flag in (("from epoch 0", False), ("warm_start_promoted=True", True)):
        s, wall, cpu = best[warm_flag]
        print(f"{name:<26}{s.epochs_trained_:>8}{wall:>9.2f}{cpu:>8.2f}")
    ratio = warm.epochs_trained_ / cold.epochs_trained_
    print(f"epochs: {ratio:.2f} of the from-scratch search's; largest cv_results_ difference {diff:g}; "
          f"same best_params_: {cold.best_params_ == warm.best_params_}")
    emit({"epochs_cold": cold.epochs_trained_, "epochs_warm": warm.epochs_trained_, "epochs_ratio": ratio,
          "wall_cold": best[False][1], "wall_warm": best[True][1], "cpu_cold": best[False][2],
          "cpu_warm": best[True][2], "max_difference": diff})


if __name__ == "__main__":
    main()
