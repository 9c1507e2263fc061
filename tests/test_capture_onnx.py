"""Capture from ONNX models through onnxruntime (optional extras: skipped without them).

The model is built with onnx.helper; the oracle for the captured values is numpy evaluating the
same graph in float64 (ORT computes in float32, so values agree to float32 rounding), and the
structure (kinds, weights, bias folding, graph links) is checked against the graph as built.
"""
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="onnx is an optional extra (pip install onnx)")
pytest.importorskip("onnxruntime", reason="onnxruntime is an optional extra")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from simulator import graph_ops  # noqa: E402
from simulator.onnx_capture import capture_onnx  # noqa: E402
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
    # the graph's first output, p, is the softmax's: replay scores it, not the conv after it
    assert trace.meta["output"] == "sm" and trace.output_op.name == "sm"
    task = df.query("role == 'task'").iloc[0]
    assert task.numel == 5 and task.reference_accuracy == np.mean(fc2["output"].argmax(1) == 0)


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
        assert trace.ops == []            # the relu reads what depends on no recorded op


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
    with pytest.warns(UserWarning, match=r"^fc2 \(after FastGelu\): an input depends"):
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
    lin, eye = _start(5)
    graph = helper.make_graph(
        [lin, helper.make_node("MatMul", ["m", "r"], ["y"], name="mm")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])], [m, eye])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.warns(UserWarning, match="^mm: an input depends on the recorded ops"):
        trace = capture_onnx(model, {"x": rng.standard_normal((3, 5)).astype(np.float32)})
    assert trace.op("mm").kind == "matmul" and trace.op("mm").inputs_from == []


def _init(rng, name, *shape):
    return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)


def _run_graph(nodes, inputs, outputs, inits, opset=17):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s)
                                            for n, s in inputs],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
                               for n in outputs], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _start(channels_or_features: int, conv: bool = False) -> tuple:
    """A recorded MAC "lin" that makes "r" from "x" unchanged (a MatMul by the identity, or a
    1x1 Conv by it), so that what follows depends on a recorded op; (node, initializer)."""
    eye = np.eye(channels_or_features, dtype=np.float32)
    if conv:
        return (helper.make_node("Conv", ["x", "eye"], ["r"], name="lin"),
                numpy_helper.from_array(eye[:, :, None, None], "eye"))
    return helper.make_node("MatMul", ["x", "eye"], ["r"], name="lin"), \
        numpy_helper.from_array(eye, "eye")


def _exact():
    return Config("fp32", "fp32", {"accumulator": "exact"}, name="exact")


def test_a_cnn_graph_links_through_norms_pools_and_residuals():
    """Conv, BatchNormalization, MaxPool (ceil mode), a residual Add, AveragePool,
    GlobalAveragePool, Flatten, Gemm: linked end to end with no warning, and propagated replay
    at exact fp32 lands within fp32 rounding of onnxruntime's values (the oracle)."""
    rng = np.random.default_rng(8)
    inits = [_init(rng, "w0", 4, 3, 3, 3), _init(rng, "w1", 4, 4, 3, 3), _init(rng, "fc", 5, 4),
             _init(rng, "s", 4), _init(rng, "b", 4), _init(rng, "m", 4),
             numpy_helper.from_array(rng.uniform(0.5, 2, 4).astype(np.float32), "v")]
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["c0"], name="conv0", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c0", "s", "b", "m", "v"], ["n0"], name="bn"),
        helper.make_node("Relu", ["n0"], ["r0"], name="relu0"),
        helper.make_node("MaxPool", ["r0"], ["p0"], name="pool", kernel_shape=[3, 3],
                         strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1),
        helper.make_node("Conv", ["p0", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["p0", "c1"], ["a"], name="residual"),
        helper.make_node("AveragePool", ["a"], ["ap"], name="avg", kernel_shape=[2, 2],
                         strides=[1, 1], pads=[1, 1, 1, 1], count_include_pad=1),
        helper.make_node("GlobalAveragePool", ["ap"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "fc"], ["y"], name="head", transB=1)]
    model = _run_graph(nodes, [("x", [2, 3, 9, 9])], ["y"], inits)
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        trace = capture_onnx(model, {"x": x})
    assert [(o.name, o.kind, o.inputs_from) for o in trace.ops] == [
        ("conv0", "conv2d", []), ("bn", "batch_norm", ["conv0"]), ("relu0", "relu", ["bn"]),
        ("pool", "pool2d", ["relu0"]), ("conv1", "conv2d", ["pool"]),
        ("residual", "add", ["pool", "conv1"]), ("avg", "pool2d", ["residual"]),
        ("gap", "adaptive_avg_pool2d", ["avg"]), ("flat", "flatten", ["gap"]),
        ("head", "linear", ["flat"])]
    df = replay(trace, [_exact()], "propagated")
    assert (df[df.role == "output"].sqnr_db > 120).all() and "error" not in df


def test_a_transformer_graph_links_through_heads_norms_and_slices():
    """MatMul + bias, Split, Reshape, Transpose, the scores, Mul, Softmax, the product by v,
    a residual Add, LayerNormalization, Sigmoid, Slice, ReduceMean, Gather, Tanh."""
    rng = np.random.default_rng(9)
    consts = {"shape4": np.array([2, 5, 2, 4], np.int64), "shape2": np.array([2, 5, 8], np.int64),
              "split": np.array([8, 8, 8], np.int64), "scale": np.array(0.5, np.float32),
              "starts": np.array([1], np.int64), "ends": np.array([5], np.int64),
              "axes": np.array([1], np.int64), "steps": np.array([2], np.int64),
              "idx": np.array(0, np.int64)}
    inits = [_init(rng, "wqkv", 8, 24), _init(rng, "bqkv", 24), _init(rng, "wo", 8, 8),
             _init(rng, "g", 8), _init(rng, "beta", 8)] + [
        numpy_helper.from_array(v, k) for k, v in consts.items()]
    nodes = [helper.make_node("MatMul", ["x", "wqkv"], ["qkv0"], name="qkv"),
             helper.make_node("Add", ["qkv0", "bqkv"], ["qkv1"], name="qkv_bias"),
             helper.make_node("Split", ["qkv1", "split"], ["q0", "k0", "v0"], name="split",
                              axis=-1)]
    for n in "qkv":
        nodes += [helper.make_node("Reshape", [f"{n}0", "shape4"], [f"{n}1"], name=f"r{n}"),
                  helper.make_node("Transpose", [f"{n}1"], [f"{n}2"], name=f"t{n}",
                                   perm=[0, 2, 1, 3])]
    nodes += [
        helper.make_node("Transpose", ["k2"], ["kt"], name="kt", perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["q2", "kt"], ["s0"], name="scores"),
        helper.make_node("Mul", ["scale", "s0"], ["s1"], name="scale_mul"),
        helper.make_node("Softmax", ["s1"], ["p"], name="softmax", axis=-1),
        helper.make_node("MatMul", ["p", "v2"], ["o0"], name="pv"),
        helper.make_node("Transpose", ["o0"], ["o1"], name="to", perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["o1", "shape2"], ["o2"], name="ro"),
        helper.make_node("MatMul", ["o2", "wo"], ["o3"], name="out"),
        helper.make_node("Add", ["x", "o3"], ["h"], name="residual"),
        helper.make_node("LayerNormalization", ["h", "g", "beta"], ["ln"], name="ln"),
        helper.make_node("Sigmoid", ["ln"], ["sg"], name="sig"),
        helper.make_node("Slice", ["sg", "starts", "ends", "axes", "steps"], ["sl"],
                         name="slice"),
        helper.make_node("ReduceMean", ["sl"], ["mean"], name="mean", axes=[1], keepdims=0),
        helper.make_node("Gather", ["ln", "idx"], ["cls"], name="cls", axis=1),
        helper.make_node("Tanh", ["cls"], ["y"], name="tanh")]
    model = _run_graph(nodes, [("x", [2, 5, 8])], ["y", "mean"], inits)
    x = rng.standard_normal((2, 5, 8)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        trace = capture_onnx(model, {"x": x})
    links = {o.name: o.inputs_from for o in trace.ops}
    assert [o.name for o in trace.ops if not o.inputs_from] == ["qkv"]
    assert links["split"] == ["qkv"] and links["split_2"] == ["qkv"]      # bias folded
    assert links["scores"] == ["tq", "kt"] and links["scale_mul"] == ["scores"]
    assert links["pv"] == ["softmax", "tv"] and links["out"] == ["to"]
    assert links["residual"] == ["out"] and links["cls"] == ["ln"]
    assert links["mean"] == ["slice"] and links["slice"] == ["sig"]
    assert trace.op("slice").attrs == {"index": [[None] * 3, [1, 5, 2], [None] * 3]}
    df = replay(trace, [_exact()], "propagated")
    assert (df[df.role == "output"].sqnr_db > 120).all() and "error" not in df


def test_a_pool_torch_would_refuse_is_left_out_with_a_warning():
    lin, eye = _start(1, conv=True)
    model = _run_graph([lin, helper.make_node("Conv", ["r", "w"], ["c"], name="conv"),
                        helper.make_node("MaxPool", ["c"], ["y"], name="pool",
                                         kernel_shape=[3, 3], pads=[2, 2, 2, 2])],
                       [("x", [1, 1, 4, 4])], ["y"], [_init(np.random.default_rng(1), "w",
                                                            1, 1, 1, 1), eye])
    with pytest.warns(UserWarning, match="the graph's output is not the output of a recorded op"), \
            pytest.warns(UserWarning, match="'pool': not recorded: pool2d padding"):
        trace = capture_onnx(model, {"x": np.ones((1, 1, 4, 4), np.float32)})
    assert [o.name for o in trace.ops] == ["lin", "conv"]


def test_a_dilated_average_pool_is_left_out_and_the_old_import_works():
    """AveragePool's dilations (opset 19) are not something an avg pool2d holds (PyTorch's
    has none): left out with a warning that says so, not replayed without them."""
    from simulator.capture import capture_onnx as old_path
    assert old_path is capture_onnx
    lin, eye = _start(2, conv=True)
    model = _run_graph([lin, helper.make_node("AveragePool", ["r"], ["y"], name="ap",
                                              kernel_shape=[2, 2], strides=[3, 3],
                                              dilations=[2, 2])],
                       [("x", [1, 2, 6, 6])], ["y"], [eye], opset=19)
    with pytest.warns(UserWarning, match="the graph's output is not the output of a recorded op"), \
            pytest.warns(UserWarning, match="'ap': not recorded: an avg pool2d takes dilation 1"):
        trace = capture_onnx(model, {"x": np.ones((1, 2, 6, 6), np.float32)})
    assert [o.name for o in trace.ops] == ["lin"]


def test_a_widening_cast_and_an_identity_reduce_mean_pass_the_link_on():
    lin, eye = _start(3)
    nodes = [lin, helper.make_node("Cast", ["r"], ["c"], name="cast", to=TensorProto.DOUBLE),
             helper.make_node("ReduceMean", ["c"], ["m"], name="noop", noop_with_empty_axes=1),
             helper.make_node("Cast", ["m"], ["h"], name="narrow", to=TensorProto.FLOAT16),
             helper.make_node("Relu", ["m"], ["y1"], name="relu2"),
             helper.make_node("Relu", ["h"], ["y2"], name="relu3")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                         [2, 3])],
                              [helper.make_tensor_value_info("y1", TensorProto.DOUBLE, None),
                               helper.make_tensor_value_info("y2", TensorProto.FLOAT16, None)],
                              [eye])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    with pytest.warns(UserWarning, match=r"^relu3 \(after Cast\): an input"):   # fp16 rounds
        trace = capture_onnx(model, {"x": np.ones((2, 3), np.float32)})
    assert [(o.name, o.inputs_from) for o in trace.ops] == [
        ("lin", []), ("relu2", ["lin"]), ("relu3", [])]


def test_rms_norm_rotary_concat_and_reversed_arithmetic_link():
    """An RMSNorm as exported (Pow, ReduceMean, Add, Sqrt, Reciprocal, Mul), a rotary
    embedding (Slice, Neg, Concat, Mul by constant cos/sin, Add), a Concat with a constant
    token in front, Clip, Exp/Log/Abs, and Sub/Div whose linked operand is the second: linked
    end to end with no warning, propagated replay at exact fp32 within fp32 rounding of
    onnxruntime's values."""
    rng = np.random.default_rng(12)
    consts = {"two": np.array(2.0, np.float32), "eps": np.array(1e-6, np.float32),
              "half0": np.array([0], np.int64), "half1": np.array([4], np.int64),
              "end": np.array([8], np.int64), "last": np.array([-1], np.int64),
              "cos": rng.uniform(-1, 1, (5, 8)).astype(np.float32),
              "sin": rng.uniform(-1, 1, (5, 8)).astype(np.float32),
              "cls": rng.standard_normal((2, 1, 8)).astype(np.float32),
              "lo": np.array(-1.5, np.float32), "hi": np.array(1.5, np.float32),
              "one": np.array(1.0, np.float32)}
    inits = [_init(rng, "w", 8, 8), _init(rng, "g", 8), _init(rng, "head", 8, 3)] + [
        numpy_helper.from_array(v, k) for k, v in consts.items()]
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="proj"),
        helper.make_node("Pow", ["h", "two"], ["sq"], name="pow"),
        helper.make_node("ReduceMean", ["sq"], ["ms"], name="ms", axes=[-1], keepdims=1),
        helper.make_node("Add", ["ms", "eps"], ["mse"], name="add_eps"),
        helper.make_node("Sqrt", ["mse"], ["rms"], name="sqrt"),
        helper.make_node("Reciprocal", ["rms"], ["inv"], name="inv"),
        helper.make_node("Mul", ["h", "inv"], ["hn"], name="scale"),
        helper.make_node("Mul", ["g", "hn"], ["n"], name="gain"),
        helper.make_node("Slice", ["n", "half0", "half1", "last"], ["x1"], name="x1"),
        helper.make_node("Slice", ["n", "half1", "end", "last"], ["x2"], name="x2"),
        helper.make_node("Neg", ["x2"], ["nx2"], name="neg"),
        helper.make_node("Concat", ["nx2", "x1"], ["rot"], name="rot", axis=-1),
        helper.make_node("Mul", ["n", "cos"], ["nc"], name="mul_cos"),
        helper.make_node("Mul", ["rot", "sin"], ["rs"], name="mul_sin"),
        helper.make_node("Add", ["nc", "rs"], ["q"], name="rope"),
        helper.make_node("Concat", ["cls", "q"], ["seq"], name="with_cls", axis=1),
        helper.make_node("Clip", ["seq", "lo", "hi"], ["cl"], name="clip"),
        helper.make_node("Abs", ["cl"], ["ab"], name="abs"),
        helper.make_node("Exp", ["ab"], ["ex"], name="exp"),
        helper.make_node("Log", ["ex"], ["lg"], name="log"),
        helper.make_node("Sub", ["one", "lg"], ["s"], name="one_minus"),
        helper.make_node("Div", ["one", "ex"], ["d"], name="one_over"),
        helper.make_node("Add", ["s", "d"], ["sd"], name="sum"),
        helper.make_node("MatMul", ["sd", "head"], ["y"], name="logits")]
    model = _run_graph(nodes, [("x", [2, 5, 8])], ["y"], inits)
    x = rng.standard_normal((2, 5, 8)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        trace = capture_onnx(model, {"x": x})
    links = {o.name: (o.kind, o.inputs_from) for o in trace.ops}
    assert [o.name for o in trace.ops if not o.inputs_from] == ["proj"]
    assert links["inv"] == ("div", ["sqrt"]) and trace.op("inv").attrs == {"reverse": True}
    assert links["neg"] == ("mul", ["x2"]) and links["rot"] == ("concat", ["neg", "x1"])
    assert trace.op("with_cls").attrs == {"dim": 1, "sizes": [1, 5], "linked": [1]}
    assert trace.op("pow").attrs == {"exponent": 2.0}
    assert trace.op("clip").attrs == {"min": -1.5, "max": 1.5}
    assert trace.op("one_minus").attrs == {"reverse": True} == trace.op("one_over").attrs
    assert [o.kind for o in trace.ops].count("concat") == 2 and links["log"] == ("log", ["exp"])
    df = replay(trace, [_exact()], "propagated")
    assert (df[df.role == "output"].sqnr_db > 120).all() and "error" not in df


@pytest.mark.parametrize("opset", [10, 17])
def test_pow_and_clip_replay_onnxruntimes_special_values(opset):
    """Pow by ±0.5, 1.5 and -2 follows C's pow as onnxruntime does (-0 and -inf included, where
    torch's sqrt and rsqrt differ), and a Clip bound left out is the type's largest or lowest
    value (inf is clipped to it): graph_ops on each captured input gives onnxruntime's output,
    signed zeros and NaN positions included."""
    special = np.array([[0.0, -0.0, np.inf, -np.inf, 2.0, -3.0, 1e-30]], np.float32)
    consts = {"s": special, "lo": np.array(-1.0, np.float32)}
    consts.update({f"e{i}": np.array(e, np.float32) for i, e in enumerate((0.5, -0.5, 1.5, -2))})
    lin, eye = _start(7)
    nodes = [lin, helper.make_node("Mul", ["r", "s"], ["v"], name="spec")]    # r is 1: v = s
    for i in range(4):
        nodes.append(helper.make_node("Pow", ["v", f"e{i}"], [f"p{i}"], name=f"pow{i}"))
    if opset < 11:                                  # Clip-6 takes its bounds as attributes
        nodes += [helper.make_node("Clip", ["v"], ["c0"], name="clip0"),
                  helper.make_node("Clip", ["v"], ["c1"], name="clip1", min=-1.0)]
    else:
        nodes += [helper.make_node("Clip", ["v", "", ""], ["c0"], name="clip0"),
                  helper.make_node("Clip", ["v", "lo"], ["c1"], name="clip1")]
    outs = [f"p{i}" for i in range(4)] + ["c0", "c1"]
    inits = [numpy_helper.from_array(v, k) for k, v in consts.items()] + [eye]
    model = _run_graph(nodes, [("x", [1, 7])], outs, inits, opset=opset)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        trace = capture_onnx(model, {"x": np.ones((1, 7), np.float32)})
    top = float(np.finfo(np.float32).max)
    assert trace.op("clip0").attrs == {"min": -top, "max": top}
    assert trace.op("clip1").attrs == {"min": -1.0, "max": top}
    for o in trace.ops:
        if o.kind in ("pow", "clamp"):
            got = graph_ops.evaluate(o.kind, {"input": o.tensors["input"].astype(np.float64)},
                                     None, o.attrs)
            with np.errstate(over="ignore"):                # 1e-30 ** -2 is inf in float32
                got = got.astype(np.float32)
            want = o.tensors["output"]
            assert np.array_equal(got, want, equal_nan=True), o.name
            real = ~np.isnan(want)
            assert np.array_equal(np.signbit(got[real]), np.signbit(want[real])), o.name


def test_erf_gelu_expand_and_a_bias_behind_an_identity_link_and_fold():
    """GELU as torch exports it below opset 20 (Div, Erf, Add, Mul, Mul) links through Erf;
    Expand of a linked value links; a weight and a bias an exporter reads through Identity
    nodes of initializers still make a linear with its bias, and neither Identity nor a Flatten
    of a bool input (no recorded op behind either) is recorded or warned about."""
    rng = np.random.default_rng(14)
    consts = {"rt2": np.array(np.sqrt(2.0), np.float32), "one": np.array(1.0, np.float32),
              "half": np.array(0.5, np.float32), "shape": np.array([2, 3, 4], np.int64)}
    inits = [_init(rng, "w0", 4, 4), _init(rng, "b0", 4)] + [
        numpy_helper.from_array(v, k) for k, v in consts.items()]
    nodes = [helper.make_node("Identity", ["b0"], ["b"], name="shared_bias"),
             helper.make_node("Identity", ["w0"], ["w"], name="shared_weight"),
             helper.make_node("MatMul", ["x", "w"], ["m"], name="fc"),
             helper.make_node("Add", ["m", "b"], ["h"], name="fc_bias"),
             helper.make_node("Div", ["h", "rt2"], ["d"], name="div"),
             helper.make_node("Erf", ["d"], ["e"], name="erf"),
             helper.make_node("Add", ["e", "one"], ["e1"], name="add1"),
             helper.make_node("Mul", ["h", "e1"], ["g0"], name="mul"),
             helper.make_node("Mul", ["g0", "half"], ["g"], name="gelu"),
             helper.make_node("Expand", ["g", "shape"], ["y"], name="expand"),
             helper.make_node("Flatten", ["mask"], ["flat"], name="flat_mask")]
    graph = helper.make_graph(nodes, "g", [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4]),
        helper.make_tensor_value_info("mask", TensorProto.BOOL, [3, 4])], [
        helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
        helper.make_tensor_value_info("flat", TensorProto.BOOL, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.standard_normal((3, 4)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        trace = capture_onnx(model, {"x": x, "mask": x > 0})
    assert [(o.name, o.kind, o.inputs_from) for o in trace.ops] == [
        ("fc", "linear", []), ("div", "div", ["fc"]), ("erf", "erf", ["div"]),
        ("add1", "add", ["erf"]), ("mul", "mul", ["fc", "add1"]), ("gelu", "mul", ["mul"]),
        ("expand", "expand", ["gelu"])]
    assert "bias" in trace.op("fc").tensors and np.array_equal(
        trace.op("fc").tensors["weight"], numpy_helper.to_array(inits[0]).T)
    df = replay(trace, [_exact()], "propagated")
    assert (df[df.role == "output"].sqnr_db > 120).all() and "error" not in df


def test_an_if_whose_branch_reads_the_input_is_not_a_constant_weight():
    """An If on a constant condition lists no graph input, but its branch reads x: its output
    is no weight, so MatMul(x, it) is a matmul of two activations, not a linear."""
    then = helper.make_graph([helper.make_node("Transpose", ["x"], ["xt"])], "then", [],
                             [helper.make_tensor_value_info("xt", TensorProto.FLOAT, None)])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["xi"])], "else", [],
                              [helper.make_tensor_value_info("xi", TensorProto.FLOAT, None)])
    cond = numpy_helper.from_array(np.array(True), "cond")
    model = _run_graph([helper.make_node("If", ["cond"], ["w"], then_branch=then,
                                         else_branch=other),
                        helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
                       [("x", [3, 3])], ["y"], [cond])
    trace = capture_onnx(model, {"x": np.eye(3, dtype=np.float32) * 2})
    assert [(o.name, o.kind) for o in trace.ops] == [("mm", "matmul")]


def test_einsum_nodes_that_are_matmuls_link_through_their_layout():
    """A weight applied as ``oi,bti->bto`` (a constant, no batch letters: a linear, as a
    MatMul by a constant, the linked operand first), then attention scores and a product
    written as Einsum: matmuls between the permutes that lay them out, each op named after its
    node, linked end to end; the values each op holds are numpy's einsum of the graph's
    (float32 rounding); a diagonal of a recorded op's output is left out with a warning."""
    rng = np.random.default_rng(21)
    inits = [_init(rng, "wq", 8, 8), _init(rng, "wk", 8, 8)]
    nodes = [helper.make_node("MatMul", ["x", "wq"], ["q"], name="q"),
             helper.make_node("Einsum", ["wk", "q"], ["k"], name="k", equation="oi,bti->bto"),
             helper.make_node("Einsum", ["q", "k"], ["s"], name="s", equation="bqd,bkd->bqk"),
             helper.make_node("Einsum", ["s", "k"], ["o"], name="o", equation="bqk,bkd->bdq")]
    model = _run_graph(nodes, [("x", [2, 5, 8])], ["o"], inits)
    x = rng.standard_normal((2, 5, 8)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        trace = capture_onnx(model, {"x": x})
    assert [(o.name, o.kind, o.inputs_from) for o in trace.ops] == [
        ("q", "linear", []), ("k", "linear", ["q"]),
        ("s.b", "permute", ["k"]), ("s", "matmul", ["q", "s.b"]),            # q @ k^T
        ("o", "matmul", ["s", "k"]), ("o.out", "permute", ["o"])]            # then to b d q
    wq, wk = (numpy_helper.to_array(i).astype(np.float64) for i in inits)
    q = x.astype(np.float64) @ wq
    k = np.einsum("oi,bti->bto", wk, q)
    s = np.einsum("bqd,bkd->bqk", q, k)
    np.testing.assert_array_equal(trace.op("k").tensors["weight"], wk.astype(np.float32))
    np.testing.assert_allclose(trace.op("s").tensors["output"], s, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(trace.ops[-1].tensors["output"],
                               np.einsum("bqk,bkd->bdq", s, k), rtol=1e-4, atol=1e-3)
    df = replay(trace, [_exact()], "propagated")
    assert (df[df.role == "output"].sqnr_db > 110).all() and "error" not in df
    diag = _run_graph([helper.make_node("MatMul", ["x", "w"], ["h"], name="fc"),
                       helper.make_node("Einsum", ["h"], ["d"], name="d", equation="ii->i")],
                      [("x", [3, 3])], ["d"], [_init(rng, "w", 3, 3)])
    with pytest.warns(UserWarning, match="the graph's output is not the output of a recorded op"), \
            pytest.warns(UserWarning, match="not recorded"):
        capture_onnx(diag, {"x": rng.standard_normal((3, 3)).astype(np.float32)})
