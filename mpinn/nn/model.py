"""The multilayer perceptron in plain numpy: layout, init, forward, backward, losses.

No MPI here. Parameters live in ONE contiguous buffer laid out layer by layer as
[W0 (fan_in x fan_out, C order), b0, W1, b1, ...]; per-layer W and b are views into it, and the
gradient buffer has the same layout, so a whole gradient is reduced with one Allreduce and a
layer's (W, b) is one contiguous slice.

The backward pass returns SUMS over the rows it is given (loss and gradient, without the L2
term): the caller adds the sums from all ranks, then ``finish_gradient`` adds alpha*W and divides
by the global batch weight. The formulas and their order follow scikit-learn's MLP so the same
seed gives the same numbers.
"""

from __future__ import annotations

import numpy as np

from mpinn.nn.activations import ACTIVATE, DERIVATIVE, HIDDEN_ACTIVATIONS, LOSS_FOR_OUTPUT, OUTPUT_ACTIVATIONS


class MLP:
    """Architecture plus the flat-buffer layout; holds no parameters itself.

    ``layer_sizes`` is [n_features, hidden..., n_outputs]. The L2 penalty and normalisation by
    the batch weight are applied by ``finish_gradient`` after the cross-rank sum.
    """

    def __init__(self, layer_sizes, activation="relu", output="softmax", dtype=np.float64):
        self.layer_sizes = [int(s) for s in layer_sizes]
        if len(self.layer_sizes) < 2 or min(self.layer_sizes) < 1:
            raise ValueError(f"layer sizes must be >= 1, got {self.layer_sizes}")
        if activation not in HIDDEN_ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose from {HIDDEN_ACTIVATIONS}")
        if output not in OUTPUT_ACTIVATIONS:
            raise ValueError(f"unknown output activation {output!r}; choose from {OUTPUT_ACTIVATIONS}")
        self.activation = activation
        self.output = output
        self.loss = LOSS_FOR_OUTPUT[output]
        self.dtype = np.dtype(dtype)
        self.n_layers = len(self.layer_sizes) - 1  # weight layers
        # (w_start, w_stop, b_stop) per layer in the flat buffer.
        self.offsets = []
        pos = 0
        for fan_in, fan_out in zip(self.layer_sizes[:-1], self.layer_sizes[1:]):
            w_stop = pos + fan_in * fan_out
            self.offsets.append((pos, w_stop, w_stop + fan_out))
            pos = w_stop + fan_out
        self.n_params = pos
        self._ws = None
        self._views = []  # (flat buffer, its per-layer views), most recent first
        self._eps = np.finfo(self.dtype).eps
        self._alpha_scratch = None

    def views(self, flat):
        """Per-layer (W, b) views into a flat buffer of this layout.

        The training buffers (parameters, gradient) are the same arrays every step, so their
        views are kept (for the last four buffers, found by identity) rather than rebuilt: the
        step makes no new array objects.
        """
        for cached, out in self._views:
            if cached is flat:
                return out
        out = self._make_views(flat)
        self._views = [(flat, out)] + self._views[:3]
        return out

    def __getstate__(self):
        # Cached views would be copied as separate arrays, no longer views of the copied buffer;
        # the workspace is a cache too.
        state = dict(self.__dict__)
        state["_views"], state["_ws"] = [], None
        return state

    def _make_views(self, flat):
        out = []
        for (s, w, e), fan_in, fan_out in zip(self.offsets, self.layer_sizes[:-1], self.layer_sizes[1:]):
            out.append((flat[s:w].reshape(fan_in, fan_out), flat[w:e]))
        return out

    def layer_slice(self, layer):
        s, _, e = self.offsets[layer]
        return slice(s, e)

    def new_buffer(self):
        return np.zeros(self.n_params, dtype=self.dtype)

    def init_params(self, random_state):
        """Glorot-uniform init drawn as scikit-learn does: W then b per layer, in float64.

        The bound is sqrt(f / (fan_in + fan_out)) with f = 2 for logistic hidden units, else 6.
        """
        flat = self.new_buffer()
        factor = 2.0 if self.activation == "logistic" else 6.0
        for (W, b), fan_in, fan_out in zip(self.views(flat), self.layer_sizes[:-1], self.layer_sizes[1:]):
            bound = np.sqrt(factor / (fan_in + fan_out))
            W[...] = random_state.uniform(-bound, bound, (fan_in, fan_out))
            b[...] = random_state.uniform(-bound, bound, fan_out)
        return flat

    # ---- forward -----------------------------------------------------------------------

    def forward(self, params, X, chunk_rows=8192):
        """Output activations for any number of rows (allocates; for prediction)."""
        return forward_layers(self.views(params), np.asarray(X, dtype=self.dtype), self.activation, self.output,
                              chunk_rows)

    # ---- training step -------------------------------------------------------------------

    def _workspace(self, rows):
        """Activation, delta and scratch arrays for up to ``rows`` rows, reused across steps."""
        if self._ws is None or self._ws.rows < rows:
            self._ws = _Workspace(self.layer_sizes, rows, self.dtype)
        return self._ws

    def input_buffer(self, rows):
        """The workspace array a batch of ``rows`` input rows should be gathered into."""
        return self._workspace(rows)._acts[0][:rows]

    def loss_grad_sum(self, params, X, Y, grad, sample_weight=None, on_grad=None):
        """Sum over the given rows of the loss and of its gradient (no L2 term).

        ``X`` is (m, n_features) — ideally ``input_buffer(m)`` so no copy is made — and ``Y``
        is (m, n_outputs) in the training dtype (one-hot for softmax). Writes the summed
        gradient into ``grad`` (a flat buffer of this layout) and returns the summed loss.
        With m == 0 the gradient is zero, so a rank without rows still joins the reduction.
        ``on_grad(layer, loss)``, if given, is called as soon as a layer's gradient slice is
        final, last layer first (to start its reduction while backward goes on).
        """
        m = X.shape[0]
        layers = self.views(params)
        grads = self.views(grad)
        if m == 0:
            grad[...] = 0
            if on_grad is not None:
                for i in range(self.n_layers - 1, -1, -1):
                    on_grad(i, 0.0)
            return 0.0
        ws = self._workspace(m).at(m)
        acts, deltas, spread, transposed = ws.acts, ws.deltas, ws.spread, ws.transposed
        last = self.n_layers - 1
        for i, (W, b) in enumerate(layers):
            out, work = acts[i + 1], spread[i + 1]
            np.matmul(X if i == 0 else acts[i], W, out=out)
            np.copyto(work, b)  # out += b, without the broadcast's buffer (see _identity)
            out += work
            ACTIVATE[self.output if i == last else self.activation](out, work, ws.col)

        loss = self._loss_sum(acts[-1], Y, sample_weight, ws.loss)
        np.subtract(acts[-1], Y, out=deltas[last])
        if self.loss == "squared_error" and Y.shape[1] > 1:
            # The loss averages over outputs, so its gradient does too (sklearn omits this).
            deltas[last] /= Y.shape[1]
        if sample_weight is not None:
            np.copyto(spread[-1], sample_weight.reshape(m, 1))
            deltas[last] *= spread[-1]
        derivative = DERIVATIVE[self.activation]
        for i in range(last, -1, -1):
            gW, gb = grads[i]
            np.matmul(X.T if i == 0 else transposed[i], deltas[i], out=gW)
            np.add.reduce(deltas[i], axis=0, out=gb)
            if on_grad is not None:
                on_grad(i, loss)
            if i > 0:
                np.matmul(deltas[i], ws.weights_t(layers)[i], out=deltas[i - 1])
                derivative(acts[i], deltas[i - 1], spread[i])
        return loss

    def _loss_sum(self, out, Y, sample_weight, buf):
        """Per-row losses summed (weighted); formulas as scikit-learn's, clipped at eps. ``buf``
        holds the work arrays (a _LossBuffers for these m rows)."""
        m, k = out.shape
        work, rowloss = buf.work, buf.rowloss
        if self.loss == "squared_error":
            np.subtract(out, Y, out=work)
            np.multiply(work, work, out=work)
            np.add.reduce(work, axis=1, out=rowloss)
            rowloss *= 0.5 / k
        elif self.loss == "poisson":
            # Half Poisson deviance summed over outputs: xlogy(y, y/p) - y + p, as sklearn.
            mask = buf.mask
            np.greater(Y, 0, out=mask)
            np.divide(Y, out, out=work, where=mask)
            np.log(work, out=work, where=mask)
            np.multiply(work, Y, out=work, where=mask)
            np.logical_not(mask, out=mask)
            np.copyto(work, 0, where=mask)  # xlogy(0, .) = 0
            work -= Y
            work += out
            np.add.reduce(work, axis=1, out=rowloss)
        else:
            eps = self._eps
            np.clip(out, eps, 1 - eps, out=work)
            np.log(work, out=work)
            if self.loss == "binary_log_loss":
                # y*log(p) + (1-y)*log(1-p), with the clipped p.
                spare, pos = buf.spare, buf.rowpos
                np.multiply(Y, work, out=work)
                np.add.reduce(work, axis=1, out=pos)
                np.clip(out, eps, 1 - eps, out=spare)
                np.subtract(1, spare, out=spare)
                np.log(spare, out=spare)
                np.subtract(1, Y, out=work)
                work *= spare
                np.add.reduce(work, axis=1, out=rowloss)
                rowloss += pos
            else:
                np.multiply(Y, work, out=work)
                np.add.reduce(work, axis=1, out=rowloss)
            np.negative(rowloss, out=rowloss)
        if sample_weight is not None:
            return float(np.dot(rowloss, sample_weight))
        return float(rowloss.sum())

    def output_loss_sum(self, out, Y, sample_weight=None):
        """Summed (weighted) loss of output activations ``out`` (from forward) against ``Y``."""
        m = len(out)
        if m == 0:
            return 0.0
        return self._loss_sum(out, np.asarray(Y, dtype=self.dtype), sample_weight,
                              _LossBuffers(m, out.shape[1], self.dtype))

    def penalty(self, params, ranges=None):
        """Sum of squared weights (not biases), as scikit-learn accumulates it: over every weight
        matrix, or over ``ranges`` of the flat buffer (a rank's slice, see weight_ranges)."""
        total = 0.0
        for a, b in weight_ranges(self, 0, self.n_params) if ranges is None else ranges:
            w = params[a:b]
            total += np.dot(w, w)
        return float(total)

    def finish_gradient(self, params, grad, alpha, weight_sum):
        """After the cross-rank sum: add alpha*W to each weight gradient, divide all by the weight.

        alpha*W goes through a small reused scratch, block by block (the same numbers as
        ``gW += alpha * W``, without a temporary the size of W every step).
        """
        if alpha:
            block = 1 << 15
            if self._alpha_scratch is None:
                widest = max(w - s for s, w, _ in self.offsets)
                self._alpha_scratch = np.empty(min(widest, block), dtype=self.dtype)
            tmp = self._alpha_scratch
            for s, w, _ in self.offsets:
                for lo in range(s, w, block):
                    hi = min(lo + block, w)
                    t = tmp[: hi - lo]
                    np.multiply(params[lo:hi], alpha, out=t)
                    grad[lo:hi] += t
        grad /= weight_sum


class _LossBuffers:
    """Work arrays of the loss for m rows and k outputs (views of larger ones in training)."""

    def __init__(self, m, k, dtype, parent=None):
        if parent is None:
            self.work, self.spare = np.empty((m, k), dtype), np.empty((m, k), dtype)
            self.rowloss, self.rowpos = np.empty(m, dtype), np.empty(m, dtype)
            self.mask = np.empty((m, k), dtype=bool)
        else:
            for name in ("work", "spare", "rowloss", "rowpos", "mask"):
                setattr(self, name, getattr(parent, name)[:m])


class _Workspace:
    """A training step's arrays for up to ``rows`` rows, and their views for m rows, rebuilt
    only when m changes (a step on as many rows as the last makes no new array object)."""

    def __init__(self, sizes, rows, dtype):
        self.rows, self.sizes = rows, sizes
        self._acts = [np.empty((rows, n), dtype=dtype) for n in sizes]
        self._deltas = [np.empty((rows, n), dtype=dtype) for n in sizes[1:]]
        # One layer's broadcast operand (bias, softmax row values, sample weights) spread over
        # its rows, and the scratch of an activation's derivative.
        self._scratch = np.empty(rows * max(sizes), dtype=dtype)
        self._col = np.empty((rows, 1), dtype=dtype)
        self._loss = _LossBuffers(rows, sizes[-1], dtype)
        self.m = None
        self._wt_of, self._wt = None, None

    @property
    def nbytes(self):
        """Bytes of the arrays this workspace allocated (its views over them excluded)."""
        own = [*self._acts, *self._deltas, self._scratch, self._col]
        own += [v for v in vars(self._loss).values() if isinstance(v, np.ndarray)]
        return sum(a.nbytes for a in own)

    def at(self, m):
        if m != self.m:
            self.acts = [a[:m] for a in self._acts]
            self.transposed = [a.T for a in self.acts]
            self.deltas = [d[:m] for d in self._deltas]
            self.spread = [self._scratch[: m * n].reshape(m, n) for n in self.sizes]
            self.col = self._col[:m]
            self.loss = _LossBuffers(m, None, None, parent=self._loss)
            self.m = m
        return self

    def weights_t(self, layers):
        """The transposed weight views of ``layers`` (kept while the layers list is the same)."""
        if self._wt_of is not layers:
            self._wt_of, self._wt = layers, [W.T for W, _ in layers]
        return self._wt


def weight_ranges(model, lo, hi):
    """The weight-matrix positions (the L2 term's; biases excluded) inside [lo, hi), absolute."""
    out = []
    for s, w, _ in model.offsets:
        a, b = max(s, lo), min(w, hi)
        if a < b:
            out.append((a, b))
    return out


def forward_layers(layers, X, activation, output, chunk_rows=None):
    """Output activations of the layers [(W, b), ...] for the rows of X (allocates).

    The one forward pass for prediction (training has its own, into reused workspaces, in
    loss_grad_sum). ``chunk_rows`` bounds the activations held at once; None: all rows at once.
    """
    last = len(layers) - 1
    if chunk_rows is None or X.shape[0] <= chunk_rows:
        chunks, out = [X], None
    else:
        chunks = [X[s : s + chunk_rows] for s in range(0, X.shape[0], chunk_rows)]
        out = np.empty((X.shape[0], layers[-1][0].shape[1]), dtype=layers[-1][0].dtype)
    pos = 0
    for a in chunks:
        for i, (W, b) in enumerate(layers):
            a = a @ W
            a += b
            kind = output if i == last else activation
            work = np.empty_like(a) if kind == "softmax" else None
            ACTIVATE[kind](a, work, np.empty((a.shape[0], 1), dtype=a.dtype))
        if out is None:
            return a
        out[pos : pos + len(a)] = a
        pos += len(a)
    return out


def encode_targets(y, classes, output, dtype):
    """Targets as the network's output space: one-hot (softmax), 0/1 column (logistic), or values."""
    if output == "identity":
        y = np.asarray(y, dtype=dtype)
        return y if y.ndim == 2 else y.reshape(-1, 1)  # (not reshape(len, -1): a rank may hold no rows)
    idx = np.searchsorted(classes, y)
    if output == "logistic":
        return idx.astype(dtype).reshape(-1, 1)
    onehot = np.zeros((len(y), len(classes)), dtype=dtype)
    onehot[np.arange(len(y)), idx] = 1
    return onehot
