"""Export a trained model: NPZ (numpy only), ONNX (onnx extra) or scikit-learn (sklearn extra).

Works on anything with sklearn-layout ``coefs_``/``intercepts_``, ``activation`` and
``out_activation_`` (what ``mpinn.load`` returns).
"""

from __future__ import annotations

import os

import numpy as np

from .errors import InputError

FORMATS = ("npz", "onnx", "sklearn")
_ONNX_ACT = {"relu": "Relu", "tanh": "Tanh", "logistic": "Sigmoid", "identity": None}


def _task(model):
    return "classify" if getattr(model, "classes_", None) is not None else "regress"


def to_npz(model, out):
    """W0, b0, W1, b1, ... plus the activations and classes, readable with np.load (no pickle)."""
    arrays = {}
    for i, (W, b) in enumerate(zip(model.coefs_, model.intercepts_)):
        arrays[f"W{i}"], arrays[f"b{i}"] = W, b
    arrays["activation"] = np.array(model.activation)
    arrays["out_activation"] = np.array(model.out_activation_)
    if _task(model) == "classify":
        arrays["classes"] = np.asarray(model.classes_)
    np.savez(out, **arrays)


def to_onnx(model, out):
    """An ONNX graph input -> 'output' (class probabilities, or predicted values)."""
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        raise InputError("export --format onnx needs onnx: pip install 'mpinn[onnx]'") from None
    dtype = model.coefs_[0].dtype
    elem = TensorProto.FLOAT if dtype == np.float32 else TensorProto.DOUBLE
    nodes, inits, x = [], [], "input"
    last = len(model.coefs_) - 1
    for i, (W, b) in enumerate(zip(model.coefs_, model.intercepts_)):
        inits += [numpy_helper.from_array(W, f"W{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes += [helper.make_node("MatMul", [x, f"W{i}"], [f"z{i}"]),
                  helper.make_node("Add", [f"z{i}", f"b{i}"], [f"a{i}"])]
        x = f"a{i}"
        kind = model.activation if i < last else None
        if kind and _ONNX_ACT[kind]:
            nodes.append(helper.make_node(_ONNX_ACT[kind], [x], [f"h{i}"]))
            x = f"h{i}"
    out_kind = model.out_activation_
    if out_kind == "softmax":
        nodes.append(helper.make_node("Softmax", [x], ["output"], axis=1))
    elif out_kind == "logistic":
        # Binary: one sigmoid column p becomes the two probabilities [1 - p, p].
        inits.append(numpy_helper.from_array(np.ones(1, dtype=dtype), "one"))
        nodes += [helper.make_node("Sigmoid", [x], ["p"]), helper.make_node("Sub", ["one", "p"], ["q"]),
                  helper.make_node("Concat", ["q", "p"], ["output"], axis=1)]
    else:
        nodes.append(helper.make_node("Identity", [x], ["output"]))
    n_out = 2 if out_kind == "logistic" else model.coefs_[-1].shape[1]
    graph = helper.make_graph(
        nodes, "mpinn_mlp", [helper.make_tensor_value_info("input", elem, [None, model.coefs_[0].shape[0]])],
        [helper.make_tensor_value_info("output", elem, [None, n_out])], initializer=inits)
    onnx_model = helper.make_model(graph, producer_name="mpinn", opset_imports=[helper.make_opsetid("", 13)])
    if _task(model) == "classify":
        helper.set_model_props(onnx_model, {"classes": ",".join(map(str, model.classes_))})
    onnx.checker.check_model(onnx_model)
    onnx.save(onnx_model, out)


def to_sklearn_file(model, out):
    """A fitted scikit-learn MLP with the same weights, saved with joblib.

    joblib files are pickles: load them only from sources you trust. mpinn itself never loads
    one; its own checkpoints are HDF5.
    """
    if not hasattr(model, "to_sklearn"):
        raise InputError("export --format sklearn: this model cannot be converted")
    try:
        import joblib
    except ImportError:
        raise InputError("export --format sklearn needs scikit-learn: pip install 'mpinn[sklearn]'") from None
    joblib.dump(model.to_sklearn(), out)


def export(model, out, fmt):
    if fmt not in FORMATS:
        raise InputError(f"export: unknown --format {fmt!r}; choose from {', '.join(FORMATS)}")
    directory = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(directory):
        raise InputError(f"export: output directory does not exist: {directory}")
    {"npz": to_npz, "onnx": to_onnx, "sklearn": to_sklearn_file}[fmt](model, out)
