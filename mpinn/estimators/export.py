"""Export a trained model: NPZ (numpy only), ONNX (onnx extra) or scikit-learn (sklearn extra).

Works on anything with sklearn-layout ``coefs_``/``intercepts_``, ``activation`` and
``out_activation_`` (what ``mpinn.load`` returns). A model trained with feature scaling
(``scaler_``) is exported with it: the npz holds its statistics, the ONNX graph starts with it,
the scikit-learn export is a Pipeline. Classifiers export their original labels (classes_).
"""

from __future__ import annotations

import os

import numpy as np

from mpinn.errors import InputError

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
    names = model._encoded_feature_names() if hasattr(model, "_encoded_feature_names") else None
    if names:  # the input features in order (categorical columns as column=category)
        arrays["feature_names"] = np.asarray(names)
    scaler = getattr(model, "scaler_", None)
    if scaler is not None:  # x -> (x - scaler_mean) / scaler_scale, or x * scaler_scale + scaler_min
        from mpinn.preprocessing.training import scaler_kind

        arrays["scaler"] = np.array(scaler_kind(scaler))
        if scaler_kind(scaler) == "standard":
            arrays["scaler_mean"], arrays["scaler_scale"] = scaler.mean_, scaler.scale_
        else:
            arrays["scaler_scale"], arrays["scaler_min"] = scaler.scale_, scaler.min_
    np.savez(out, **arrays)


def _scaling_nodes(scaler, dtype, x):
    """(nodes, initializers, output name) that scale input ``x`` as the scaler's transform does."""
    from onnx import helper, numpy_helper

    if scaler is None:
        return [], [], x
    from mpinn.preprocessing.training import scaler_kind

    if scaler_kind(scaler) == "standard":  # (x - mean) / scale
        consts, ops = (scaler.mean_, scaler.scale_), ("Sub", "Div")
    else:  # x * scale + min
        consts, ops = (scaler.scale_, scaler.min_), ("Mul", "Add")
    inits = [numpy_helper.from_array(np.asarray(consts[0], dtype=dtype), "scaler_a"),
             numpy_helper.from_array(np.asarray(consts[1], dtype=dtype), "scaler_b")]
    nodes = [helper.make_node(ops[0], [x, "scaler_a"], ["scaled_a"]),
             helper.make_node(ops[1], ["scaled_a", "scaler_b"], ["scaled"])]
    return nodes, inits, "scaled"


def _label_nodes(classes):
    """(nodes, initializers, output value info): 'label', the class of the largest probability
    (the first on ties, as numpy's argmax), as int64 or string labels."""
    from onnx import TensorProto, helper, numpy_helper

    classes = np.asarray(classes)
    if classes.dtype.kind in "iub":
        init = numpy_helper.from_array(classes.astype(np.int64), "class_labels")
        elem = TensorProto.INT64
    else:
        init = helper.make_tensor("class_labels", TensorProto.STRING, [len(classes)],
                                  [str(c).encode() for c in classes])
        elem = TensorProto.STRING
    nodes = [helper.make_node("ArgMax", ["output"], ["label_index"], axis=1, keepdims=0),
             helper.make_node("Gather", ["class_labels", "label_index"], ["label"], axis=0)]
    return nodes, [init], helper.make_tensor_value_info("label", elem, [None])


def to_onnx(model, out):
    """An ONNX graph 'input' -> 'output' (class probabilities, or predicted values) and, for
    classifiers, 'label' (the predicted class); feature scaling, if any, is its first step."""
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        raise InputError("export --format onnx needs onnx: pip install 'mpinn[onnx]'") from None
    dtype = model.coefs_[0].dtype
    elem = TensorProto.FLOAT if dtype == np.float32 else TensorProto.DOUBLE
    nodes, inits, x = _scaling_nodes(getattr(model, "scaler_", None), dtype, "input")
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
    outputs = [helper.make_tensor_value_info("output", elem, [None, n_out])]
    if _task(model) == "classify" and getattr(getattr(model, "_coding", None), "y_type", "") != "multilabel-indicator":
        label_nodes, label_inits, label_info = _label_nodes(model.classes_)
        nodes, inits, outputs = nodes + label_nodes, inits + label_inits, outputs + [label_info]
    graph = helper.make_graph(
        nodes, "mpinn_mlp", [helper.make_tensor_value_info("input", elem, [None, model.coefs_[0].shape[0]])],
        outputs, initializer=inits)
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
    if os.path.isdir(out) or not os.access(directory, os.W_OK):
        raise InputError(f"export: cannot write {out} ({'a directory' if os.path.isdir(out) else 'directory not writable'})")
    try:
        {"npz": to_npz, "onnx": to_onnx, "sklearn": to_sklearn_file}[fmt](model, out)
    except OSError as exc:  # e.g. a read-only file system, or a full disk
        raise InputError(f"export: cannot write {out} ({exc.strerror or exc})") from None
