"""Dynamic load balancing and random shards: the share rule (serially, no MPI), then whole
runs under mpiexec with a rank slowed by MPINN_SLOW: the shares settle, the weights are the
one-rank model's, and a preempted run resumes on the same and on another rank count."""

import json
import shutil

import numpy as np
import pytest

import mpinn
from launch import clean_env, run
from mpinn.parallel.balance import (MIN_WINDOW, Balancer, check_interval, parse_slow, proportional_shares,
                           window_speed)
from mpinn.errors import InputError
from mpinn.train.logs import epoch_records
from mpinn.options import parse_balance

# ---- the share rule, serially -------------------------------------------------------------


def test_parse_balance_and_slow():
    assert parse_balance("dynamic") == "dynamic"
    with pytest.raises(InputError, match="--balance: choose from static, dynamic, got 'fast'"):
        parse_balance("fast")
    assert parse_slow(None, 2) == {} and parse_slow("", 2) == {}
    assert parse_slow("1:3", 2) == {1: 3.0}
    assert parse_slow("0:1.5;2:4", 3) == {0: 1.5, 2: 4.0}
    for bad in ("1", "x:3", "1:0.5", "1:nan", "1:3:2", ":2", "1:"):
        with pytest.raises(InputError, match="MPINN_SLOW: expected RANK:FACTOR"):
            parse_slow(bad, 2)
    with pytest.raises(InputError, match="MPINN_SLOW: rank 2 does not exist in a job of 2 rank"):
        parse_slow("2:3", 2)


def test_check_interval_is_a_few_steps():
    assert [check_interval(n) for n in (1, 4, 20, 100, 10_000)] == [1, 1, 5, 20, 20]


def _simulate(balancer, cost, shares, windows, rng, noise=0.0, rows=1000.0, overhead=0.0):
    """Feed ``windows`` windows of 10 steps in which rank r takes (overhead + cost[r] * rows)
    seconds per step for its rows; returns the shares after each window."""
    history = []
    for _ in range(windows):
        steps = [[(overhead + c * s * rows) * (1 + noise * rng.uniform(-1, 1)) for _ in range(10)]
                 for c, s in zip(cost, shares)]
        speeds = [window_speed([s * rows] * 10, t) for s, t in zip(shares, steps)]
        decided, used = balancer.observe(speeds, [sum(t) for t in steps])
        assert used
        if decided is not None:
            shares = decided
        history.append(list(shares))
    return history


def test_shares_follow_the_speeds_and_then_stay():
    rng = np.random.RandomState(0)
    cost = [1e-5, 3e-5]  # rank 1 three times slower
    b = Balancer(2, [0.5, 0.5])
    history = _simulate(b, cost, [0.5, 0.5], 30, rng, noise=0.03)
    np.testing.assert_allclose(history[3], [0.75, 0.25], atol=0.02)  # the first look is dropped
    assert all(h == history[3] for h in history[3:])  # then no move: 3% noise is under the hysteresis
    # with a per-step overhead the iteration still reaches equal step times
    b = Balancer(3, [1 / 3] * 3)
    history = _simulate(b, [1e-5, 2e-5, 1e-5], [1 / 3] * 3, 40, rng, overhead=2e-3)
    s = history[-1]
    times = [2e-3 + c * x * 1000 for c, x in zip([1e-5, 2e-5, 1e-5], s)]
    assert max(times) / min(times) < 1.1 and s[1] < s[0]


def test_equal_speeds_never_move_rows():
    rng = np.random.RandomState(1)
    b = Balancer(4)
    assert all(h == [0.25] * 4 for h in _simulate(b, [1e-5] * 4, [0.25] * 4, 50, rng, noise=0.04))


def test_every_rank_keeps_a_minimum_share():
    assert min(proportional_shares([1.0, 1e-9])) == pytest.approx(0.01, rel=0.02)  # 2% of an equal share


def test_short_windows_are_pooled_and_the_median_ignores_a_stalled_step():
    b = Balancer(2)
    assert b.observe([1.0, 1.0], [1.0, 1.0]) == (None, True)  # the warm-up window is dropped
    assert b.observe([1000.0, 100.0], [MIN_WINDOW / 4] * 2) == (None, False)  # too short: keep filling
    assert window_speed([10, 10, 10, 0], [0.01, 0.01, 0.5, 0.0]) == 1000.0
    assert window_speed([0, 0], [0.1, 0.1]) == 0.0


def test_balancer_state_round_trips():
    b = Balancer(2)
    _simulate(b, [1e-5, 3e-5], [0.5, 0.5], 5, np.random.RandomState(0))
    c = Balancer(2)
    c.load_state(json.loads(json.dumps(b.state())))
    assert c.shares == b.shares and c.speeds == b.speeds


# ---- whole runs under mpiexec -------------------------------------------------------------

COMMON = ["--hidden", "512", "--batch-size", "200", "--epochs", "6", "--seed", "2", "--solver", "adam",
          "--n-iter-no-change", "100", "--quiet"]


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    d = tmp_path_factory.mktemp("balance")
    run(["data", "synthetic", d / "syn.h5", "--samples", "4000", "--features", "20", "--classes", "3"])
    for shuffle in ("global", "none"):  # the references: one rank, block shard
        run(["train", "--data", d / "syn.h5", *COMMON, "--shuffle", shuffle, "--checkpoint", d / f"ref-{shuffle}"])
    return d


def _weights(directory):
    model = mpinn.load(directory)
    return model.coefs_ + model.intercepts_


def _assert_same_model(a, b, tol=1e-12):
    for x, y in zip(_weights(a), _weights(b)):
        assert np.max(np.abs(x - y)) <= tol * np.max(np.abs(y)), np.max(np.abs(x - y))


def test_random_shard_on_8_ranks_trains_the_one_rank_block_model(syn, tmp_path):
    """2 and 3 ranks: the dynamic, streaming and resume tests below train random shards too."""
    run(["train", "--data", syn / "syn.h5", *COMMON, "--shard", "random", "--checkpoint", tmp_path / "ck"], np_=8,
        timeout=300)
    _assert_same_model(tmp_path / "ck", syn / "ref-global")


def _records(path):
    return epoch_records(open(path))


def test_dynamic_balance_moves_rows_off_a_slow_rank_and_keeps_the_model(syn, tmp_path):
    """The model of the unbalanced one-rank run (within 1e-12), shares settled by epoch 3."""
    metrics = tmp_path / "m.jsonl"
    run(["train", "--data", syn / "syn.h5", *COMMON, "--balance", "dynamic", "--metrics", metrics,
         "--checkpoint", tmp_path / "ck"], np_=2, env=clean_env(MPINN_SLOW="1:3"))
    _assert_same_model(tmp_path / "ck", syn / "ref-global")
    records = _records(metrics)
    shares = np.array([r["shares"] for r in records])
    assert all(len(r["rank_compute_seconds"]) == 2 for r in records)
    assert sum(r["row_moves"] for r in records) >= 1
    # settled within 3 epochs: from epoch 3 on the shares stay put, most rows on the fast rank
    assert np.ptp(shares[2:], axis=0).max() <= 0.1, shares
    assert (shares[2:, 1] < 0.4).all(), shares


@pytest.mark.parametrize("shard,n,stream", [("strided", 2, False), ("random", 3, False), ("random:50", 2, True)])
def test_dynamic_balance_with_every_shard_and_streaming(syn, tmp_path, shard, n, stream):
    shuffle = "none" if stream else "global"
    run(["train", "--data", syn / "syn.h5", *COMMON, "--balance", "dynamic", "--shard", shard, "--shuffle", shuffle,
         *(["--stream"] if stream else []), "--metrics", tmp_path / "m.jsonl", "--checkpoint", tmp_path / "ck"],
        np_=n, env=clean_env(MPINN_SLOW="1:3"))
    _assert_same_model(tmp_path / "ck", syn / f"ref-{shuffle}")
    assert sum(r["row_moves"] for r in _records(tmp_path / "m.jsonl")) >= 1


def test_preempted_dynamic_random_run_resumes_on_the_same_and_another_rank_count(syn, tmp_path):
    ck = tmp_path / "ck"
    args = ["train", "--data", syn / "syn.h5", *COMMON, "--balance", "dynamic", "--shard", "random"]
    # step 75 = epoch 4, step 15 of 20: the shares have moved by then
    proc = run([*args, "--checkpoint", ck], np_=2, check=False, env=clean_env(MPINN_SLOW="1:3", MPINN_FAULT="1:75:term"))
    assert proc.returncode == 75, proc.stderr
    attrs = mpinn.train.checkpoint.read_checkpoint(ck)[0]
    saved = attrs["state"]["balance"]
    assert (attrs["state"]["epoch"], attrs["state"]["step_in_epoch"]) == (3, 15)
    assert saved["ranks"] == 2 and saved["shares"] is not None and saved["shares"][1] < 0.4
    shutil.copytree(ck, tmp_path / "ck3")
    run([*args, "--checkpoint", ck, "--resume"], np_=2, env=clean_env(MPINN_SLOW="1:3"))
    run([*args, "--checkpoint", tmp_path / "ck3", "--resume"], np_=3)
    _assert_same_model(ck, syn / "ref-global")
    _assert_same_model(tmp_path / "ck3", syn / "ref-global")


@pytest.mark.parametrize("args,env,message", [
    (["--balance", "fast"], {}, "--balance: choose from static, dynamic, got 'fast'"),
    (["--shard", "random:0"], {}, "--shard: random's chunk size must be an integer number of rows >= 1, got '0'"),
    (["--shard", "random:3000"], {}, "--shard random:3000: 4000 rows make 2 chunk(s) of 3000 rows, fewer than the 3 ranks; "
                                      "use a chunk of at most 1333 rows"),
    ([], {"MPINN_SLOW": "1:fast"}, "MPINN_SLOW: expected RANK:FACTOR (an integer rank, a factor >= 1), got '1:fast'"),
])
def test_bad_values_are_one_line_errors(syn, tmp_path, args, env, message):
    metrics = tmp_path / "m.jsonl"
    metrics.write_text("precious\n")
    proc = run(["train", "--data", syn / "syn.h5", *COMMON, *args, "--metrics", metrics], np_=3, check=False,
               timeout=60, env=clean_env(**env))
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stderr.strip().splitlines() == [f"mpinn: error: {message}"], proc.stderr
    assert metrics.read_text() == "precious\n"
