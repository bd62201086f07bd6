"""bench/scaling_model.py's formulas against hand computations (no timing, no MPI)."""

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import scaling_model as sm  # noqa: E402

A, B, G = 2e-6, 1e-10, 5e-11  # alpha (s), beta (s/B), gamma (s/B)
KB, MB = 1024, 1 << 20


def close(x, y):
    return x == pytest.approx(y, rel=1e-12, abs=1e-18)


@pytest.mark.parametrize("kind", sm.KINDS)
def test_one_rank_costs_nothing(kind):
    assert sm.coefficients(kind, 1, MB)[:3] == (0.0, 0.0, 0.0)
    assert sm.one_level(kind, 1, MB, A, B, G) == 0.0


def test_allreduce_closed_forms():
    # Long messages, Rabenseifner: 2 lg p a + 2 (p-1)/p n b + (p-1)/p n g.
    assert close(sm.one_level("allreduce", 2, MB, A, B, G), 2 * A + MB * B + MB / 2 * G)
    assert close(sm.one_level("allreduce", 4, MB, A, B, G), 4 * A + 1.5 * MB * B + 0.75 * MB * G)
    assert sm.coefficients("allreduce", 4, MB)[3] == "Rabenseifner"
    # Short messages (<= 2 KiB), recursive doubling: lg p (a + n b + n g).
    assert close(sm.one_level("allreduce", 2, KB, A, B, G), A + KB * B + KB * G)
    assert close(sm.one_level("allreduce", 4, KB, A, B, G), 2 * (A + KB * B + KB * G))
    assert close(sm.one_level("allreduce", 4, 2 * KB, A, B, G), 2 * (A + 2 * KB * B + 2 * KB * G))
    assert sm.coefficients("allreduce", 4, 2 * KB + 4)[3] == "Rabenseifner"


def test_reduce_scatter_closed_forms():
    # Recursive halving below 512 KiB: lg p a + (p-1)/p n (b + g); pairwise exchange above: (p-1) a + ...
    assert close(sm.one_level("reduce_scatter", 2, KB, A, B, G), A + KB / 2 * (B + G))
    assert close(sm.one_level("reduce_scatter", 4, KB, A, B, G), 2 * A + 0.75 * KB * (B + G))
    assert close(sm.one_level("reduce_scatter", 4, MB, A, B, G), 3 * A + 0.75 * MB * (B + G))
    assert sm.coefficients("reduce_scatter", 4, MB)[3] == "pairwise exchange"
    assert sm.coefficients("reduce_scatter", 4, 512 * KB - 4)[3] == "recursive halving"


def test_allgather_closed_forms():
    # No reduction: gamma never appears.
    assert close(sm.one_level("allgather", 2, MB, A, B, G), A + MB / 2 * B)
    assert close(sm.one_level("allgather", 4, KB, A, B, G), 2 * A + 0.75 * KB * B)  # recursive doubling
    assert close(sm.one_level("allgather", 4, MB, A, B, G), 3 * A + 0.75 * MB * B)  # ring
    assert sm.coefficients("allgather", 4, MB)[3] == "ring"
    assert sm.coefficients("allgather", 6, KB)[3] == "Bruck"
    assert close(sm.one_level("allgather", 6, KB, A, B, G), 3 * A + 5 / 6 * KB * B)


def net(q=4, inter=(1e-6, 4e-11)):
    intra = {"allreduce": (A, B), "reduce_scatter": (3e-6, 2e-10), "allgather": (4e-6, 3e-10), "shm": (5e-7, 6e-11)}
    return {"intra": intra, "gamma": G, "inter": inter, "ranks_per_node": q}


def test_within_a_node_uses_the_intra_node_fit():
    n = net(q=4)
    assert close(sm.collective_time("allreduce", 4, MB, n), 4 * A + 1.5 * MB * B + 0.75 * MB * G)
    assert close(sm.collective_time("reduce_scatter", 2, KB, n), 3e-6 + KB / 2 * (2e-10 + G))
    assert close(sm.collective_time("allgather", 4, MB, n), 3 * 4e-6 + 0.75 * MB * 3e-10)


def test_two_levels_by_hand():
    """8 ranks = 2 nodes of 4: Allreduce = Rabenseifner's halves within the node (the one-node
    formula) + an inter-node allreduce of the n/4 slices (4 flows share the link: 4 beta_e per
    byte of a slice); Reduce_scatter and Allgather one intra and one inter stage each."""
    ae, be = 1e-6, 4e-11
    n = net(q=4, inter=(ae, be))
    within = 4 * A + 1.5 * MB * B + 0.75 * MB * G      # Rabenseifner, 4 ranks, 1 MiB
    across = 2 * ae + 2 * 0.5 * (MB / 4) * (4 * be) + 0.5 * (MB / 4) * G  # Rabenseifner, 2 nodes
    assert close(sm.collective_time("allreduce", 8, MB, n), within + across)
    assert close(sm.collective_time("allreduce", 16, MB, n),
                 within + 4 * ae + 2 * 0.75 * MB * be + 0.75 * (MB / 4) * G)  # 4 nodes
    rs = 3 * 3e-6 + 0.75 * MB * (2e-10 + G)           # pairwise exchange, 4 ranks, 1 MiB
    ag = 3 * 4e-6 + 0.75 * MB * 3e-10                 # ring, 4 ranks, 1 MiB
    # Reduce_scatter and Allgather: one intra and one inter stage each.
    across_rs = 1 * ae + 0.5 * (MB / 4) * (4 * be) + 0.5 * (MB / 4) * G  # recursive halving, 256 KiB
    assert close(sm.collective_time("reduce_scatter", 8, MB, n), rs + across_rs)
    across_ag = 1 * ae + 0.5 * (MB / 4) * (4 * be)
    assert close(sm.collective_time("allgather", 8, MB, n), across_ag + ag)


@pytest.mark.parametrize("mode", sm.MODES)
def test_no_communication_on_one_rank(mode):
    assert sm.comm_time(mode, 1, 669706, net()) == 0.0
    assert sm.step_time(1, mode, 256, parts(), net())["comm"] == 0.0


def test_comm_of_each_mode():
    P, n = 1000, net()
    assert close(sm.comm_time("replicated", 2, P, n), sm.one_level("allreduce", 2, 4 * (P + 4), A, B, G))
    sharded = (sm.one_level("reduce_scatter", 2, 4 * (P + 3), 3e-6, 2e-10, G)
               + sm.one_level("allgather", 2, 4 * (P + 3), 4e-6, 3e-10)
               + sm.one_level("allreduce", 2, 4, A, B, G))
    assert close(sm.comm_time("sharded", 2, P, n), sharded)


def test_shm_two_levels_by_hand():
    """shm: within a node of q = 4, two fences (2 lg 4 alpha_shm) and 3/4 of the buffer read and
    added; at 8 ranks (2 nodes), + an inter-node Allreduce of each n/4 slice, 4 flows sharing
    the link; its update covers P / 4 (the node's ranks), not P / 8."""
    ae, be = 1e-6, 4e-11
    n, P = net(q=4, inter=(ae, be)), 1 << 18
    size = 4 * (P + 4)
    within = 2 * 2 * 5e-7 + 0.75 * size * (6e-11 + G)
    assert close(sm.comm_time("shm", 4, P, n), within)
    assert close(sm.comm_time("shm", 2, P, n), 2 * 5e-7 + 0.5 * size * (6e-11 + G))
    slice_ = size / 4  # 256 KiB + 4: Rabenseifner on 2 nodes
    across = 2 * ae + 2 * 0.5 * slice_ * (4 * be) + 0.5 * slice_ * G
    assert close(sm.comm_time("shm", 8, P, n), within + across)
    pp = parts()
    assert sm.step_time(8, "shm", 1, pp, n)["update"] == pytest.approx(sm.step_time(4, "shm", 1, pp, n)["update"])
    assert sm.step_time(4, "shm", 1, pp, n)["update"] == pytest.approx(sm.step_time(4, "sharded", 1, pp, n)["update"])


def parts(P=1 << 20, per_param=1e-9, per_row=1e-5):
    """Synthetic curves: update linear in n, penalty tiny, compute linear in rows."""
    ns = [math.ceil(P / N) for N in (1024, 512, 256, 128, 64, 32, 16, 8, 4, 2, 1)]
    rows = [1, 2, 4, 8, 16, 32, 64, 128, 256]
    lin = {k: [per_param * n for n in ns] for k in ("1", "N")}
    return {"P": P, "rows": rows, "compute": {k: [per_row * r for r in rows] for k in ("1", "N")},
            "n": ns, "update": lin, "penalty": {k: [1e-15 * n for n in ns] for k in ("1", "N")}}


def test_sharded_update_shrinks_as_one_over_n_replicated_does_not():
    pp, n = parts(), net()
    sharded = [sm.step_time(N, "sharded", 1, pp, n)["update"] for N in (1, 2, 4, 8, 1024)]
    replicated = [sm.step_time(N, "replicated", 1, pp, n)["update"] for N in (1, 2, 4, 8, 1024)]
    for N, t in zip((1, 2, 4, 8, 1024), sharded):
        assert t == pytest.approx(sharded[0] / N, rel=1e-6)
    for t in replicated:
        assert t == pytest.approx(replicated[0], rel=1e-6)


def test_step_is_the_sum_of_its_parts_and_compute_follows_rows():
    pp, n = parts(), net()
    t = sm.step_time(4, "replicated", 64, pp, n)
    assert t["sync"] == 0.0  # no spread measured
    assert close(t["step"], t["compute"] + t["sync"] + t["update"] + t["comm"])
    assert t["compute"] == pytest.approx(64e-5)
    assert sm.step_time(4, "replicated", 0, pp, n)["compute"] == 0.0


def test_interp_is_exact_for_power_laws_and_monotone_pools():
    xs = [1, 2, 4, 8]
    ys = [x ** 2 for x in xs]
    assert sm.interp(xs, ys, 3) == pytest.approx(9)
    assert sm.interp(xs, ys, 16) == pytest.approx(256)  # extended beyond the last point
    assert sm.monotone([1, 3, 2, 4]) == [1, 2.5, 2.5, 4]
    assert sm.monotone([5, 4, 3]) == [4, 4, 4]


def test_rows_on_the_slowest_rank():
    assert sm.rows_slowest(256, 1) == 256
    assert sm.rows_slowest(256, 2) == 128
    assert sm.rows_slowest(256, 3) == 86
    assert sm.rows_slowest(256, 1024) == 1  # 768 ranks idle
    assert sm.rows_slowest(256, 1, "global") == 256
    # Binomial(256, 1/2): sd 8, E[max of 2 normals] = 1/sqrt(pi) ~ 0.564 (Blom gives ~0.59).
    assert 128 + 0.5 * 8 < sm.rows_slowest(256, 2, "global") < 128 + 0.65 * 8
    assert sm.expected_max_normal(1) == pytest.approx(0.0, abs=1e-12)


def test_fit_recovers_the_formula_parameters():
    sizes = [8 * 2 ** k for k in range(22)]
    for kind in sm.KINDS:
        seconds = [sm.one_level(kind, 2, s, 3e-6, 2e-10, G) for s in sizes]
        for window in (None, (MB, 4 * MB)):
            alpha, beta, err = sm.fit_collective(kind, 2, sizes, seconds, G, window=window)
            assert alpha == pytest.approx(3e-6, rel=1e-6) and beta == pytest.approx(2e-10, rel=1e-6)
            assert err < 1e-6
        # Without short messages, one joint fit.
        alpha, beta, _ = sm.fit_collective(kind, 2, sizes[12:], seconds[12:], G)
        assert alpha == pytest.approx(3e-6, rel=1e-6) and beta == pytest.approx(2e-10, rel=1e-6)
    c, s = sm.fit_line([1, 2, 4, 8], [5 + 2 * x for x in (1, 2, 4, 8)])
    assert (c, s) == (pytest.approx(5), pytest.approx(2))


def test_scaling_table_efficiency_and_batches():
    table = sm.scaling_table([1, 2, 4], parts(), net(), batch=256, rows_per_rank=128)
    assert len(table) == 2 * len(sm.MODES) * 3
    for row in table:
        if row["ranks"] == 1:
            assert row["efficiency"] == pytest.approx(1.0) and row["speedup"] == pytest.approx(1.0)
        assert row["efficiency"] == pytest.approx(row["speedup"] / row["ranks"])
        assert row["samples_per_second"] == pytest.approx(row["global_batch"] / row["step"])
    weak = [r for r in table if r["scaling"] == "weak"]
    assert [r["global_batch"] for r in weak[:3]] == [128, 256, 512]
    assert all(r["rows"] == 128 for r in weak)


@pytest.mark.parametrize("N", [1, 2, 4, 8, 64])
def test_comm_split_adds_up(N):
    n = net(q=4)
    for mode in sm.MODES:
        split = sm.comm_split(mode, N, 669706, n)
        assert sum(split.values()) == pytest.approx(sm.comm_time(mode, N, 669706, n), rel=1e-12)
    lat = sm.comm_split("replicated", 2, 669706, n)["latency"]
    assert close(lat, 2 * A)  # Rabenseifner on 2 ranks: 2 alpha


def test_wait_for_the_slowest_rank():
    pp, n = parts(), net()
    pp["spread"] = {"N": [1e-4] * len(pp["rows"])}
    assert sm.step_time(1, "replicated", 256, pp, n)["sync"] == 0.0
    for N in (2, 16, 1024):
        t = sm.step_time(N, "sharded", 8, pp, n)
        assert t["sync"] == pytest.approx(sm.expected_max_normal(N) * 1e-4)
        assert close(t["step"], t["compute"] + t["sync"] + t["update"] + t["comm"])
    assert 0.5 < sm.expected_max_normal(2) < 0.6 and 3.0 < sm.expected_max_normal(1024) < 3.3


def test_a_slow_single_row_sets_the_pace_of_small_shares():
    pp, n = parts(), net()
    pp["compute"]["N"][0] = 5 * pp["compute"]["N"][2]  # 1 row costs more than 4 (numpy's 1-row path)
    assert sm.step_time(2, "replicated", 2, pp, n)["compute"] == pytest.approx(pp["compute"]["N"][0])
    assert sm.step_time(2, "replicated", 256, pp, n)["compute"] == pytest.approx(256e-5)
