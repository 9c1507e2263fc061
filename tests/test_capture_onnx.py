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


def _gemm_model(c: np.ndarray):
    rng = np.random.default_rng(3)
    w = numpy_helper.from_array(rng.standard_normal((3, 4)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "c"], ["y"], name="fc", transB=1)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [w, numpy_helper.from_array(c.astype(np.float32), "c")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_gemm_bias_of_one_row_is_kept_and_a_full_matrix_is_not_a_linear_bias():
    x = np.ones((2, 4), np.float32)
    row = np.arange(3.0).reshape(1, 3)
    trace = capture_onnx(_gemm_model(row), {"x": x})
    assert np.array_equal(trace.op("fc").tensors["bias"], row.reshape(-1).astype(np.float32))
    assert (replay(trace, [Config()], "per-op").query("role == 'output'").sqnr_db > 120).all()
    full = np.arange(6.0).reshape(2, 3)                  # one bias per output element
    assert [o.name for o in capture_onnx(_gemm_model(full), {"x": x}).ops] == []


def test_matmul_by_a_leading_initializer_is_not_linked_as_its_first_operand():
    rng = np.random.default_rng(4)
    m = numpy_helper.from_array(rng.standard_normal((2, 3)).astype(np.float32), "m")
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"], name="relu"),
         helper.make_node("MatMul", ["m", "r"], ["y"], name="mm")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])], [m])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    trace = capture_onnx(model, {"x": rng.standard_normal((3, 5)).astype(np.float32)})
    assert trace.op("mm").kind == "matmul" and trace.op("mm").inputs_from == []
