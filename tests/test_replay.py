"""Replay (simulator.replay) on the built-in digits trace and on small plain-array traces.

Reference values are independent of the replay code: exact float64 products (naive loops for
conv2d), shapes read off the trace, ml_dtypes' bfloat16 rounding for gradient quantization.
"""
import math
import warnings
from dataclasses import replace

import ml_dtypes
import numpy as np
import pandas as pd
import pytest

import formats
import mac_models as mm

from simulator import digits
from simulator.capture import from_arrays
from simulator.configs import Config
from simulator.replay import replay
from simulator.traces import Op, Trace

FP32 = Config("fp32", "fp32")
INT8 = Config("int8_channel", "int8_tensor", "int8->int32")
COST_COLUMNS = ["compute_pj", "memory_pj", "total_pj", "area_um2"]


@pytest.fixture(scope="module")
def digits_trace():
    return digits.trace()


@pytest.fixture(scope="module")
def fp32_tables(digits_trace):
    return {mode: replay(digits_trace, FP32, mode) for mode in ("per-op", "propagated")}


def _linear_ops(trace):
    return [o for o in trace.ops if o.kind == "linear"]


def _row(df, op, role):
    rows = df[(df["op"] == op) & (df["role"] == role)]
    assert len(rows) == 1, (op, role, len(rows))
    return rows.iloc[0]


# --- exactness and ordering on the digits trace ------------------------------------------------

def test_digits_trace_shape(digits_trace):
    assert [(o.name, o.kind) for o in digits_trace.ops] == [
        ("fc1", "linear"), ("relu1", "relu"), ("fc2", "linear"), ("relu2", "relu"),
        ("fc3", "linear")]
    assert digits_trace.extras["labels"].shape == (digits.N_TEST,)


@pytest.mark.parametrize("mode", ["per-op", "propagated"])
def test_fp32_replay_is_exact(fp32_tables, mode):
    df = fp32_tables[mode]
    out = df[df["role"] == "output"]
    expected_ops = {"fc1", "fc2", "fc3"} | ({"relu1", "relu2"} if mode == "propagated"
                                            else set())
    assert set(out["op"]) == expected_ops
    assert (out["mse"] == 0).all(), out[["op", "mse"]]
    assert (out["max_abs_error"] == 0).all(), out[["op", "max_abs_error"]]
    assert (out["nan_count"] == 0).all() and (out["inf_count"] == 0).all()
    assert np.isinf(out["sqnr_db"]).all()
    macs = out[out["kind"] == "linear"]
    assert (macs["max_ulp_error"] == 0).all()          # in ulps of fp32, the output format


def test_max_ulp_error_of_operands_and_outputs():
    """Operands rounded to nearest are at most half an ulp of their format off (fp16, int8);
    posits and scaled formats have no ulp of that form (NaN).  An fp16 register's output is
    measured in fp16 ulps: a sequential fp16 sum of 64 products is off by several."""
    rng = np.random.default_rng(12)
    x, w = rng.standard_normal((8, 64)), rng.standard_normal((4, 64))
    tr = from_arrays({"fc": {"kind": "linear", "input": x, "weight": w}})
    df = replay(tr, [Config("fp16", "fp16", "fp16->fp16", name="h"),
                     Config("int8", "int8", "int8->int32", name="i"),
                     Config("posit16_1", "posit16_1", "posit16_quire", name="p"),
                     Config("mxfp8_e4m3", "mxfp8_e4m3", "mxfp8->fp32", name="m")],
                "per-op").set_index(
        ["config", "role"])["max_ulp_error"]
    for c in ("h", "i"):
        assert 0.4 < df[c, "input"] <= 0.5 and 0.4 < df[c, "weight"] <= 0.5
    assert df["h", "output"] > 1
    for c, role in (("p", "input"), ("p", "output"), ("m", "input")):
        assert math.isnan(df[c, role])
    assert df["m", "output"] >= 0                      # fp32, the promotion register's format


def test_max_ulp_error_of_a_fixed_point_register():
    """fix8_4 x fix8_4 products into an int32 register are multiples of 2**-8: a captured
    output one such step away is one ulp off (not 2**-8 ulps of a plain int32)."""
    rng = np.random.default_rng(13)
    x = rng.integers(-64, 64, (3, 5)) / 16
    w = rng.integers(-64, 64, (2, 5)) / 16
    y = x @ w.T
    y[1, 1] += 2.0 ** -8
    tr = from_arrays({"fc": {"kind": "linear", "input": x, "weight": w, "output": y}})
    mac = mm.MAC("fix8_4", accumulator=mm.IntAccumulator(32))
    df = replay(tr, [Config("fix8_4", "fix8_4", mac, name="fx")], "per-op")
    assert df.set_index("role").loc["output", "max_ulp_error"] == 1.0


def test_fp32_propagated_accuracy_equals_reference(fp32_tables, digits_trace):
    task = fp32_tables["propagated"]
    task = task[task["role"] == "task"]
    assert len(task) == 1
    t = task.iloc[0]
    # reference accuracy from the captured logits, computed here
    logits = np.asarray(digits_trace.op("fc3").tensors["output"])
    labels = np.asarray(digits_trace.extras["labels"])
    ref = float(np.mean(np.argmax(logits, axis=1) == labels))
    assert t["reference_accuracy"] == pytest.approx(ref, abs=1e-12)
    assert t["accuracy"] == t["reference_accuracy"]
    assert ref > 0.9                     # the model is trained, not random


@pytest.mark.filterwarnings("ignore:configuration .* quantize to zero")
def test_error_grows_as_formats_shrink(digits_trace):
    names = ["fp16", "fp8_e4m3", "fp4_e2m1"]
    df = replay(digits_trace, [Config(n, n) for n in names], "per-op")
    for op in ("fc1", "fc2", "fc3"):
        mses = []
        for n in names:
            r = df[(df["op"] == op) & (df["role"] == "output") & (df["weights"] == n)]
            assert len(r) == 1
            mses.append(float(r["mse"].iloc[0]))
        assert 0 < mses[0] < mses[1] < mses[2], (op, mses)


def test_int8_keeps_task_accuracy(digits_trace, fp32_tables):
    df = replay(digits_trace, INT8, "propagated")
    acc = float(df[df["role"] == "task"]["accuracy"].iloc[0])
    ref = float(fp32_tables["propagated"].query("role == 'task'")["accuracy"].iloc[0])
    assert abs(acc - ref) <= 0.01
    # and int8 is not error-free: the outputs really went through int8
    assert (df[(df["role"] == "output") & (df["kind"] == "linear")]["mse"] > 0).all()


# --- row layout and costs ------------------------------------------------------------------

def test_row_layout_per_op(fp32_tables, digits_trace):
    df = fp32_tables["per-op"]
    for o in _linear_ops(digits_trace):
        assert sorted(df[df["op"] == o.name]["role"]) == ["input", "output", "weight"]
    assert "task" not in set(df["role"])
    assert not (df["kind"] == "relu").any()          # elementwise ops skipped per op
    assert set(df["mode"]) == {"per-op"}
    assert set(df["config"]) == {FP32.name}
    assert set(df["weights"]) == {"fp32"} and set(df["activations"]) == {"fp32"}


def test_row_layout_propagated(fp32_tables, digits_trace):
    df = fp32_tables["propagated"]
    for o in _linear_ops(digits_trace):
        assert sorted(df[df["op"] == o.name]["role"]) == ["input", "output", "weight"]
    assert list(df[df["kind"] == "relu"]["role"]) == ["output", "output"]
    task = df[df["role"] == "task"]
    assert len(task) == 1 and task.iloc[0]["op"] == "model"
    assert task.iloc[0]["numel"] == digits.N_TEST
    # the task row is the last row
    assert df.iloc[-1]["role"] == "task"


def test_the_task_row_gives_the_model_output_sqnr(digits_trace):
    """Without labels the propagated task row still sums the run and gives the SQNR of the
    model's output, the last op's with every error before it propagated: an exact fp32 run's
    is infinite, an int8 run's that of fc3's output row, and none comes without propagation."""
    t = Trace(digits_trace.ops, extras=None, model="nolabels")
    int8 = Config("int8_channel", "int8_tensor", "int8->int32")
    df = replay(t, [FP32, int8], "propagated")
    task = df[df["role"] == "task"].set_index("config")
    assert "accuracy" not in task and list(task["numel"]) == [360 * 10] * 2
    assert task.loc[FP32.name, "sqnr_db"] == math.inf
    fc3 = df[(df["op"] == "fc3") & (df["role"] == "output")].set_index("config")
    assert 20 < task.loc[int8.name, "sqnr_db"] == fc3.loc[int8.name, "sqnr_db"] < 60
    assert "task" not in set(replay(t, int8, "per-op")["role"])


def test_an_empty_trace_replays_to_an_empty_table():
    for mode in ("per-op", "propagated"):
        assert replay(Trace([]), FP32, mode).empty


def test_the_model_output_sqnr_against_ml_dtypes():
    """x -> mul by 3 -> relu, stored in bf16: the model's output is bf16(relu(bf16(3 bf16(x))))
    (the input read as stored), cast by ml_dtypes, and its SQNR against the float64 reference
    is computed here from the definition (10 log10 of signal over noise energy)."""
    x = np.random.default_rng(21).normal(size=(16, 8))
    ref = np.maximum(3 * x, 0)
    t = from_arrays({"mul": {"kind": "mul", "input": x, "other": np.array(3.0), "output": 3 * x},
                     "relu": {"kind": "relu", "input": 3 * x, "output": ref,
                              "inputs_from": ["mul"]}})
    task = replay(t, Config(storage="bf16"), "propagated").query("role == 'task'").iloc[0]
    bf16 = ml_dtypes.bfloat16
    xs = x.astype(bf16).astype(np.float64)
    got = np.maximum((3 * xs).astype(bf16).astype(np.float64), 0).astype(bf16).astype(np.float64)
    want = 10 * math.log10(np.sum(ref ** 2) / np.sum((ref - got) ** 2))
    assert task["sqnr_db"] == pytest.approx(want, rel=1e-12)


def test_macs_and_costs(fp32_tables, digits_trace):
    for mode, df in fp32_tables.items():
        for o in _linear_ops(digits_trace):
            n, k = o.tensors["weight"].shape
            rows = int(np.prod(o.tensors["input"].shape[:-1]))
            r = _row(df, o.name, "output")
            assert r["macs"] == n * k * rows
            for c in COST_COLUMNS:
                assert r[c] > 0, (mode, o.name, c)
            assert r["total_pj"] >= r["compute_pj"]
            assert r["numel"] == rows * n
            inp, w = _row(df, o.name, "input"), _row(df, o.name, "weight")
            assert inp["numel"] == rows * k and w["numel"] == n * k
    df = fp32_tables["propagated"]
    out = df[df["role"] == "output"]          # the MACs and the ops between them (relu)
    task = df[df["role"] == "task"].iloc[0]
    assert task["macs"] == out.loc[out["kind"] == "linear", "macs"].sum()
    assert (out.loc[out["kind"] != "linear", "total_pj"] > 0).all()
    for c in ("compute_pj", "memory_pj", "total_pj"):
        assert task[c] == pytest.approx(out[c].sum(), rel=1e-12)


def test_cost_follows_node_and_memory_level(digits_trace, fp32_tables):
    base = fp32_tables["per-op"].query("role == 'output'").set_index("op")
    small = replay(digits_trace, FP32, "per-op", tech=7).query("role == 'output'").set_index("op")
    rf = replay(digits_trace, FP32, "per-op", level="rf").query("role == 'output'").set_index("op")
    for op in base.index:
        assert small.loc[op, "compute_pj"] < base.loc[op, "compute_pj"]
        assert rf.loc[op, "memory_pj"] < base.loc[op, "memory_pj"]
        # error does not depend on the cost model
        assert small.loc[op, "mse"] == base.loc[op, "mse"]


def test_replay_argument_errors(digits_trace):
    with pytest.raises(ValueError, match="mode"):
        replay(digits_trace, FP32, "sideways")
    with pytest.raises(ValueError):
        replay(digits_trace, [], "per-op")
    with pytest.raises(TypeError):
        replay(digits_trace, ["fp32"], "per-op")
    with pytest.raises(ValueError, match=r"names repeat: \['x'\]"):      # before any work
        replay(digits_trace, [Config("fp16", "fp16", name="x"), Config("bf16", "bf16", name="x")])


@pytest.mark.parametrize("kwargs", [{"level": "moon"}, {"tech": -5}])
def test_bad_cost_arguments_raise(digits_trace, kwargs):
    with pytest.raises(ValueError):
        replay(digits_trace, FP32, "per-op", **kwargs)


# --- NaN inputs ---------------------------------------------------------------------------

def _nan_trace(all_nan=True):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((4, 8)).astype(np.float32)
    w = rng.standard_normal((3, 8)).astype(np.float32)
    y = (x.astype(np.float64) @ w.T.astype(np.float64)).astype(np.float32)
    xn = np.full_like(x, np.nan) if all_nan else x.copy()
    if not all_nan:
        xn[0, 0] = np.nan
    r = np.maximum(y, 0)
    w2 = rng.standard_normal((3, 3)).astype(np.float32)
    return from_arrays({
        "fc": {"kind": "linear", "input": xn, "weight": w, "output": y},
        "act": {"kind": "relu", "input": y, "output": r, "inputs_from": ["fc"]},
        "head": {"kind": "linear", "input": r, "weight": w2, "inputs_from": ["act"]},
    }, extras={"labels": np.zeros(4, np.int64)})


@pytest.mark.parametrize("mode", ["per-op", "propagated"])
def test_nan_input_float_format_counts_nans(mode):
    df = replay(_nan_trace(), Config("fp16", "fp16"), mode)
    out = _row(df, "fc", "output")
    assert out["nan_count"] == 12               # every output NaN, captured output finite
    assert out["mse"] == math.inf and out["sqnr_db"] == -math.inf   # NaN: an infinite error
    assert "error" not in df.columns or df["error"].isna().all()


@pytest.mark.filterwarnings("ignore:configuration .* quantize to zero")
def test_nan_input_scalar_integer_format_gives_error_row():
    for mode in ("per-op", "propagated"):
        df = replay(_nan_trace(), Config("int8", "int8", "int8->int32"), mode)
        fc = df[df["op"] == "fc"]
        assert len(fc) == 1 and fc.iloc[0]["role"] == "output"
        assert "NaN" in fc.iloc[0]["error"]
        # the rest of the trace is still replayed (per-op: head from its captured input)
        if mode == "per-op":
            assert _row(df, "head", "output")["mse"] >= 0
        else:
            task = df[df["role"] == "task"].iloc[0]
            assert math.isnan(task["accuracy"])
            assert task["error"] == "head did not run"
            # the captured logits' accuracy does not depend on the configuration
            tr = _nan_trace()
            logits = np.asarray(tr.op("head").tensors["output"])
            want = np.mean(np.argmax(logits, axis=1) == tr.extras["labels"])
            assert task["reference_accuracy"] == want


def test_nan_input_int8_tensor_follows_the_scaled_nan_rule():
    """A scaled format turns a group holding NaN into NaN (its documented rule, OCP MX's): with
    one per-tensor scale, one NaN input makes every output NaN, counted rather than an error."""
    df = replay(_nan_trace(all_nan=False), INT8, "per-op")
    fc = _row(df, "fc", "output")
    assert fc["nan_count"] == 12
    assert not isinstance(fc.get("error"), str)


def test_nan_logits_do_not_count_as_correct():
    df = replay(_nan_trace(), Config("fp16", "fp16"), "propagated")
    task = df[df["role"] == "task"].iloc[0]
    assert _row(df, "head", "output")["nan_count"] == 12     # every logit is NaN
    assert not task["accuracy"] > 0                         # 0 or NaN, not 1.0


def test_ops_after_a_failed_op_are_not_silently_fed_captured_inputs():
    df = replay(_nan_trace(all_nan=False), Config("int8", "int8", "int8->int32"), "propagated")
    assert isinstance(_row(df, "fc", "output")["error"], str)
    head = _row(df, "head", "output")
    assert isinstance(head.get("error"), str) or not np.isfinite(head["mse"])


# --- config errors ----------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, name", [
    ({"weights": "fp99", "activations": "fp32"}, "fp99"),
    ({"weights": "fp32", "activations": "nosuchfmt"}, "nosuchfmt"),
    ({"weights": "fp32", "activations": "fp32", "gradients": "bogus8"}, "bogus8"),
])
def test_unknown_format_names(kwargs, name):
    with pytest.raises(ValueError, match=name):
        Config(**kwargs)


def test_mac_format_mismatch():
    with pytest.raises(ValueError, match="int8->int32"):
        Config("fp16", "fp16", "int8->int32")


# --- conv2d and matmul wiring -----------------------------------------------------------------

def _conv_ref(x, w, b, stride, padding, dilation, groups):
    """Naive float64 cross-correlation (PyTorch convention)."""
    x, w = x.astype(np.float64), w.astype(np.float64)
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    xp = np.zeros((n, c, h + 2 * ph, wd + 2 * pw))
    xp[:, :, ph:ph + h, pw:pw + wd] = x
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    og = o // groups
    out = np.zeros((n, o, ho, wo))
    for ni in range(n):
        for oc in range(o):
            g = oc // og
            for i in range(ho):
                for j in range(wo):
                    acc = 0.0
                    for ci in range(cg):
                        for u in range(kh):
                            for v in range(kw):
                                acc += (xp[ni, g * cg + ci, i * sh + u * dh, j * sw + v * dw]
                                        * w[oc, ci, u, v])
                    out[ni, oc, i, j] = acc + (b[oc] if b is not None else 0.0)
    return out


@pytest.fixture(scope="module")
def conv_matmul_trace():
    rng = np.random.default_rng(21)
    x1 = rng.standard_normal((2, 4, 6, 6)).astype(np.float32)
    w1 = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)
    b1 = rng.standard_normal(6).astype(np.float32)
    y1 = _conv_ref(x1, w1, b1, (2, 2), (1, 1), (1, 1), 2)
    assert y1.shape == (2, 6, 3, 3)
    x2 = rng.standard_normal((1, 3, 7, 5)).astype(np.float32)
    w2 = rng.standard_normal((4, 3, 2, 3)).astype(np.float32)
    y2 = _conv_ref(x2, w2, None, (1, 2), (1, 0), (2, 1), 1)
    a = rng.standard_normal((2, 3, 5)).astype(np.float32)
    b = rng.standard_normal((5, 4)).astype(np.float32)
    return from_arrays({
        "conv_g2": {"kind": "conv2d", "input": x1, "weight": w1, "bias": b1, "output": y1,
                    "attrs": {"stride": 2, "padding": 1, "groups": 2}},
        "conv_dil": {"kind": "conv2d", "input": x2, "weight": w2, "output": y2,
                     "attrs": {"stride": [1, 2], "padding": [1, 0], "dilation": [2, 1]}},
        "mm": {"kind": "matmul", "a": a, "b": b},
    })


def test_conv_and_matmul_wiring(conv_matmul_trace):
    df = replay(conv_matmul_trace, FP32, "per-op")
    if "error" in df.columns:
        assert df["error"].isna().all(), df["error"].dropna().tolist()
    for op in ("conv_g2", "conv_dil", "mm"):
        out = _row(df, op, "output")
        assert out["sqnr_db"] > 100, (op, out["sqnr_db"])
        assert out["nan_count"] == 0
    # roles of the operands
    assert sorted(df[df["op"] == "mm"]["role"]) == ["a", "b", "output"]
    assert sorted(df[df["op"] == "conv_g2"]["role"]) == ["input", "output", "weight"]
    # MACs counted from the shapes
    for op in ("conv_g2", "conv_dil"):
        t = conv_matmul_trace.op(op).tensors
        _, cg, kh, kw = t["weight"].shape
        assert _row(df, op, "output")["macs"] == np.prod(t["output"].shape) * cg * kh * kw
    assert conv_matmul_trace.op("conv_dil").tensors["output"].shape == (1, 4, 7, 2)
    assert _row(df, "mm", "output")["macs"] == 2 * 3 * 5 * 4
    assert _row(df, "conv_g2", "input")["numel"] > 0


def test_conv_wiring_detects_wrong_reference(conv_matmul_trace):
    """The same check fails when the reference is computed with the wrong grouping."""
    op = conv_matmul_trace.op("conv_g2")
    t = dict(op.tensors)
    wrong = _conv_ref(t["input"], np.roll(t["weight"], 3, axis=0), t["bias"], (2, 2), (1, 1),
                      (1, 1), 2)
    bad = Trace([Op("c", "conv2d", {**t, "output": wrong}, attrs=op.attrs)])
    out = _row(replay(bad, FP32, "per-op"), "c", "output")
    assert out["sqnr_db"] < 20


def test_low_precision_conv_has_error(conv_matmul_trace):
    df = replay(conv_matmul_trace, Config("fp8_e4m3", "fp8_e4m3"), "per-op")
    for op in ("conv_g2", "conv_dil", "mm"):
        assert 10 < _row(df, op, "output")["sqnr_db"] < 60


def test_conv_operand_rows_measure_the_stored_tensors(conv_matmul_trace):
    """With a block format, a conv's input row is the error of x stored once, blocks along
    each pixel's channels (numel = x.size, not one copy per patch; conv_g2's two groups of 2
    channels share a block of 32), and the weight row that of w in blocks along each kernel
    tap's channels."""
    from simulator import metrics
    fmt = formats.get("mxfp8_e4m3")
    df = replay(conv_matmul_trace, Config("mxfp8_e4m3", "mxfp8_e4m3"), "per-op")
    for op in ("conv_g2", "conv_dil"):                # conv_dil: 3 channels padded to 32
        t = conv_matmul_trace.op(op).tensors
        for role in ("input", "weight"):
            ref = np.asarray(t[role], dtype=np.float64)
            got = fmt.quantize(ref, axis=1)
            row = _row(df, op, role)
            assert row["numel"] == ref.size
            want = metrics.error_metrics(ref.ravel(), got.ravel())
            for m in ("sqnr_db", "mse", "max_abs_error"):   # sums in another order: 1e-12
                assert row[m] == pytest.approx(want[m], rel=1e-12), (op, role, m)


# --- gradients -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def grad_trace():
    rng = np.random.default_rng(31)
    x = rng.standard_normal((5, 6)).astype(np.float32)
    w = rng.standard_normal((3, 6)).astype(np.float32)
    return from_arrays({"fc": {"kind": "linear", "input": x, "weight": w,
                               "grad_output": rng.standard_normal((5, 3)).astype(np.float32)}})


@pytest.mark.parametrize("mode", ["per-op", "propagated"])
def test_gradient_rows_only_with_a_gradient_format(grad_trace, mode):
    df = replay(grad_trace, FP32, mode)
    assert "grad_output" not in set(df["role"])
    df = replay(grad_trace, Config("fp32", "fp32", gradients="bf16"), mode)
    ops = df[df["op"] == "fc"]                          # propagated mode adds the model's row
    assert sorted(ops["role"]) == ["grad_output", "input", "output", "weight"]
    g = np.asarray(grad_trace.op("fc").tensors["grad_output"], np.float64)
    q = g.astype(ml_dtypes.bfloat16).astype(np.float64)     # round to nearest even
    row = _row(df, "fc", "grad_output")
    assert row["numel"] == g.size
    assert row["mse"] == pytest.approx(np.mean((q - g) ** 2), rel=1e-12)
    assert row["max_abs_error"] == np.max(np.abs(q - g))
    assert row["gradients"] == "bf16"


@pytest.mark.parametrize("kind,tensors", [
    ("linear", {"input": np.zeros((0, 8)), "weight": np.ones((4, 8)), "output": np.zeros((0, 4))}),
    ("linear", {"input": np.ones((3, 0)), "weight": np.ones((4, 0)), "output": np.zeros((3, 4))}),
    ("matmul", {"a": np.ones((2, 0, 3)), "b": np.ones((2, 3, 5)), "output": np.zeros((2, 0, 5))}),
])
def test_empty_operand_is_an_error_row_that_names_it(kind, tensors):
    """An op with an empty operand is kept as an error row naming the operand and its shape
    (it failed inside the cost model or a reshape, with messages naming neither)."""
    df = replay(Trace([Op("op", kind, tensors)]), [Config()], "per-op")
    row, = df.to_dict("records")
    role = "input" if kind == "linear" else "a"
    assert row["op"] == "op" and "empty" in row["error"]
    assert f"{role} is empty (shape {tensors[role].shape})" in row["error"]


def test_a_format_that_flushes_most_of_an_operand_warns(digits_trace):
    """Plain int8 holds whole numbers: most of the digits MLP's weights lie in (-0.5, 0.5)
    (checked first) and round to zero, and the replay says so; int8 per channel scales them and
    stays quiet.  A sparse operand (a ReLU's output, 70 % zeros) counts its non-zero elements
    only; a scaled format gets no hint to scale."""
    assert all((np.abs(digits_trace.op(n).tensors["weight"]) < 0.5).mean() > 0.5 for n in
               ("fc1", "fc2", "fc3"))
    with pytest.warns(UserWarning, match=r"configuration 'int8\|int32': most non-zero elements "
                                         r"of fc1's weight, fc2's weight, fc3's weight quantize "
                                         r"to zero: is the format meant to have a scale\?"):
        replay(digits_trace, [Config("int8", "int8", "int8->int32")], "per-op")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        replay(digits_trace, [Config("int8_channel", "int8_tensor", "int8->int32")], "per-op")
    rng = np.random.default_rng(5)
    x = np.where(np.arange(40) % 10 < 7, 0.0, 0.4) * rng.choice([-1, 1], size=(8, 40))
    w = rng.integers(-3, 4, size=(4, 40)).astype(float)
    sparse = from_arrays({"fc": {"kind": "linear", "input": x, "weight": w}})
    with pytest.warns(UserWarning, match=r"most non-zero elements of fc's input quantize to "
                                         r"zero: is"):
        replay(sparse, [Config("int8", "int8", "int8->int32")], "per-op")
    # an outlier of 1000 per block of 32 gives MXFP4 blocks a scale of 2^7: 0.4 / 2^7 is below
    # e2m1's least magnitude, 0.5
    outlier = np.where(np.arange(32) == 0, 1000.0, 0.4) * rng.choice([-1, 1], size=(8, 32))
    big = from_arrays({"fc": {"kind": "linear", "input": outlier, "weight": w[:, :32]}})
    with pytest.warns(UserWarning, match=r"fc's input quantize to zero$"):     # no hint
        replay(big, [Config("fp8_e4m3", "mxfp4", "mxfp4->fp32")], "per-op")


def test_the_default_mode_is_propagated_as_on_the_command_line(digits_trace):
    df = replay(digits_trace, [Config()])
    assert set(df["mode"]) == {"propagated"} and (df["role"] == "task").sum() == 1


def test_the_progress_bar_stays_off_what_is_not_a_terminal(digits_trace, capsys):
    """A bar is for a terminal: captured standard error (a log, a pipe) gets no \\r lines."""
    replay(digits_trace, [Config()], progress=True)
    assert capsys.readouterr().err == ""


def test_outputs_are_priced_in_the_format_their_reader_keeps(digits_trace):
    """digits: fc1 -> relu1 -> fc2 -> relu2 -> fc3.  fc1's int32 sums are read by a ReLU
    first, which replay runs on their fp32 values: they move in fp32.  The ReLU's output only
    fc2 reads, which quantizes it to int8: it moves as int8 activations, not as int32.  With
    epilogue fusion the ReLU runs in fc1's epilogue, which writes that int8 tensor itself."""
    cfg = Config("int8_channel", "int8_tensor", "int8->int32")
    op = mm.Matmul(360, 64, 64)
    per_op = _row(replay(digits_trace, [cfg], "per-op"), "fc1", "output")
    fp32_out = mm.layer_cost(op, cfg.build_mac(), {"out": "fp32"})
    assert fp32_out.memory["out"].bits == 360 * 64 * 32
    assert per_op["memory_pj"] == pytest.approx(fp32_out.memory_pj, rel=1e-12)
    fused = replay(digits_trace, [replace(cfg, fusion="epilogue", name="")], "propagated")
    int8_out = mm.layer_cost(op, cfg.build_mac(), {"out": "int8_tensor"})
    assert 360 * 64 * 8 <= int8_out.memory["out"].bits < 360 * 64 * 9
    assert _row(fused, "fc1", "output")["memory_pj"] == \
        pytest.approx(int8_out.memory_pj - int8_out.memory["out"].energy_pj, rel=1e-12)
    relu1 = _row(fused, "relu1", "output")
    assert relu1["memory_pj"] == pytest.approx(int8_out.memory["out"].energy_pj, rel=1e-12)


def _grid_values(rng, shape, scale=64):
    """Multiples of 1/scale in [-1, 1]: their products and short sums are exact in float64 and
    fp32, so the only rounding left is the one under test."""
    return rng.integers(-scale, scale + 1, shape) / scale


def test_storage_rounds_every_propagated_output_as_a_bf16_pipeline_stores_it():
    """linear -> relu -> linear + residual -> layer_norm -> linear, replayed with an exact MAC
    and ``storage="bf16"``, against the same chain computed here in float64 with every op's
    output rounded to bf16 by ml_dtypes (a MAC's from its fp32 result, the others' from float64
    in one rounding): equal bit for bit, op by op.  Without storage the outputs are the
    unrounded chain's."""
    rng = np.random.default_rng(21)
    x, w1, w2, w3 = (_grid_values(rng, s) for s in ((6, 8), (8, 8), (8, 8), (3, 8)))
    b1, b3 = _grid_values(rng, 8), _grid_values(rng, 3)
    g = rng.uniform(0.5, 1.5, 8)

    def bf16(v):                      # one rounding from float64 (ml_dtypes 0.7 and later)
        return np.asarray(v, np.float64).astype(ml_dtypes.bfloat16).astype(np.float64)

    def f32(v):
        return np.asarray(v, np.float32).astype(np.float64)

    def chain(store):   # a MAC: fp32 activations, the exact sum rounded once into the fp32
        def linear(v, w, b=0.0):      # register, plus the bias, rounded to fp32
            return store(f32(f32(f32(v) @ w.T) + b))

        h = linear(x, w1, b1)
        r = store(np.maximum(h, 0))
        s = linear(r, w2)
        a = store(s + h)
        c = a - a.mean(-1, keepdims=True)
        n = store(c / np.sqrt((c ** 2).mean(-1, keepdims=True) + 1e-5) * g)
        return {"fc1": h, "relu": r, "fc2": s, "add": a, "ln": n, "head": linear(n, w3, b3)}

    exact = chain(lambda v: v)
    ops = {"fc1": {"kind": "linear", "input": x, "weight": w1, "bias": b1,
                   "output": exact["fc1"]},
           "relu": {"kind": "relu", "input": exact["fc1"], "output": exact["relu"],
                    "inputs_from": ["fc1"]},
           "fc2": {"kind": "linear", "input": exact["relu"], "weight": w2,
                   "output": exact["fc2"], "inputs_from": ["relu"]},
           "add": {"kind": "add", "input": exact["fc2"], "other": exact["fc1"],
                   "output": exact["add"], "inputs_from": ["fc2", "fc1"]},
           "ln": {"kind": "layer_norm", "input": exact["add"], "weight": g,
                  "output": exact["ln"], "attrs": {"normalized_shape": [8], "eps": 1e-5},
                  "inputs_from": ["add"]},
           "head": {"kind": "linear", "input": exact["ln"], "weight": w3, "bias": b3,
                    "output": exact["head"], "inputs_from": ["ln"]}}
    trace = from_arrays(ops)
    mac = {"accumulator": "exact"}
    stored = Config("fp32", "fp32", mac, storage="bf16")
    assert stored.name.endswith(",store:bf16")
    df = replay(trace, [Config("fp32", "fp32", mac, name="plain"), stored], "propagated")
    want = chain(bf16)
    assert not np.array_equal(want["head"], exact["head"])
    for name in ops:
        rows = df[(df.op == name) & (df.role == "output")].set_index("config")
        assert rows.loc["plain", "sqnr_db"] > 200 or rows.loc["plain", "mse"] == 0
        err = want[name] - exact[name]            # what storing in bf16 changes
        assert rows.loc[stored.name, "mse"] == pytest.approx(np.mean(err ** 2), rel=1e-12)
        assert rows.loc[stored.name, "max_abs_error"] == np.max(np.abs(err))
    assert set(df.storage.dropna()) == {"bf16"}


def test_storage_prices_outputs_and_counts_ulps_in_its_format(digits_trace):
    """A MAC output stored in fp8 is priced in fp8, as is the input the MAC reads (a stored
    tensor), and its error counted in fp8 ulps (half an ulp at most, plus the fp32 reference's
    own rounding, for fp32 operands summed exactly); a storage format that cannot hold a NaN
    output gives an error row."""
    cfg = Config("fp32", "fp32", {"accumulator": "exact"}, storage="fp8_e4m3")
    df = replay(digits_trace, [cfg], "per-op")
    row = _row(df, "fc1", "output")
    want = mm.layer_cost(mm.Matmul(360, 64, 64), cfg.build_mac(),
                         {"a": "fp8_e4m3", "out": "fp8_e4m3"})
    assert want.memory["b"].format == "fp32"                         # the weights: their own
    assert row["memory_pj"] == pytest.approx(want.memory_pj, rel=1e-12)
    assert 0.45 < row["max_ulp_error"] <= 0.5 + 1e-4
    assert Config("fp32", "fp32").key() != Config("fp32", "fp32", storage="bf16").key()
    nan = from_arrays({"fc": {"kind": "linear", "input": np.array([[np.nan, 1.0]]),
                              "weight": np.ones((2, 2))}})
    got = replay(nan, [Config(storage="int8")], "per-op")
    assert "NaN" in got[got.role == "output"].error.item()


def test_an_fp8_store_saturates_a_mask_and_fused_ops_are_not_stored():
    """scores -> add of a -inf mask -> softmax -> matmul by v, stored in fp8_e4m3 (no
    infinities): the masked scores saturate to -448, as an fp8 store with satfinite does, so
    softmax still gives them zero weight (with the format's NaN on overflow the whole output
    would be NaN).  The same ops marked ``fused`` keep their float64 values (the softmax equal
    to the unstored one).  A stored output's error is counted in fp8 ulps: half at most.  (q,
    k and v, constants read as stored, are eighths: fp8 holds them.)"""
    rng = np.random.default_rng(23)
    q, k, v = (_grid_values(rng, (4, 8), 8) for _ in range(3))
    mask = np.where(np.tril(np.ones((4, 4))) > 0, 0.0, -np.inf)
    s = q @ k.T
    p = np.exp(s + mask - (s + mask).max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)

    def trace(fused):
        attrs = {"fused": True} if fused else {}
        return from_arrays({
            "scores": {"kind": "attention_scores", "a": q, "b": k.T, "attrs": attrs},
            "mask": {"kind": "add", "input": s, "other": mask, "output": s + mask,
                     "inputs_from": ["scores"], "attrs": attrs},
            "softmax": {"kind": "softmax", "input": s + mask, "output": p,
                        "inputs_from": ["mask"], "attrs": attrs},
            "relu": {"kind": "relu", "input": p, "output": p, "inputs_from": ["softmax"]},
            "pv": {"kind": "matmul", "a": p, "b": v, "inputs_from": ["relu"]}})

    exact = {"accumulator": "exact"}
    cfg = Config("fp32", "fp32", exact, storage="fp8_e4m3", name="fp8")
    plain = Config("fp32", "fp32", exact, name="plain")
    for fused in (False, True):
        df = replay(trace(fused), [cfg, plain], "propagated")
        out = df[df.role == "output"].set_index(["config", "op"])
        assert (out.sqnr_db > 20).all()          # no NaN, no overflow (plain: exact, inf)
        soft = out.loc[("fp8", "softmax")]
        if fused:       # scores, mask and softmax unrounded: the softmax is the exact one
            assert soft.sqnr_db == out.loc[("plain", "softmax"), "sqnr_db"]
        else:           # the stored scores, and the mask added to them exactly, in fp8 ulps
            for op in ("scores", "mask"):
                assert 0.3 < out.loc[("fp8", op), "max_ulp_error"] <= 0.5 + 1e-6
    assert formats.get("fp8_e4m3").quantize(np.array([-np.inf]), overflow="saturate")[0] == -448


def test_ops_that_only_move_values_are_not_stored_twice():
    """A slice of a linear's output stored in int8_tensor (one scale per tensor) keeps the
    stored values: quantizing the slice again would give it a scale of its own.  (x, a
    constant read as stored, holds integers up to 127: int8_tensor holds it exactly.)"""
    rng = np.random.default_rng(24)
    x = rng.integers(-127, 128, (6, 8)).astype(np.float64)
    x[0, 0] = 127
    w = rng.normal(size=(8, 8)).astype(np.float32).astype(np.float64)
    w[2:] *= 4                       # the largest values outside the slice: its scale differs
    y = (x @ w.T).astype(np.float32).astype(np.float64)        # the exact MAC's fp32 result
    trace = from_arrays({"fc": {"kind": "linear", "input": x, "weight": w, "output": y},
                         "cut": {"kind": "index", "input": y, "output": y[:, :2],
                                 "attrs": {"index": [[None] * 3, [None, 2, None]]},
                                 "inputs_from": ["fc"]}})
    df = replay(trace, [Config(storage="int8_tensor", mac={"accumulator": "exact"})],
                "propagated")
    cut = _row(df, "cut", "output")
    q = formats.get("int8_tensor")
    stored = q.quantize(y.astype(np.float32).astype(np.float64))
    assert cut["max_abs_error"] == np.max(np.abs(stored[:, :2] - y[:, :2]))
    assert cut["max_abs_error"] != np.max(np.abs(q.quantize(y[:, :2]) - y[:, :2]))


def test_constants_are_read_as_stored_in_propagated_mode():
    """With bf16 storage, values no recorded op made are read as stored (ml_dtypes' bf16
    cast): a KV cache's past entries (a concat's constant part), an op's input without a
    source and a MAC's; a single value (a scale) is a kernel argument and is not rounded.  In
    per-op mode every op reads what was captured."""
    rng = np.random.default_rng(31)

    def bf16(v):
        return np.asarray(v, np.float64).astype(ml_dtypes.bfloat16).astype(np.float64)

    x, w = _grid_values(rng, (3, 8)), _grid_values(rng, (8, 8))     # bf16 holds them
    past, h = rng.normal(size=(5, 8)), rng.normal(size=(4, 8))
    new = x @ w.T                                                     # exact in fp32
    third = np.array(1 / 3)
    trace = from_arrays({
        "k": {"kind": "linear", "input": x, "weight": w, "output": new},
        "cache": {"kind": "concat", "output": np.concatenate([past, new]),
                  "inputs_from": ["k"], "attrs": {"dim": 0, "sizes": [5, 3], "linked": [1]}},
        "relu": {"kind": "relu", "input": h, "output": np.maximum(h, 0)},
        "scale": {"kind": "mul", "input": np.maximum(h, 0), "other": third,
                  "output": np.maximum(h, 0) / 3, "inputs_from": ["relu"]},
        "fc": {"kind": "linear", "input": h, "weight": w, "output": h @ w.T}})
    cfg = Config("fp32", "fp32", {"accumulator": "exact"}, storage="bf16")
    out = replay(trace, cfg, "propagated").query("role == 'output'").set_index("op")
    stored = np.concatenate([bf16(past), bf16(new)])
    assert out.loc["cache", "max_abs_error"] == np.max(np.abs(stored - trace.op(
        "cache").tensors["output"]))
    assert np.max(np.abs(bf16(past) - past)) > out.loc["k", "max_abs_error"]
    assert out.loc["relu", "max_abs_error"] == np.max(np.abs(np.maximum(bf16(h), 0) -
                                                             np.maximum(h, 0)))
    scaled = bf16(np.maximum(bf16(h), 0) * third)                     # 1/3 as it is
    assert out.loc["scale", "max_abs_error"] == np.max(np.abs(scaled - np.maximum(h, 0) / 3))
    fc = bf16((bf16(h) @ w.T).astype(np.float32))
    assert out.loc["fc", "max_abs_error"] == pytest.approx(np.max(np.abs(fc - h @ w.T)),
                                                           rel=1e-12)
    per_op = replay(trace, cfg, "per-op").query("role == 'output'").set_index("op")
    fc_captured = bf16((h @ w.T).astype(np.float32))
    assert per_op.loc["fc", "max_abs_error"] == pytest.approx(
        np.max(np.abs(fc_captured - h @ w.T)), rel=1e-12)


@pytest.mark.parametrize("storage", ["mxfp8_e4m3", "int8_tensor", "nvfp4", "fp8_e4m3_128x128"])
def test_constants_keep_their_infinities_and_fit_any_storage(storage):
    """A float attention mask's -inf, read as stored, stays -inf (a scaled format would make
    its blocks NaN and the softmax all NaN); a 1-D constant (a bias added on its own) fits a
    tiled format as one row; an integer operand (an attention mask of 0s and 1s multiplied in)
    is read as captured, neither rounded nor priced as the storage format."""
    rng = np.random.default_rng(40)
    s = _grid_values(rng, (4, 64), 8)
    p = np.maximum(s, 0)
    mask = np.where(np.tril(np.ones((4, 64)), 40) > 0, 0.0, -np.inf)
    bias = rng.normal(size=64)
    keep = (rng.random((4, 64)) > 0.2).astype(np.int64)
    p = np.exp(p + mask - (p + mask).max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    trace = from_arrays({
        "relu": {"kind": "relu", "input": s, "output": np.maximum(s, 0)},
        "mask": {"kind": "add", "input": np.maximum(s, 0), "other": mask,     # in a kernel
                 "output": np.maximum(s, 0) + mask, "inputs_from": ["relu"],
                 "attrs": {"fused": True}},
        "soft": {"kind": "softmax", "input": np.maximum(s, 0) + mask, "output": p,
                 "inputs_from": ["mask"], "attrs": {"fused": True}},
        "bias": {"kind": "add", "input": p, "other": bias, "output": p + bias,
                 "inputs_from": ["soft"]},
        "keep": {"kind": "mul", "input": p + bias, "other": keep, "output": (p + bias) * keep,
                 "inputs_from": ["bias"]}})
    df = replay(trace, Config(storage=storage), "propagated").query("role == 'output'")
    out = df.set_index("op")
    assert "error" not in df or df.error.isna().all()
    assert (out.nan_count == 0).all() and out.loc["soft", "sqnr_db"] > 0
    n = 4 * 64
    moved = mm.memory_cost(storage, n, rows=4, channels=64, matrix=(4, 64)).energy_pj
    assert out.loc["keep", "memory_pj"] == pytest.approx(2 * moved + n * 64 * 20.0)
