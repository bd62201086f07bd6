"""The training step allocates nothing after its first steps (docs/performance.md, "What
"allocates nothing" means").

Measured with tracemalloc, which sees every Python object and every numpy array buffer
(numpy reports its data allocations to it), over steps after a warm-up:

- no array buffer: a step's peak traced memory above the memory before it stays under
  STEP_PEAK_LIMIT bytes, whatever the batch, and is the same (within BATCH_SLACK bytes) for
  a batch of 1,024 rows as for one of 16: any array with one byte per row would add 1,008;
- nothing kept: the traced memory after the last step is within KEPT_SLACK bytes of the
  memory after the warm-up, over 30 steps.

What a step still makes and frees are small Python objects of a size fixed by the code, not
the data: the floats it returns, mpi4py's request and message objects, a few array views
(e.g. the gathered batch's slice of the reused input buffer) and numpy's per-call iterator
state of a reduction or a clip.

Every loss, every step strategy, serially here and on every rank in the MPI suite (make test
runs it on 2 and 3 ranks).
"""

import dataclasses
import tracemalloc

import numpy as np
import pytest

from mpinn.parallel.comm import Comm
from mpinn.train.config import TrainConfig
from mpinn.nn.model import MLP
from mpinn.train.problem import problem_from_arrays
from mpinn.train.loop import Trainer

STEP_PEAK_LIMIT = 4096
BATCH_SLACK = 256
SMALL, LARGE = 16, 1024
WARMUP, MEASURED = 25, 30
# The measuring loop's own locals and numpy's small caches; a leak of the smallest Python
# object (16 B) per step would keep 480 B over MEASURED steps.
KEPT_SLACK = 256

# loss -> (task, output activation the loss goes with, number of outputs)
LOSSES = {
    "squared_error": ("regress", "identity", 1),
    "squared_error_2_outputs": ("regress", "identity", 2),
    "log_loss": ("classify", "softmax", 3),
    "binary_log_loss": ("classify", "logistic", 1),
    "poisson": ("regress", "exp", 1),
}
SYNCS = ("allreduce", "sharded", "shm", "overlap")


def _trainer(comm, loss, sync, solver="adam", weighted=False, n=1100):
    rng = np.random.RandomState(0)  # the same global data on every rank
    X = rng.normal(size=(n, 7))
    task, output, k = LOSSES[loss]
    y = {"identity": rng.normal(size=(n, k)).squeeze(), "softmax": rng.randint(0, k, n),
         "logistic": rng.randint(0, 2, n), "exp": rng.poisson(2.0, n).astype(float)}[output]
    cfg = TrainConfig(hidden=(13, 5), epochs=1, batch_size=LARGE, seed=0, solver=solver, alpha=1e-3,
                      sync="allreduce" if sync == "overlap" else sync).validate()
    problem = problem_from_arrays(X, y, cfg, comm, task=task)
    if weighted:
        problem = dataclasses.replace(problem, sample_weight=rng.uniform(0.5, 2.0, len(problem.X)))
    model = None
    if output == "exp":  # MLPRegressor(loss="poisson")'s network; targets as the estimator gives them
        model = MLP([7, 13, 5, 1], output="exp")
        problem = dataclasses.replace(problem, Y=np.asarray(problem.y, dtype=float).reshape(-1, 1))
    trainer = Trainer(cfg, problem, comm, log=lambda line: None, model=model, sync=sync)
    assert trainer.model.loss == loss.replace("_2_outputs", "")
    return trainer


def step_allocations(trainer, rows):
    """(largest peak above the pre-step memory, memory kept) over MEASURED steps of ``rows``
    local rows each (arrays of local positions, int32 as the schedule makes them)."""
    local = len(trainer.problem.X)
    rng = np.random.RandomState(1)
    batches = [rng.randint(0, local, rows).astype(np.int32) for _ in range(WARMUP + MEASURED)]
    peaks = np.zeros(MEASURED, dtype=np.int64)  # made before tracing; a list would keep an int a step
    tracemalloc.start()
    try:
        for b in batches[:WARMUP]:
            trainer.step(b)
        kept_from = tracemalloc.get_traced_memory()[0]
        for i, b in enumerate(batches[WARMUP:]):
            before = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            trainer.step(b)
            peaks[i] = tracemalloc.get_traced_memory()[1] - before
        kept = tracemalloc.get_traced_memory()[0] - kept_from
    finally:
        tracemalloc.stop()
    return int(peaks.max()), kept


def allocations(trainer):
    """(peak, kept) of the trainer's steps at SMALL rows, then (after its workspace grew in
    the warm-up) at LARGE rows."""
    return step_allocations(trainer, SMALL) + step_allocations(trainer, LARGE)


def assert_allocation_free(measured, what=""):
    small_peak, small_kept, large_peak, large_kept = measured
    report = (f"{what}: peak per step {small_peak} B at {SMALL} rows, {large_peak} B at {LARGE}; "
              f"kept {small_kept}, {large_kept} B")
    assert large_peak < STEP_PEAK_LIMIT and small_peak < STEP_PEAK_LIMIT, report
    assert abs(large_peak - small_peak) <= BATCH_SLACK, report
    assert small_kept <= KEPT_SLACK and large_kept <= KEPT_SLACK, report


def _serial():
    from mpi4py import MPI

    return Comm(MPI.COMM_SELF)


@pytest.mark.parametrize("sync", SYNCS)
@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_step_allocates_nothing(loss, sync):
    assert_allocation_free(allocations(_trainer(_serial(), loss, sync)))


@pytest.mark.parametrize("solver", ["sgd", "gd"])
def test_other_solvers_and_sample_weights_allocate_nothing(solver):
    for loss, sync in (("log_loss", "allreduce"), ("poisson", "sharded")):
        assert_allocation_free(allocations(_trainer(_serial(), loss, sync, solver=solver, weighted=True)),
                               loss)


def test_a_broadcasting_ufunc_would_be_seen():
    """The check can fail: numpy's broadcasting ufuncs allocate an iterator buffer that grows
    with the rows (up to 8,192 elements), which is why the step spreads biases with copyto."""
    trainer = _trainer(_serial(), "log_loss", "allreduce")
    model = trainer.model
    original = model.loss_grad_sum

    def with_broadcast_add(params, X, Y, grad, sample_weight=None, on_grad=None):
        out = original(params, X, Y, grad, sample_weight, on_grad)
        np.add(model._ws.acts[1], model.views(params)[0][1], out=model._ws.acts[1])
        return out

    model.loss_grad_sum = with_broadcast_add
    small, _ = step_allocations(trainer, SMALL)
    large, _ = step_allocations(trainer, LARGE)
    assert large - small > BATCH_SLACK


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("sync", SYNCS)
def test_step_allocates_nothing_on_every_rank(world, sync):
    # Measure everything, then assert: a rank that failed early would leave the other waiting.
    losses = ("log_loss", "binary_log_loss", "poisson", "squared_error_2_outputs")
    measured = [allocations(_trainer(Comm(world), loss, sync)) for loss in losses]
    for loss, m in zip(losses, measured):
        assert_allocation_free(m, loss)
