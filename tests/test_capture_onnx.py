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


def _conv_model(inputs, inits, **attrs):
    graph = helper.make_graph(
        [helper.make_node("Conv", inputs, ["c"], name="conv", **attrs),
         helper.make_node("Relu", ["c"], ["r"], name="relu")], "g",
        [helper.make_tensor_value_info("img", TensorProto.FLOAT, [1, 1, 5, 5])],
        [helper.make_tensor_value_info("r", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_conv_that_cannot_be_a_conv2d_op_is_left_out_with_a_warning():
    """Asymmetric pads (explicit, or SAME with an even kernel) are not modelled: the Conv is
    run but not recorded (it stopped the whole capture), like other unrecorded nodes."""
    rng = np.random.default_rng(1)
    img = {"img": np.ones((1, 1, 5, 5), np.float32)}
    for w, attrs in (((1, 1, 3, 3), {"pads": [1, 0, 0, 1]}),
                     ((1, 1, 2, 2), {"auto_pad": "SAME_UPPER"})):
        wc = numpy_helper.from_array(rng.standard_normal(w).astype(np.float32), "wc")
        with pytest.warns(UserWarning, match="asymmetric pads"):
            trace = capture_onnx(_conv_model(["img", "wc"], [wc], **attrs), img)
        assert [(o.name, o.inputs_from) for o in trace.ops] == [("relu", [])]


@pytest.mark.parametrize("attrs, pad", [({"auto_pad": "VALID"}, 0),
                                        ({"auto_pad": "SAME_UPPER"}, 1),
                                        ({"auto_pad": "SAME_LOWER", "strides": [2, 2]}, 1)])
def test_conv_auto_pad_and_a_bias_from_a_constant(attrs, pad):
    """auto_pad VALID/SAME (even padding) become explicit pads, and a bias that a Constant node
    computes is kept (it was dropped while the captured output held it): replayed in exact
    fp32 the output matches ORT's to float32 rounding."""
    rng = np.random.default_rng(2)
    w = rng.standard_normal((2, 1, 3, 3)).astype(np.float32)
    bias = np.array([0.5, -2.0], np.float32)
    const = helper.make_node("Constant", [], ["bc"], value=numpy_helper.from_array(bias, "bv"))
    model = _conv_model(["img", "wc", "bc"], [numpy_helper.from_array(w, "wc")], **attrs)
    model.graph.node.insert(0, const)
    x = rng.standard_normal((1, 1, 5, 5)).astype(np.float32)
    trace = capture_onnx(model, {"img": x})
    conv = trace.op("conv")
    assert conv.attrs["padding"] == [pad, pad]
    assert np.array_equal(conv.tensors["bias"], bias)
    df = replay(trace, [Config("fp32", "fp32", {"accumulator": "exact"})], "per-op")
    assert (df.query("role == 'output' and op == 'conv'").sqnr_db > 120).all()


def test_ops_after_a_contrib_op_are_recorded():
    """Shape inference cannot type a contrib op's output (com.microsoft FastGelu here); the
    MatMul after it was silently missing from the capture."""
    rng = np.random.default_rng(5)
    w1, w2 = rng.standard_normal((4, 6)), rng.standard_normal((6, 3))
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
             helper.make_node("FastGelu", ["h"], ["g"], domain="com.microsoft", name="fg"),
             helper.make_node("MatMul", ["g", "w2"], ["y"], name="fc2")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [numpy_helper.from_array(w.astype(np.float32), n) for w, n in ((w1, "w1"), (w2, "w2"))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    trace = capture_onnx(model, {"x": rng.standard_normal((2, 4)).astype(np.float32)})
    assert [(o.name, o.inputs_from) for o in trace.ops] == [("fc1", []), ("fc2", [])]
    fc2 = trace.op("fc2").tensors
    np.testing.assert_allclose(fc2["input"] @ fc2["weight"].T.astype(float), fc2["output"],
                               rtol=1e-5)


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
    with pytest.warns(UserWarning, match="not one bias per output"):
        assert [o.name for o in capture_onnx(_gemm_model(full), {"x": x}).ops] == []
    one = capture_onnx(_gemm_model(np.array(0.25)), {"x": x}).op("fc")   # C broadcast to N
    assert one.tensors["bias"].tolist() == [0.25] * 3
    np.testing.assert_allclose(one.tensors["output"], x @ one.tensors["weight"].T + 0.25,
                               rtol=1e-6)


def test_gemm_with_one_output_and_a_scalar_bias():
    """N = 1 and a 0-d C (it crashed reading C's last axis)."""
    w = numpy_helper.from_array(np.array([[1.0, 2.0, 3.0, 4.0]], np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "c"], ["y"], name="fc", transB=1)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 1])],
        [w, numpy_helper.from_array(np.array(0.5, np.float32), "c")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    fc = capture_onnx(model, {"x": x}).op("fc").tensors
    assert fc["bias"].tolist() == [0.5]
    assert fc["output"].ravel().tolist() == [20.5, 60.5]       # 0+2+6+12, 4+10+18+28, + 0.5


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
