"""The numpy MLP: gradients against central finite differences, init and forward against sklearn."""

import numpy as np
import pytest

from mpinn.nn.activations import HIDDEN_ACTIVATIONS
from mpinn.nn.model import MLP, encode_targets

OUTPUTS = {"softmax": 3, "logistic": 1, "identity": 2, "exp": 1}


def _problem(activation, output, rows=7, seed=0):
    rng = np.random.RandomState(seed)
    model = MLP([4, 5, 3, OUTPUTS[output]], activation=activation, output=output)
    params = model.init_params(rng)
    params += rng.normal(scale=0.1, size=params.shape)  # break relu ties at exactly 0
    X = rng.normal(size=(rows, 4))
    if output == "identity":
        Y = rng.normal(size=(rows, 2))
    elif output == "exp":  # counts, zeros included (the Poisson loss's xlogy(0, .) = 0 branch)
        Y = rng.poisson(1.0, size=(rows, 1)).astype(float)
        Y[:2] = 0
    else:
        classes = np.arange(max(2, OUTPUTS[output]))
        Y = encode_targets(rng.randint(0, len(classes), rows), classes, output, np.float64)
    return model, params, X, Y


def _loss(model, params, X, Y, alpha, weights):
    grad = model.new_buffer()
    total = model.loss_grad_sum(params, X, Y, grad, sample_weight=weights)
    wsum = len(X) if weights is None else weights.sum()
    return total / wsum + 0.5 * alpha * model.penalty(params) / wsum


@pytest.mark.parametrize("output", sorted(OUTPUTS))
@pytest.mark.parametrize("activation", HIDDEN_ACTIVATIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_gradient_matches_central_differences(activation, output, weighted):
    model, params, X, Y = _problem(activation, output)
    alpha = 0.3
    weights = np.random.RandomState(1).uniform(0.5, 2.0, len(X)) if weighted else None
    grad = model.new_buffer()
    model.loss_grad_sum(params, X.copy(), Y, grad, sample_weight=weights)
    model.finish_gradient(params, grad, alpha, len(X) if weights is None else weights.sum())
    numeric = np.empty_like(params)
    h = 1e-6
    for i in range(len(params)):
        p = params.copy()
        p[i] += h
        up = _loss(model, p, X, Y, alpha, weights)
        p[i] -= 2 * h
        down = _loss(model, p, X, Y, alpha, weights)
        numeric[i] = (up - down) / (2 * h)
    scale = np.abs(numeric).max()
    assert scale > 1e-3
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-6 * scale)


@pytest.mark.parametrize("output", sorted(OUTPUTS))
@pytest.mark.parametrize("weighted", [False, True])
def test_loss_matches_sklearn(output, weighted):
    """The summed loss of the training step (reused work arrays) against scikit-learn's own
    loss functions (weighted mean), and output_loss_sum (fresh arrays) bit for bit with it."""
    base = pytest.importorskip("sklearn.neural_network._base")
    model, params, X, Y = _problem("tanh", output, rows=23)
    weights = np.random.RandomState(2).uniform(0.5, 2.0, len(X)) if weighted else None
    total = model.loss_grad_sum(params, X, Y, model.new_buffer(), sample_weight=weights)
    out = model.forward(params, X)
    ref = base.LOSS_FUNCTIONS[model.loss](Y, out, weights)  # (squared error: mean over outputs too)
    wsum = len(X) if weights is None else weights.sum()
    assert total / wsum == pytest.approx(ref, rel=1e-12)
    assert model.output_loss_sum(out, Y, weights) == total


def test_zero_rows_give_zero_gradient_and_loss():
    model, params, X, Y = _problem("tanh", "softmax")
    grad = model.new_buffer() + 7.0
    assert model.loss_grad_sum(params, X[:0], Y[:0], grad) == 0.0
    assert not grad.any()


def test_gradient_sums_over_row_chunks():
    """What ranks rely on: the sum over disjoint row sets equals the whole."""
    model, params, X, Y = _problem("relu", "softmax", rows=11)
    whole = model.new_buffer()
    loss_whole = model.loss_grad_sum(params, X, Y, whole)
    parts, loss_parts = model.new_buffer(), 0.0
    for rows in (slice(0, 4), slice(4, 4), slice(4, 11)):
        g = model.new_buffer()
        loss_parts += model.loss_grad_sum(params, X[rows], Y[rows], g)
        parts += g
    np.testing.assert_allclose(parts, whole, rtol=1e-13, atol=1e-15)
    assert loss_parts == pytest.approx(loss_whole, rel=1e-13)


def test_workspace_reused_across_batch_sizes():
    model, params, X, Y = _problem("logistic", "softmax", rows=9)
    ref = model.new_buffer()
    MLP([4, 5, 3, 3], "logistic", "softmax").loss_grad_sum(params, X[:5], Y[:5], ref)
    g = model.new_buffer()
    model.loss_grad_sum(params, X, Y, g)  # grow the workspace first
    model.loss_grad_sum(params, X[:5], Y[:5], g)
    np.testing.assert_array_equal(g, ref)


def test_parameters_are_one_buffer_with_views():
    model = MLP([3, 4, 2])
    flat = model.new_buffer()
    (W0, b0), (W1, b1) = model.views(flat)
    assert [W0.shape, b0.shape, W1.shape, b1.shape] == [(3, 4), (4,), (4, 2), (2,)]
    assert model.n_params == 3 * 4 + 4 + 4 * 2 + 2
    for v in (W0, b0, W1, b1):
        assert np.shares_memory(v, flat)
    W1[...] = 5
    assert (flat[model.offsets[1][0]:model.offsets[1][1]] == 5).all()


def test_float32_end_to_end():
    model, params, X, Y = _problem("relu", "softmax")
    m32 = MLP(model.layer_sizes, "relu", "softmax", dtype=np.float32)
    g32 = m32.new_buffer()
    m32.loss_grad_sum(params.astype(np.float32), X.astype(np.float32), Y.astype(np.float32), g32)
    g64 = model.new_buffer()
    model.loss_grad_sum(params, X, Y, g64)
    assert g32.dtype == np.float32
    np.testing.assert_allclose(g32, g64, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("activation", HIDDEN_ACTIVATIONS)
def test_init_and_forward_match_sklearn(activation):
    sk = pytest.importorskip("sklearn.neural_network")
    rng = np.random.RandomState(3)
    X = rng.normal(size=(30, 4))
    y = rng.randint(0, 3, 30)
    clf = sk.MLPClassifier(hidden_layer_sizes=(6, 5), activation=activation, max_iter=1,
                           random_state=11, solver="sgd", learning_rate_init=1e-12)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(X, y)
    # The sklearn weights after one step of lr 1e-12 equal its init to ~1e-12; draw ours.
    model = MLP([4, 6, 5, 3], activation=activation, output="softmax")
    params = model.init_params(np.random.RandomState(11))
    fresh = sk.MLPClassifier(hidden_layer_sizes=(6, 5), activation=activation, random_state=11)
    fresh._random_state = np.random.RandomState(11)
    fresh.activation = activation
    for (W, b), fan_in, fan_out in zip(model.views(params), [4, 6, 5], [6, 5, 3]):
        cW, cb = fresh._init_coef(fan_in, fan_out, np.float64)
        np.testing.assert_array_equal(W, cW)  # bit for bit
        np.testing.assert_array_equal(b, cb)
    for (W, b), cW, cb in zip(model.views(params), clf.coefs_, clf.intercepts_):
        W[...] = cW
        b[...] = cb
    np.testing.assert_allclose(model.forward(params, X), clf.predict_proba(X), rtol=1e-12, atol=1e-15)
