"""Where one training step's time goes: milliseconds per step in each part, per rank.

    mpiexec -n 2 python bench/step_parts.py --data out/bench/big.h5 [--unblocked-adam]

Wraps the parts of Trainer.step with timers for one epoch of the big MLP (global batch 256,
f32, adam): loss_grad_sum (forward+backward: the matmuls and elementwise work), the gradient
Allreduce (including waiting for the slower rank), finish_gradient (L2 term, / batch weight),
penalty (the L2 term of the reported loss) and the optimizer update. --unblocked-adam swaps
in Adam's update as 12 whole-buffer passes (before it was blocked), for comparison.
"""

from __future__ import annotations

import argparse
import sys
import time

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import emit  # noqa: E402


def unblocked_adam_step(self, params, grad):
    import numpy as np

    self.t += 1
    tmp = self._tmp
    self.m *= self.beta_1
    np.multiply(grad, 1 - self.beta_1, out=tmp)
    self.m += tmp
    np.multiply(grad, grad, out=tmp)
    tmp *= 1 - self.beta_2
    self.v *= self.beta_2
    self.v += tmp
    self.learning_rate = self.learning_rate_init * np.sqrt(1 - self.beta_2**self.t) / (1 - self.beta_1**self.t)
    np.sqrt(self.v, out=tmp)
    tmp += self.epsilon
    np.multiply(self.m, -self.learning_rate, out=grad)
    grad /= tmp
    params += grad


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--hidden", default="512,512")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--unblocked-adam", action="store_true")
    a = p.parse_args(argv)
    from mpinn.comm import world
    from mpinn.config import TrainConfig
    from mpinn.problem import load_problem
    from mpinn.train import Trainer

    comm = world()
    cfg = TrainConfig(data=a.data, hidden=tuple(int(h) for h in a.hidden.split(",")), batch_size=a.batch,
                      epochs=2, dtype="float32", tol=0.0, n_iter_no_change=10**9).validate()
    tr = Trainer(cfg, load_problem(cfg, comm), comm, log=lambda line: None)
    if a.unblocked_adam:
        tr.optimizer.step = unblocked_adam_step.__get__(tr.optimizer)
    acc = {}

    def wrap(obj, name, label):
        f = getattr(obj, name)

        def timed(*args, **kw):
            t = time.perf_counter()
            out = f(*args, **kw)
            acc[label] = acc.get(label, 0.0) + time.perf_counter() - t
            return out

        setattr(obj, name, timed)

    for obj, name, label in [(tr.model, "loss_grad_sum", "forward+backward"), (tr.comm, "allreduce_sum", "allreduce"),
                             (tr.model, "finish_gradient", "finish_gradient"), (tr.model, "penalty", "penalty"),
                             (tr.optimizer, "step", "optimizer")]:
        wrap(obj, name, label)
    tr.run_epoch()  # warm-up epoch, not counted
    acc.clear()
    t0 = time.perf_counter()
    tr.run_epoch()
    total = time.perf_counter() - t0
    steps = tr.schedule.n_steps
    mine = {k: v / steps * 1e3 for k, v in acc.items()}
    mine["whole step"] = total / steps * 1e3
    ranks = comm.gather_json(mine)
    if comm.rank == 0:
        emit({"ranks": comm.size, "unblocked_adam": a.unblocked_adam, "ms_per_step": ranks})
    return 0


if __name__ == "__main__":
    sys.exit(main())
