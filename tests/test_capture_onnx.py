"""Capture from ONNX models through onnxruntime (optional extras: skipped without them).

The model is built with onnx.helper; the oracle for the captured values is numpy evaluating the
same graph in float64 (ORT computes in float32, so values agree to float32 rounding), and the
structure (kinds, weights, bias folding, graph links) is checked against the graph as built.
"""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="onnx is an optional extra (pip install onnx)")
pytest.importorskip("onnxruntime", reason="onnxruntime is an optional extra")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from simulator.capture import capture_onnx  # noqa: E402
from simulator.configs import Config  # noqa: E402
from simulator.replay import replay  # noqa: E402
from simulator.traces import TraceError  # noqa: E402


def _model(rng):
    w1 = rng.standard_normal((6, 4)).astype(np.float32)      # Gemm weight (N, K), transB=1
    b1 = rng.standard_normal(6).astype(np.float32)
    w2 = rng.standard_normal((6, 3)).astype(np.float32)      # MatMul weight (K, N)
    b2 = rng.standard_normal(3).astype(np.float32)
    wc = rng.standard_normal((2, 1, 3, 3)).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in
             ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"), (wc, "wc"))]
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1", transB=1),
        helper.make_node("Relu", ["h"], ["r"], name="relu1"),
        helper.make_node("MatMul", ["r", "w2"], ["m"], name="fc2"),
        helper.make_node("Add", ["m", "b2"], ["logits"], name="fc2_bias"),
        helper.make_node("Softmax", ["logits"], ["p"], name="sm", axis=-1),
        helper.make_node("Conv", ["img", "wc"], ["c"], name="conv", pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, 4]),
         helper.make_tensor_value_info("img", TensorProto.FLOAT, [2, 1, 5, 5])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, [5, 3]),
         helper.make_tensor_value_info("c", TensorProto.FLOAT, [2, 2, 5, 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return model, (w1, b1, w2, b2, wc)


def _conv_ref(x, w):
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((x.shape[0], w.shape[0], 5, 5))
    for o in range(w.shape[0]):
        for i in range(5):
            for j in range(5):
                out[:, o, i, j] = np.sum(xp[:, :, i:i + 3, j:j + 3] * w[o], axis=(1, 2, 3))
    return out


def test_onnx_capture_structure_and_values():
    rng = np.random.default_rng(0)
    model, (w1, b1, w2, b2, wc) = _model(rng)
    x = rng.standard_normal((5, 4)).astype(np.float32)
    img = rng.standard_normal((2, 1, 5, 5)).astype(np.float32)
    trace = capture_onnx(model, {"x": x, "img": img}, labels=np.zeros(5, dtype=np.int64))
    assert [(o.name, o.kind) for o in trace.ops] == [
        ("fc1", "linear"), ("relu1", "relu"), ("fc2", "linear"), ("sm", "softmax"),
        ("conv", "conv2d")]
    fc1, fc2 = trace.op("fc1").tensors, trace.op("fc2").tensors
    assert np.array_equal(fc1["weight"], w1) and np.array_equal(fc1["bias"], b1)
    assert np.array_equal(fc2["weight"], w2.T) and np.array_equal(fc2["bias"], b2)
    h = x.astype(np.float64) @ w1.T.astype(np.float64) + b1
    np.testing.assert_allclose(fc1["output"], h, rtol=1e-5, atol=1e-6)
    logits = np.maximum(h, 0) @ w2.astype(np.float64) + b2
    np.testing.assert_allclose(fc2["output"], logits, rtol=1e-5, atol=1e-5)   # Add folded in
    np.testing.assert_allclose(trace.op("conv").tensors["output"], _conv_ref(img, wc),
                               rtol=1e-5, atol=1e-5)
    assert trace.op("conv").attrs == {"stride": [1, 1], "padding": [1, 1], "dilation": [1, 1],
                                      "groups": 1}
    links = {o.name: o.inputs_from for o in trace.ops}
    assert links == {"fc1": [], "relu1": ["fc1"], "fc2": ["relu1"], "sm": ["fc2"], "conv": []}
    df = replay(trace, [Config()], "propagated")
    assert (df.query("role == 'output'").sqnr_db > 120).all()


def test_asymmetric_pads_are_refused():
    rng = np.random.default_rng(1)
    wc = numpy_helper.from_array(rng.standard_normal((1, 1, 3, 3)).astype(np.float32), "wc")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["img", "wc"], ["c"], name="conv", pads=[1, 0, 0, 1])], "g",
        [helper.make_tensor_value_info("img", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, None)], [wc])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(TraceError, match="asymmetric pads"):
        capture_onnx(model, {"img": np.ones((1, 1, 4, 4), np.float32)})
