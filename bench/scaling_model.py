"""A model of one training step of mpinn at N = 1 .. 1,024 ranks, from parts measured on one machine.

Pure functions, no MPI and no numpy: bench/scaling_parts.py measures, bench/run.py ("scaling")
fits and prints, tests/test_scaling_model.py checks the formulas by hand.

Step time on the slowest rank (seconds):

    T(N) = compute(rows) + sync(N, rows) + update(N) + comm(N)

  compute(rows)  gather the rank's rows + forward/backward (MLP.loss_grad_sum) on them,
                 interpolated (log-log, piecewise linear) in the curve measured at 1, 2, 4, ...
                 256 rows; rows = ceil(batch / N) ("local" shuffle: an even split), or the expected
                 largest share of N under mpinn's default "global" shuffle (below); taken as the
                 curve's maximum over 1 .. rows (a rank's share varies by a row from step to step,
                 and numpy's matmul of a 1-row batch leaves BLAS: 1 row costs more than 2); plus, for
                 N >= 2, the wait for the slowest rank: E[max of N standard normals] times the
                 measured step-to-step sigma of compute(rows) (Blom: 0.59 sigma at 2, 3.2 at 1,024).
  update(N)      replicated ("allreduce"): the optimizer step over all P parameters on every rank;
                 sharded ("sharded", ZeRO-1): over ceil(P / N) only. Both add the L2 penalty's
                 sum of squares over the rank's own P / N slice (mpinn/parallel/sync.py). Interpolated in
                 the curve measured at n = ceil(P / N), N = 1, 2, 4, ... 1024, made non-decreasing.
  comm(N)        0 at N = 1. Replicated: one Allreduce of 4 (P + 4) bytes. Sharded: Reduce_scatter
                 of 4 (P + 3) bytes + Allgather of 4 (P + 3) bytes (equal blocks, padded) + the 4-byte Iallreduce of
                 the batch weight (counted as exposed: an upper bound, it starts before forward).
                 shm (two levels, mpinn/parallel/shared_memory.py): within a node of q ranks, two
                 fences (a barrier each: lg q rounds of alpha_shm) and each rank reading and adding
                 its 1/q slice of the q - 1 other segments, (q - 1)/q n (beta_shm + gamma); across
                 M nodes, q concurrent Allreduces of the n / q slices (the link shared, as below).
                 Its update covers ceil(P / q) parameters, not P / N: every node updates all P.

Collective costs are those of R. Thakur, R. Rabenseifner and W. Gropp, "Optimization of
Collective Communication Operations in MPICH", Int. J. High Perform. Comput. Appl. 19(1):49-66,
2005, with alpha = latency per message (s), beta = transfer time per byte (s/B), gamma = local
reduction time per byte (s/B), p ranks, n bytes in the whole vector, lg = ceil(log2 p), and
MPICH's default switch points between algorithms (the constants below):

  Allreduce       n <= 2 KiB  recursive doubling   lg p (alpha + n beta + n gamma)
                  n >  2 KiB  Rabenseifner (reduce-scatter by recursive halving + allgather by
                              recursive doubling)  2 lg p alpha + 2 (p-1)/p n beta + (p-1)/p n gamma
  Reduce_scatter  n < 512 KiB recursive halving    lg p alpha + (p-1)/p n (beta + gamma)
  (commutative)   n >= 512 KiB pairwise exchange   (p-1) alpha + (p-1)/p n (beta + gamma)
  Allgather       n < 512 KiB recursive doubling (p a power of 2; Bruck's, same cost, when not
                              and n < 80 KiB)      lg p alpha + (p-1)/p n beta
                  otherwise   ring                 (p-1) alpha + (p-1)/p n beta

Two levels (a simple hierarchical assumption, not what every MPI does): N ranks are M =
ceil(N / q) nodes of q = ranks_per_node ranks. Up to one node, the formulas above with the
intra-node alpha, beta, gamma fitted on this machine. Beyond, each collective is a topology-aware
composition:

  Allreduce       Rabenseifner's split at the node boundary: its reduce-scatter half within the
                  node (q ranks, n bytes), an inter-node Allreduce among the M nodes of each
                  rank's n / q slice, its allgather half within the node; the two intra-node
                  halves add up to the one-node Allreduce formula (fitted Allreduce alpha, beta)
  Reduce_scatter  intra-node Reduce_scatter + inter-node Reduce_scatter of the n / q slice
  Allgather       inter-node Allgather of the n / q slice + intra-node Allgather

The q inter-node collectives run at once and share the node's one link: each is costed with
the inter-node alpha and q * beta_inter (beta_inter = 1 / link bandwidth), i.e. the node sends
the whole volume of the inter-node stage through its link; its reductions (n / q bytes per
rank) run in parallel at the intra-node gamma. Memory-bandwidth contention among the q ranks
of a node beyond the 2 measured here is not modelled.
"""

from __future__ import annotations

import math
from statistics import NormalDist

# MPICH's default switch points (bytes): MPIR_CVAR_ALLREDUCE_SHORT_MSG_SIZE,
# MPIR_CVAR_REDSCAT_COMMUTATIVE_LONG_MSG_SIZE, MPIR_CVAR_ALLGATHER_LONG_MSG_SIZE and
# MPIR_CVAR_ALLGATHER_SHORT_MSG_SIZE, the selection the paper describes (MPICH 4+ may choose
# otherwise through its JSON tuning files; the fitted alpha, beta are for these formulas).
ALLREDUCE_SHORT = 2048
REDSCAT_LONG = 524288
ALLGATHER_LONG = 524288
ALLGATHER_SHORT = 81920
KINDS = ("allreduce", "reduce_scatter", "allgather", "shm")
MODES = ("replicated", "sharded", "shm")
# Elements beyond the P parameters in each mode's reduced buffer (mpinn/parallel/sync.py):
# replicated [grad | loss | weight | flag | penalty], sharded [grad | loss | flag | penalty],
# shm's segments [grad | loss | weight | flag | penalty].
EXTRA = {"replicated": 4, "sharded": 3, "shm": 4}
FLOAT = 4  # bytes per float32


def lg(p):
    """ceil(log2 p): rounds of a recursive doubling/halving (MPICH adds steps for p not a power of 2)."""
    return math.ceil(math.log2(p)) if p > 1 else 0


def coefficients(kind, p, n):
    """(A, B, G, algorithm) with time = A alpha + B beta + G gamma for ``kind`` on p ranks, n bytes."""
    if p <= 1:
        return 0.0, 0.0, 0.0, "none"
    f = (p - 1) / p
    if kind == "allreduce":
        if n <= ALLREDUCE_SHORT:
            return lg(p), lg(p) * n, lg(p) * n, "recursive doubling"
        return 2 * lg(p), 2 * f * n, f * n, "Rabenseifner"
    if kind == "reduce_scatter":
        if n < REDSCAT_LONG:
            return lg(p), f * n, f * n, "recursive halving"
        return p - 1, f * n, f * n, "pairwise exchange"
    if kind == "allgather":
        if n < ALLGATHER_LONG and (p & (p - 1) == 0 or n < ALLGATHER_SHORT):
            return lg(p), f * n, 0.0, "recursive doubling" if p & (p - 1) == 0 else "Bruck"
        return p - 1, f * n, 0.0, "ring"
    if kind == "shm":  # two fences, the other segments' parts of my slice read and added
        return 2 * lg(p), f * n, f * n, "shared window"
    raise ValueError(f"unknown collective {kind!r}; one of {KINDS}")


def one_level(kind, p, n, alpha, beta, gamma=0.0):
    """Seconds of one collective among p ranks of one level (all alike), n bytes."""
    a, b, g, _ = coefficients(kind, p, n)
    return a * alpha + b * beta + g * gamma


def collective_time(kind, N, n, net):
    """Seconds of ``kind`` over N ranks, n bytes, on the two-level network ``net``:
    {"intra": {kind: (alpha, beta)}, "gamma": s/B, "inter": (alpha, beta), "ranks_per_node": q}."""
    if N <= 1:
        return 0.0
    q, g = min(N, net["ranks_per_node"]), net["gamma"]

    def within(k):
        return one_level(k, q, n, *net["intra"][k], g)

    if N <= q:
        return within(kind)
    M = math.ceil(N / q)
    a_e, b_e = net["inter"]

    def across(k):  # q concurrent collectives of n / q bytes, one shared link per node
        a, b, gg, _ = coefficients(k, M, n / q)
        return a * a_e + b * q * b_e + gg * g

    if kind == "allreduce":  # Rabenseifner's two halves within the node, the n / q slices across
        return within("allreduce") + across("allreduce")
    if kind == "reduce_scatter":
        return within("reduce_scatter") + across("reduce_scatter")
    if kind == "allgather":
        return across("allgather") + within("allgather")
    raise ValueError(f"unknown collective {kind!r}; one of {KINDS}")


def node_ranks(mode, N, net):
    """The ranks that split the update: all N, or (shm) the ranks of one node."""
    return min(N, net["ranks_per_node"]) if mode == "shm" else N


def comm_time(mode, N, P, net):
    """Seconds of a step's communication for ``mode`` at N ranks, P float32 parameters."""
    if N <= 1:
        return 0.0
    if mode == "shm":
        n, q = FLOAT * (P + EXTRA[mode]), node_ranks(mode, N, net)
        t = one_level("shm", q, n, *net["intra"]["shm"], net["gamma"])
        M = math.ceil(N / q)
        if M > 1:  # q concurrent Allreduces of the n / q slices, one shared link per node
            a_e, b_e = net["inter"]
            a, b, g, _ = coefficients("allreduce", M, n / q)
            t += a * a_e + b * q * b_e + g * net["gamma"]
        return t
    if mode == "replicated":
        return collective_time("allreduce", N, FLOAT * (P + EXTRA[mode]), net)
    n = FLOAT * (P + EXTRA[mode])
    return (collective_time("reduce_scatter", N, n, net) + collective_time("allgather", N, n, net)
            + collective_time("allreduce", N, FLOAT, net))


def comm_split(mode, N, P, net):
    """comm_time's latency (alpha), transfer (beta) and reduction (gamma) terms: the cost is
    linear in the parameters once the algorithms are chosen (by sizes only), so each term is
    the cost with the other parameters set to zero."""
    def only(a=0.0, b=0.0, g=0.0):
        return {"intra": {k: (v[0] * a, v[1] * b) for k, v in net["intra"].items()}, "gamma": net["gamma"] * g,
                "inter": (net["inter"][0] * a, net["inter"][1] * b), "ranks_per_node": net["ranks_per_node"]}

    return {"latency": comm_time(mode, N, P, only(a=1)), "transfer": comm_time(mode, N, P, only(b=1)),
            "reduction": comm_time(mode, N, P, only(g=1))}


# ---- the measured curves ------------------------------------------------------------------

def interp(xs, ys, x):
    """Piecewise linear in log x / log y through (xs, ys) (xs increasing, ys > 0), extended
    linearly (in log-log) beyond the ends."""
    if len(xs) == 1:
        return ys[0]
    i = 1
    while i < len(xs) - 1 and x > xs[i]:
        i += 1
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    t = (math.log(x) - math.log(x0)) / (math.log(x1) - math.log(x0))
    return math.exp(math.log(y0) + t * (math.log(y1) - math.log(y0)))


def monotone(ys):
    """The least-squares non-decreasing sequence closest to ys (pool adjacent violators): the
    time of an update over more parameters is never less; small-buffer timings are noisy."""
    blocks = []  # [sum, count]
    for y in ys:
        blocks.append([y, 1])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            s, c = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += c
    return [s / c for s, c in blocks for _ in range(c)]


def expected_max_normal(N):
    """E[max of N standard normals], Blom's approximation (0 for N = 1)."""
    return NormalDist().inv_cdf((N - 0.375) / (N + 0.25))


def rows_slowest(batch, N, shuffle="local"):
    """Rows of a global batch on the rank with the most: "local" splits evenly (ceil); "global"
    draws each batch from the whole data set, so a rank's share is ~Binomial(batch, 1/N) and the
    slowest rank has about the mean + E[max of N normals] standard deviations."""
    even = math.ceil(batch / N)
    if shuffle == "local" or N == 1:
        return even
    sd = math.sqrt(batch * (1 / N) * (1 - 1 / N))
    return min(batch, max(even, batch / N + expected_max_normal(N) * sd))


def step_time(N, mode, rows, parts, net):
    """{compute, sync, update, comm, step} seconds at N ranks; parts from scaling_parts.py:
    {"P", "rows", "compute" {"1", "N"}, "n", "update" {"1", "N"}, "penalty" {"1", "N"}} and
    optionally "spread" {"N"} (per rows); "1" holds the curves measured on one rank, "N" those
    with every core busy (N >= 2). sync: a step waits for the slowest of N ranks, whose
    compute is about E[max of N standard normals] step-to-step sigmas above the median."""
    P, tag = parts["P"], "1" if N == 1 else "N"
    compute = 0.0
    if rows > 0:  # the slowest of ranks with 1 .. rows rows (shares vary by one from step to step)
        grid, curve = parts["rows"], parts["compute"][tag]
        compute = max([interp(grid, curve, rows)] + [c for r, c in zip(grid, curve) if r <= rows])
    sync = 0.0
    if N > 1 and rows > 0 and parts.get("spread"):
        sync = expected_max_normal(N) * interp(parts["rows"], parts["spread"]["N"], rows)
    own = math.ceil(P / node_ranks(mode, N, net))
    update = interp(parts["n"], parts["update"][tag], P if mode == "replicated" else own)
    update += interp(parts["n"], parts["penalty"][tag], own)
    comm = comm_time(mode, N, P, net)
    return {"compute": compute, "sync": sync, "update": update, "comm": comm,
            "step": compute + sync + update + comm}


def epoch_rate(N, mode, n_rows, batch, parts, net, shuffle="local"):
    """Samples/s over an epoch of n_rows in batches of ``batch`` (the last one smaller)."""
    full, rest = divmod(n_rows, batch)
    t = full * step_time(N, mode, rows_slowest(batch, N, shuffle), parts, net)["step"]
    if rest:
        t += step_time(N, mode, rows_slowest(rest, N, shuffle), parts, net)["step"]
    return n_rows / t


def scaling_table(ranks, parts, net, batch=256, rows_per_rank=128, shuffle="local"):
    """Strong (global batch fixed) and weak (rows per rank fixed) scaling, both modes: a list of
    dicts with step seconds and its parts, samples/s, speedup and efficiency over N = ranks[0]."""
    out = []
    for scaling in ("strong", "weak"):
        for mode in MODES:
            base = None
            for N in ranks:
                b = batch if scaling == "strong" else rows_per_rank * N
                rows = rows_slowest(b, N, shuffle)
                t = step_time(N, mode, rows, parts, net)
                sps = b / t["step"]
                base = base or sps / N
                out.append({"scaling": scaling, "mode": mode, "ranks": N, "global_batch": b, "rows": rows,
                            "idle_ranks": max(0, N - b), **t, "samples_per_second": sps,
                            "speedup": sps / (base * ranks[0]), "efficiency": sps / (base * N)})
    return out


# ---- fitting ------------------------------------------------------------------------------

def _lsq2(x1, x2, y):
    """(c1, c2) >= 0 minimising sum(((y - c1 x1 - c2 x2) / y)^2): relative error, so microsecond
    and millisecond points weigh alike."""
    def solo(x):
        num = sum(a * b / (c * c) for a, b, c in zip(x, y, y))
        den = sum(a * a / (c * c) for a, c in zip(x, y))
        return max(0.0, num / den) if den else 0.0

    s11 = sum(a * a / (c * c) for a, c in zip(x1, y))
    s22 = sum(b * b / (c * c) for b, c in zip(x2, y))
    s12 = sum(a * b / (c * c) for a, b, c in zip(x1, x2, y))
    r1 = sum(a / c for a, c in zip(x1, y))
    r2 = sum(b / c for b, c in zip(x2, y))
    det = s11 * s22 - s12 * s12
    if det > 0:
        c1, c2 = (r1 * s22 - r2 * s12) / det, (r2 * s11 - r1 * s12) / det
        if c1 >= 0 and c2 >= 0:
            return c1, c2
    best = None
    for c1, c2 in ((solo(x1), 0.0), (0.0, solo(x2))):
        err = sum(((c - c1 * a - c2 * b) / c) ** 2 for a, b, c in zip(x1, x2, y))
        if best is None or err < best[0]:
            best = (err, c1, c2)
    return best[1], best[2]


def rel_rms(pred, meas):
    return math.sqrt(sum(((p - m) / m) ** 2 for p, m in zip(pred, meas)) / len(meas))


def fit_line(xs, ys, min_x=0):
    """(intercept, slope) >= 0 of y = c + s x over the points with x >= min_x (relative error)."""
    pts = [(x, y) for x, y in zip(xs, ys) if x >= min_x]
    return _lsq2([1.0] * len(pts), [x for x, _ in pts], [y for _, y in pts])


def _scale(x, z, w):
    """c >= 0 minimising sum(((z - c x) / w)^2)."""
    den = sum((a / c) ** 2 for a, c in zip(x, w))
    return max(0.0, sum(a * b / (c * c) for a, b, c in zip(x, z, w)) / den) if den else 0.0


def fit_collective(kind, p, sizes, seconds, gamma=0.0, short=4096, window=None):
    """(alpha, beta, relative rms error over all sizes) of ``kind``'s formula on p ranks, fitted
    to a measured curve with gamma (the reduction kernel's, measured alone) fixed: at p = 2 beta
    and gamma cannot be told apart. alpha is fitted on the short messages (<= ``short`` bytes),
    beta on those in ``window`` = (lo, hi) bytes (default: all longer than ``short``), the two
    alternately until they settle; relative errors, so no size range outweighs another. A
    straight alpha-beta line cannot follow protocol switches (eager to rendezvous, caches), so
    beta is best taken near the sizes the model will use."""
    co = [coefficients(kind, p, n) for n in sizes]
    y = [t - c[2] * gamma for t, c in zip(seconds, co)]
    S = [i for i, n in enumerate(sizes) if n <= short]
    L = [i for i, n in enumerate(sizes) if (window[0] <= n <= window[1] if window else n > short)]
    if not S or not L:
        keep = [i for i, v in enumerate(y) if v > 0]
        alpha, beta = _lsq2([co[i][0] for i in keep], [co[i][1] for i in keep], [y[i] for i in keep])
    else:
        alpha = beta = 0.0
        for _ in range(50):
            alpha = _scale([co[i][0] for i in S], [y[i] - co[i][1] * beta for i in S], [seconds[i] for i in S])
            beta = _scale([co[i][1] for i in L], [y[i] - co[i][0] * alpha for i in L], [seconds[i] for i in L])
    pred = [one_level(kind, p, n, alpha, beta, gamma) for n in sizes]
    return alpha, beta, rel_rms(pred, seconds)
