"""The cost of the work between the MACs (mac_models.vector, graph_ops.work) and of fused
kernels' tensors kept on chip, as replay prices them.

Oracles: Horowitz's ISSCC 2014 table (fp16 / fp32 add 0.4 / 0.9 pJ, multiply 1.1 / 3.7 pJ,
DRAM 640 pJ per 32 bits), the step recipes stated in mac_models.vector, and counts derived by
hand from the algorithms graph_ops.work states.
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

import formats
import mac_models as mm
from mac_models.components import adder
from mac_models.technology import technology
from mac_models.vector import STEPS, step_energy_pj, vector_energy_pj
from simulator import graph_ops
from simulator.capture import from_arrays
from simulator.configs import Config
from simulator.replay import replay
from simulator.traces import Trace

DRAM = 640 / 32                     # pJ per bit


@pytest.mark.parametrize("fmt, add, mul", [("fp32", 0.9, 3.7), ("fp16", 0.4, 1.1)])
def test_adds_and_multiplies_are_horowitz_s(fmt, add, mul):
    assert step_energy_pj("add", fmt) == pytest.approx(add, rel=1e-12)
    assert step_energy_pj("compare", fmt) == pytest.approx(add, rel=1e-12)
    assert step_energy_pj("mul", fmt) == pytest.approx(mul, rel=1e-12)


@pytest.mark.parametrize("fmt, p, bits, e", [("fp32", 24, 32, 8), ("fp16", 11, 16, 5),
                                             ("bf16", 8, 16, 8)])
def test_divisions_roots_and_functions_follow_their_recipes(fmt, p, bits, e):
    """Newton–Raphson from a 4-bit seed: 3 iterations to fp32's 24 bits (4 -> 8 -> 16 -> 32),
    2 to fp16's 11, 1 to bf16's 8; functions a polynomial of degree ceil(p / 4) + 1."""
    add, mul = step_energy_pj("add", fmt), step_energy_pj("mul", fmt)
    seed = adder(bits).energy_pj
    its = {24: 3, 11: 2, 8: 1}[p]
    assert step_energy_pj("recip", fmt) == pytest.approx(seed + its * (2 * mul + add))
    assert step_energy_pj("div", fmt) == pytest.approx(seed + its * (2 * mul + add) + mul)
    assert step_energy_pj("rsqrt", fmt) == pytest.approx(seed + its * (3 * mul + add))
    assert step_energy_pj("sqrt", fmt) == pytest.approx(seed + its * (3 * mul + add) + mul)
    degree = {24: 7, 11: 4, 8: 3}[p]
    for f in ("exp", "log", "tanh", "erf"):
        assert step_energy_pj(f, fmt) == pytest.approx(
            (degree + 1) * (mul + add) + adder(e).energy_pj)


def test_steps_scale_with_the_node_and_sum():
    for step in STEPS:
        assert step_energy_pj(step, tech=7) == pytest.approx(
            step_energy_pj(step) * technology(7).energy_scale)
    assert vector_energy_pj({"add": 10, "exp": 2}, "fp16") == pytest.approx(
        10 * 0.4 + 2 * step_energy_pj("exp", "fp16"))
    assert vector_energy_pj({}) == 0.0


@pytest.mark.parametrize("call, match", [
    (lambda: step_energy_pj("add", "int8"), "float format"),
    (lambda: step_energy_pj("cosh"), "no vector step"),
    (lambda: vector_energy_pj({"add": -1}), ">= 0"),
    (lambda: vector_energy_pj({"add": math.nan}), ">= 0"),
    (lambda: vector_energy_pj({"add": True}), ">= 0")])
def test_bad_steps_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("kind, shapes, attrs, want", [
    # softmax of 6 rows of 4: per element max, subtract, exp, sum, multiply; per row 1 / sum
    ("softmax", {"input": (2, 3, 4), "output": (2, 3, 4)}, {},
     {"compare": 24, "add": 48, "exp": 24, "mul": 24, "recip": 6}),
    # layer norm of 10 rows of 8 with weight and bias: per element sum, subtract, sum of
    # squares, bias (4 adds), square, 1 / std, weight (3 multiplies); per row mean and
    # variance (2 multiplies by 1 / n), eps add, rsqrt
    ("layer_norm", {"input": (2, 5, 8), "weight": (8,), "bias": (8,), "output": (2, 5, 8)},
     {"normalized_shape": [8], "eps": 1e-5}, {"add": 330, "mul": 260, "rsqrt": 10}),
    ("rms_norm", {"input": (2, 5, 8), "weight": (8,), "output": (2, 5, 8)},
     {"normalized_shape": [8], "eps": 1e-5}, {"add": 90, "mul": 250, "rsqrt": 10}),
    ("rms_norm", {"input": (10, 8), "output": (10, 8)}, {"normalized_shape": [8], "eps": 0.0},
     {"add": 90, "mul": 170, "rsqrt": 10}),
    ("batch_norm", {"input": (2, 3, 4, 4), "running_mean": (3,), "running_var": (3,),
                    "output": (2, 3, 4, 4)}, {"eps": 1e-5},
     {"mul": 102, "add": 102, "rsqrt": 3}),
    ("mean", {"input": (4, 6), "output": (4,)}, {"dims": [1]}, {"add": 20, "mul": 4}),
    ("mean", {"input": (3, 0), "output": (3,)}, {"dims": [1]}, {"mul": 3}),   # nothing to add
    ("pool2d", {"input": (1, 1, 4, 4), "output": (1, 1, 2, 2)},
     {"mode": "max", "kernel": [2, 2]}, {"compare": 12}),
    ("pool2d", {"input": (1, 1, 4, 4), "output": (1, 1, 2, 2)},
     {"mode": "avg", "kernel": [2, 2]}, {"add": 12, "mul": 4}),
    # 5 into 2 windows: [0, 3) and [2, 5), 3 taps each way: 36 taps for 4 outputs
    ("adaptive_avg_pool2d", {"input": (1, 1, 5, 5), "output": (1, 1, 2, 2)}, {},
     {"add": 32, "mul": 4}),
    ("div", {"input": (3, 4), "other": (4,), "output": (3, 4)}, {}, {"div": 12}),
    ("sub", {"input": (3, 4), "other": (), "output": (3, 4)}, {}, {"add": 12}),
    ("gelu", {"input": (5,), "output": (5,)}, {"approximate": "tanh"},
     {"tanh": 5, "mul": 30, "add": 10}),
    ("gelu", {"input": (5,), "output": (5,)}, {}, {"erf": 5, "mul": 15, "add": 5}),
    ("silu", {"input": (5,), "output": (5,)}, {}, {"exp": 5, "add": 5, "recip": 5, "mul": 5}),
    ("pow", {"input": (5,), "output": (5,)}, {"exponent": 2}, {"mul": 5}),
    ("pow", {"input": (5,), "output": (5,)}, {"exponent": 1.5},
     {"exp": 5, "log": 5, "mul": 5}),
    ("clamp", {"input": (5,), "output": (5,)}, {"min": 0, "max": None}, {"compare": 5}),
    ("relu", {"input": (0, 3), "output": (0, 3)}, {}, {}),
    ("abs", {"input": (5,), "output": (5,)}, {}, {}),
    ("concat", {"output": (4, 3)}, {"dim": 0, "sizes": [2, 2], "linked": [0]}, {}),
    ("permute", {"input": (4, 3), "output": (3, 4)}, {"dims": [1, 0]}, {})])
def test_work_counts_the_steps_of_each_kind(kind, shapes, attrs, want):
    assert graph_ops.work(kind, shapes, attrs) == want


def test_every_kind_has_a_work_count():
    shapes = {"input": (1, 2, 4, 4), "other": (1, 2, 4, 4), "output": (1, 2, 4, 4),
              "running_mean": (2,), "running_var": (2,)}
    attrs = {"mode": "max", "kernel": [2, 2], "dims": [0, 1, 2, 3], "normalized_shape": [4],
             "eps": 0.0, "exponent": 3.0, "index": ["..."], "dim": 0, "sizes": [1],
             "linked": [0], "min": 0.0}
    for kind in graph_ops.KINDS:
        steps = graph_ops.work(kind, shapes, attrs)
        assert set(steps) <= set(STEPS), kind
        assert (not steps) == (kind in graph_ops.MOVERS + ("abs",)), kind


def _attention(fused: bool) -> object:
    """x -> q, k projections; k^T; scores; scale; softmax; p @ v (v a constant); relu."""
    rng = np.random.default_rng(5)
    x, wq, wk = rng.normal(size=(4, 8)), rng.normal(size=(8, 8)), rng.normal(size=(8, 8))
    v = rng.normal(size=(4, 8))
    q, k = x @ wq.T, x @ wk.T
    s = q @ k.T
    p = np.exp(s / 8 - (s / 8).max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    f = {"fused": True} if fused else {}
    return from_arrays({
        "q": {"kind": "linear", "input": x, "weight": wq, "output": q},
        "k": {"kind": "linear", "input": x, "weight": wk, "output": k},
        "kT": {"kind": "permute", "input": k, "output": k.T, "inputs_from": ["k"],
               "attrs": {"dims": [1, 0], **f}},
        "scores": {"kind": "attention_scores", "a": q, "b": k.T, "output": s,
                   "inputs_from": ["q", "kT"], "attrs": f},
        "scale": {"kind": "mul", "input": s, "other": np.array(1 / 8), "output": s / 8,
                  "inputs_from": ["scores"], "attrs": f},
        "softmax": {"kind": "softmax", "input": s / 8, "output": p, "inputs_from": ["scale"],
                    "attrs": f},
        "pv": {"kind": "matmul", "a": p, "b": v, "output": p @ v, "inputs_from": ["softmax"]},
        "relu": {"kind": "relu", "input": p @ v, "output": np.maximum(p @ v, 0),
                 "inputs_from": ["pv"]}})


@pytest.mark.parametrize("storage, bits", [(None, 32), ("bf16", 16)])
def test_ops_between_the_macs_pay_their_steps_and_traffic(storage, bits):
    """Unfused: a relu of 32 values reads and writes 32 values in the storage format (fp32
    without one) at 20 pJ a bit and compares each once (an fp32 add, 0.9 pJ), and rounds each
    into a bf16 store (an add and a compare: 1.8 pJ; nothing into fp32); the scale's scalar is
    a kernel argument, not read from memory; the k^T permute costs nothing itself."""
    df = replay(_attention(False), Config(mac={"accumulator": "exact"}, storage=storage),
                "propagated")
    out = df[df.role == "output"].set_index("op")
    relu = out.loc["relu"]
    rounding = 0.0 if storage is None else 2 * 0.9
    assert relu.memory_pj == pytest.approx(2 * 32 * bits * DRAM)
    assert relu.quantize_pj == pytest.approx(32 * rounding)
    assert relu.compute_pj == pytest.approx(32 * 0.9 + 32 * rounding)
    assert relu.total_pj == pytest.approx(relu.memory_pj + relu.compute_pj)
    assert out.loc["scale", "memory_pj"] == pytest.approx(2 * 16 * bits * DRAM)
    assert out.loc["scale", "compute_pj"] == pytest.approx(16 * 3.7 + 16 * rounding)
    assert out.loc["kT", ["compute_pj", "memory_pj", "total_pj"]].tolist() == [0, 0, 0]
    soft = out.loc["softmax"]
    assert soft.compute_pj == pytest.approx(vector_energy_pj(
        {"compare": 16, "add": 32, "exp": 16, "mul": 16, "recip": 4}) + 16 * rounding)


def test_a_fused_kernel_keeps_its_tensors_on_chip():
    """Fused (as capture marks what one scaled_dot_product_attention call computes but its
    output): the scores are not written, the scale and softmax move nothing, the output
    matmul reads its probabilities from the kernel; k^T is still read, from k in memory.
    Each MAC's memory is layer_cost's with exactly those tensors left out."""
    cfg = Config(mac={"accumulator": "exact"})
    for mode in ("per-op", "propagated"):
        fused = replay(_attention(True), cfg, mode)
        out = fused[fused.role == "output"].set_index("op")
        mac = cfg.build_mac()
        shape = mm.Matmul(4, 8, 4)
        a_fmt = {"out": "fp32"}
        scores = mm.layer_cost(shape, mac, a_fmt, on_chip={"out"})
        assert out.loc["scores", "memory_pj"] == pytest.approx(scores.memory_pj)
        assert set(scores.memory) == {"a", "b"}
        pv = mm.layer_cost(mm.Matmul(4, 4, 8), mac, a_fmt, on_chip={"a"})
        assert out.loc["pv", "memory_pj"] == pytest.approx(pv.memory_pj)
        if mode == "propagated":
            for op in ("scale", "softmax"):
                assert out.loc[op, "memory_pj"] == 0 < out.loc[op, "compute_pj"]
            plain = replay(_attention(False), cfg, mode)
            saved = plain[plain.role == "output"].total_pj.sum() - out.total_pj.sum()
            # unfused, the scores written, the scale's input and output, the softmax's input
            # and output, pv's a: 6 tensors of 16 fp32 values more
            assert saved == pytest.approx(6 * 16 * 32 * DRAM)


def test_layer_cost_on_chip_checks_its_keys():
    shape = mm.Matmul(2, 3, 4)
    with pytest.raises(ValueError, match="on_chip takes"):
        mm.layer_cost(shape, "int8->int32", on_chip={"c"})
    with pytest.raises(TypeError, match="collection"):
        mm.layer_cost(shape, "int8->int32", on_chip="out")
    whole = mm.layer_cost(shape, "int8->int32")
    kept = mm.layer_cost(shape, "int8->int32", on_chip=("a", "out"))
    assert kept.memory_pj == pytest.approx(whole.memory["b"].energy_pj)
    assert kept.compute_pj == whole.compute_pj


def _mlp(x, w1, w2, between):
    """linear -> the ops ``between`` (name: (kind, attrs, other or None)) in a chain -> linear,
    computed in float64 (the replay's reference: only its own rounding is measured)."""
    ops = {"fc1": {"kind": "linear", "input": x, "weight": w1, "output": x @ w1.T}}
    prev, y = "fc1", x @ w1.T
    for name, (kind, attrs, other) in between.items():
        z = graph_ops.evaluate(kind, {"input": y, **({"other": other} if other is not None
                                                      else {})}, y.shape, attrs)
        ops[name] = {"kind": kind, "input": y, "output": z, "inputs_from": [prev],
                     "attrs": attrs, **({"other": other} if other is not None else {})}
        prev, y = name, z
    ops["fc2"] = {"kind": "linear", "input": y, "weight": w2, "output": y @ w2.T,
                  "inputs_from": [prev]}
    return from_arrays(ops)


def test_an_epilogue_keeps_a_mac_output_its_one_elementwise_reader_takes():
    """fc1 -> mul by 3 -> relu -> fc2 in bf16 storage.  With fusion "epilogue" fc1's and the
    mul's outputs stay in fc1's epilogue: neither is rounded to bf16 (the relu's output is the
    bf16 cast, by ml_dtypes, of relu(3 * fp32(fc1))) nor moved; with "none" each is stored.
    The scalar 3 is a kernel's argument: not rounded, not read."""
    import ml_dtypes
    rng = np.random.default_rng(8)
    x, w1, w2 = rng.normal(size=(6, 8)), rng.normal(size=(8, 8)), rng.normal(size=(4, 8))
    trace = _mlp(x, w1, w2, {"mul": ("mul", {}, np.array(3.0)),
                             "relu": ("relu", {}, None)})
    exact = {"accumulator": "exact"}
    cfgs = [Config(mac=exact, storage="bf16", name="none"),
            Config(mac=exact, storage="bf16", fusion="epilogue", name="epilogue")]
    df = replay(trace, cfgs, "propagated")
    out = df[df.role == "output"].set_index(["config", "op"])
    def bf16(v):
        return v.astype(ml_dtypes.bfloat16).astype(np.float64)

    # fc1 reads its input, a constant, as stored: in bf16; its exact sums end in fp32
    fc1 = (bf16(x) @ w1.T.astype(np.float32).astype(np.float64)).astype(np.float32)

    want = {"none": bf16(np.maximum(bf16(3 * bf16(fc1)), 0)),
            "epilogue": bf16(np.maximum(3 * fc1, 0))}
    ref = trace.op("relu").tensors["output"]
    for name, y in want.items():
        assert out.loc[(name, "relu"), "max_abs_error"] == np.max(np.abs(y - ref))
    assert not np.array_equal(want["none"], want["epilogue"])
    n = 6 * 8
    fc1_none = out.loc[("none", "fc1"), "memory_pj"]
    kept = mm.layer_cost(mm.Matmul(6, 8, 8), cfgs[0].build_mac(), {"a": "bf16", "out": "bf16"},
                         on_chip={"out"})               # x read as stored: in bf16
    assert out.loc[("epilogue", "fc1"), "memory_pj"] == pytest.approx(kept.memory_pj)
    assert fc1_none - kept.memory_pj == pytest.approx(n * 16 * DRAM)
    # the mul reads nothing (its scalar is an argument); the relu writes its output only
    assert out.loc[("epilogue", "mul"), "memory_pj"] == 0
    assert out.loc[("epilogue", "relu"), "memory_pj"] == pytest.approx(n * 16 * DRAM)
    assert out.loc[("none", "relu"), "memory_pj"] == pytest.approx(2 * n * 16 * DRAM)
    for op in ("mul", "relu"):      # the arithmetic is the same, but the rounding to bf16
        assert out.loc[("epilogue", op), "compute_pj"] - out.loc[("epilogue", op), "quantize_pj"] \
            == out.loc[("none", op), "compute_pj"] - out.loc[("none", op), "quantize_pj"]
    assert out.loc[("epilogue", "mul"), "quantize_pj"] == 0       # kept: not rounded
    assert out.loc[("none", "mul"), "quantize_pj"] == pytest.approx(n * 2 * 0.9)


def test_an_epilogue_needs_the_one_reader_to_be_elementwise_and_direct():
    """A batch norm with running statistics fuses as the elementwise ops do.  No fusion where
    fc1's output has two readers (a relu and a residual add of it), or where a softmax (a row
    reduction) or a mover reads it.  An add of two MAC outputs fuses into the
    later MAC's epilogue, which reads the earlier one's from memory: as ``input`` or ``other``
    (``residual + o_proj(x)``, as Llama writes it).  Per-op mode fuses no epilogue: it runs no
    op to write its result."""
    rng = np.random.default_rng(9)
    x, w1, w2 = rng.normal(size=(4, 8)), rng.normal(size=(8, 8)), rng.normal(size=(3, 8))
    cfg = Config(mac={"accumulator": "exact"}, fusion="epilogue", name="epilogue")
    plain = replace(cfg, fusion="none", name="none")

    def memory(trace):
        df = replay(trace, [cfg, plain], "propagated")
        return df[df.role == "output"].set_index(["op", "config"]).memory_pj.unstack()

    def fused_ops(trace):
        m = memory(trace)
        return sorted(m.index[m["epilogue"] != m["none"]])

    assert fused_ops(_mlp(x, w1, w2, {"relu": ("relu", {}, None)})) == ["fc1", "relu"]
    mean, var = rng.normal(size=8), rng.uniform(0.5, 2.0, size=8)
    y = x @ w1.T
    bn = (y - mean) / np.sqrt(var + 1e-5)          # a batch norm is a per-channel scale + shift
    assert fused_ops(from_arrays({
        "fc1": {"kind": "linear", "input": x, "weight": w1, "output": y},
        "bn": {"kind": "batch_norm", "input": y, "running_mean": mean, "running_var": var,
               "output": bn, "inputs_from": ["fc1"], "attrs": {"eps": 1e-5}},
        "relu": {"kind": "relu", "input": bn, "output": np.maximum(bn, 0), "inputs_from": ["bn"]},
        "fc2": {"kind": "linear", "input": np.maximum(bn, 0), "weight": w2,
                "output": np.maximum(bn, 0) @ w2.T, "inputs_from": ["relu"]}})) == \
        ["bn", "fc1", "relu"]
    assert fused_ops(_mlp(x, w1, w2, {"soft": ("softmax", {}, None)})) == []
    assert fused_ops(_mlp(x, w1, w2, {"flip": ("permute", {"dims": [0, 1]}, None)})) == []
    y = x @ w1.T
    r = np.maximum(y, 0)
    assert fused_ops(from_arrays({
        "fc1": {"kind": "linear", "input": x, "weight": w1, "output": y},
        "relu": {"kind": "relu", "input": y, "output": r, "inputs_from": ["fc1"]},
        "res": {"kind": "add", "input": r, "other": y, "output": r + y,
                "inputs_from": ["relu", "fc1"]}})) == []
    w0 = w1[::-1].copy()
    z = x @ w0.T
    for first, second in (("fc0", "fc1"), ("fc1", "fc0")):   # either feeds the add's input
        out = {"fc0": z, "fc1": y}
        trace = from_arrays({
            "fc0": {"kind": "linear", "input": x, "weight": w0, "output": z},
            "fc1": {"kind": "linear", "input": x, "weight": w1, "output": y},
            "add": {"kind": "add", "input": out[first], "other": out[second],
                    "output": z + y, "inputs_from": [first, second]}})
        m = memory(trace)
        assert sorted(m.index[m["epilogue"] != m["none"]]) == ["add", "fc1"]
        assert m.loc["fc1", "none"] - m.loc["fc1", "epilogue"] == pytest.approx(32 * 32 * DRAM)
    per_op = replay(trace, [cfg, plain], "per-op").query("role == 'output'")
    assert (per_op.groupby("op").memory_pj.nunique() == 1).all()


def test_fusion_is_a_config_field_that_names_and_keys_it():
    plain, fused = Config("fp16", "fp16"), Config("fp16", "fp16", fusion="epilogue")
    assert fused.name == "fp16|fp32,fuse:epilogue" and plain.name == "fp16|fp32"
    assert fused.key() != plain.key() and fused.as_dict()["fusion"] == "epilogue"
    assert Config("fp16", "fp16", storage="none", gradients="none", fusion=None) == \
        Config("fp16", "fp16")                   # as the command line and TOML spell them
    with pytest.raises(ValueError, match="fusion must be one of none, epilogue"):
        Config(fusion="all")


def test_each_tensor_moves_in_the_format_its_values_are_kept_in():
    """Without a storage format a tensor moves in the activation format (fp8: 8 bits) where
    MACs alone read it, since each quantizes it to that format anyway; where another op reads
    it too, in fp32 (32 bits), as replay keeps its values.  The graph: fc1 -> relu -> fc2
    (fc2's output read only through a permute, by the matmul), the relu's output also read by
    an add of a constant, whose output only the matmul reads; the matmul's output, which
    nothing reads, is the model's.  A constant moves in the activation format where a MAC reads
    it (fc1's input) and in fp32 where another op does (the add's).  With a storage format every
    tensor moves in it, and a parameter in its captured dtype (a layer norm's float32 weight)."""
    rng = np.random.default_rng(12)
    x, w1, w2 = rng.normal(size=(4, 8)), rng.normal(size=(8, 8)), rng.normal(size=(8, 8))
    c = rng.normal(size=(4, 8))
    h = x @ w1.T
    r = np.maximum(h, 0)
    y, z = r @ w2.T, r + c
    trace = from_arrays({
        "fc1": {"kind": "linear", "input": x, "weight": w1, "output": h},
        "relu": {"kind": "relu", "input": h, "output": r, "inputs_from": ["fc1"]},
        "fc2": {"kind": "linear", "input": r, "weight": w2, "output": y, "inputs_from": ["relu"]},
        "add": {"kind": "add", "input": r, "other": c, "output": z, "inputs_from": ["relu"]},
        "yT": {"kind": "permute", "input": y, "output": y.T, "attrs": {"dims": [1, 0]},
               "inputs_from": ["fc2"]},
        "mm": {"kind": "matmul", "a": z, "b": y.T, "output": z @ y.T,
               "inputs_from": ["add", "yT"]}})
    cfg = Config("fp8_e4m3", "fp8_e4m3", "fp8_e4m3->fp32")
    out = replay(trace, cfg, "propagated").query("role == 'output'").set_index("op")
    n, mac = 4 * 8, cfg.build_mac()
    fc1 = mm.layer_cost(mm.Matmul(4, 8, 8), mac, {"out": "fp32"})
    assert fc1.memory["a"].bits == n * 8 and fc1.memory["out"].bits == n * 32
    assert out.loc["fc1", "memory_pj"] == fc1.memory_pj
    assert out.loc["relu", "memory_pj"] == pytest.approx((n * 32 + n * 32) * DRAM)
    fc2 = mm.layer_cost(mm.Matmul(4, 8, 8), mac, {"a": "fp32", "out": "fp8_e4m3"})
    assert out.loc["fc2", "memory_pj"] == fc2.memory_pj
    assert out.loc["add", "memory_pj"] == pytest.approx((n * 32 + n * 32 + n * 8) * DRAM)
    assert out.loc["yT", "memory_pj"] == 0
    matmul = mm.layer_cost(mm.Matmul(4, 8, 4), replace(mac, b_format="fp8_e4m3", name=""),
                           {"out": "fp32"})
    assert matmul.memory["b"].bits == n * 8
    assert out.loc["mm", "memory_pj"] == matmul.memory_pj
    stored = replay(trace, replace(cfg, storage="bf16", name=""), "propagated").query(
        "role == 'output'").set_index("op")
    assert stored.loc["relu", "memory_pj"] == pytest.approx(2 * n * 16 * DRAM)
    assert stored.loc["add", "memory_pj"] == pytest.approx(3 * n * 16 * DRAM)
    g = rng.uniform(0.5, 1.5, 8).astype(np.float32)
    v = x - x.mean(-1, keepdims=True)
    v = v / np.sqrt((v ** 2).mean(-1, keepdims=True) + 1e-5) * g
    ln = from_arrays({"ln": {"kind": "layer_norm", "input": x, "weight": g, "output": v,
                             "attrs": {"normalized_shape": [8], "eps": 1e-5}}})
    row = replay(ln, Config(storage="bf16"), "propagated").query("role == 'output'").iloc[0]
    assert row.memory_pj == pytest.approx((2 * n * 16 + 8 * 32) * DRAM)


def test_a_tiled_storage_format_pays_each_tile_s_scale():
    """fp8 128x128 tiles over a (4, 1, 256) tensor: each of the 4 (1, 256) matrices takes two
    tiles, so 8 fp32 scales, as encode stores them, besides the 1024 8-bit elements."""
    x = np.random.default_rng(13).normal(size=(4, 1, 256))
    st = formats.get("fp8_e4m3_128x128").encode(x)
    bits = x.size * 8 + st.scales.size * 32
    assert st.scales.size == 8
    t = from_arrays({"relu": {"kind": "relu", "input": x, "output": np.maximum(x, 0)}})
    row = replay(t, Config(storage="fp8_e4m3_128x128"), "propagated").query(
        "role == 'output'").iloc[0]
    assert row.memory_pj == pytest.approx(2 * bits * DRAM)
    empty = from_arrays({"relu": {"kind": "relu", "input": np.zeros((3, 0)),
                                  "output": np.zeros((3, 0))},
                         "mean": {"kind": "mean", "input": np.zeros((3, 0)),
                                  "output": np.full(3, np.nan), "inputs_from": ["relu"],
                                  "attrs": {"dims": [1]}}})
    rows = replay(empty, Config(storage="int8_channel"), "propagated").query("role == 'output'")
    assert "error" not in rows or rows.error.isna().all()
    assert rows.set_index("op").loc["relu", "total_pj"] == 0      # nothing moves, no scales


def test_a_mask_attr_names_where_the_mask_came_from():
    x = np.zeros((2, 2))
    with pytest.raises(ValueError, match="mask must be one of causal, bool"):
        from_arrays({"add": {"kind": "add", "input": x, "other": x, "output": x,
                             "attrs": {"mask": "float"}}})


def test_the_command_line_offers_every_fusion():
    from simulator.cli import build_parser
    from simulator.configs import FUSIONS
    replay_parser = build_parser()._subparsers._group_actions[0].choices["replay"]
    fusion = next(a for a in replay_parser._actions if a.dest == "fusion")
    assert tuple(fusion.choices) == FUSIONS


QUANTIZED = ("bf16", "fp8_e4m3", "int4", "posit8_0", "int8_tensor", "int8_channel", "mxfp4",
             "mxint8", "nvfp4", "nf4_g64", "uint8_tensor", "fp8_e4m3_128x128")


@pytest.mark.parametrize("fmt", QUANTIZED)
def test_quantize_work_follows_its_recipe(fmt):
    """The steps of mac_models.vector's stated recipe, with the count of scales taken from
    what the format's own encoder makes of a (3, 2, 256) tensor (groups along the last axis,
    tiles over the last two): per element a rounding add and a range compare (a codebook of
    16 levels: 4 compares); per group an amax (a compare per element) and either an exponent
    subtraction (e8m0 scales) or a division, a rounding and a reciprocal; per element an
    exponent add or a multiply; a zero point's minimum and add; a tensor scale's amax pass, its
    division and a multiply per block scale.  Nothing into fp32, the vector format itself."""
    from mac_models.vector import quantize_work
    shape = (3, 2, 256)
    x = np.random.default_rng(14).normal(size=shape)
    f, n = formats.get(fmt), x.size
    want = {"compare": 4 * n} if fmt == "nf4_g64" else {"add": n, "compare": n}
    if isinstance(f, formats.ScaledFormat):
        s = f.encode(x).scales.size
        want["compare"] += n * (1 + f.zero_point + f.tensor_scale)
        if f.scale.name == "e8m0":
            want["add"] = want.get("add", 0) + s + n
        else:
            want.update({"div": s + f.tensor_scale, "recip": s,
                         "add": want.get("add", 0) + s + f.zero_point * n,
                         "mul": n + f.tensor_scale * s})
    assert quantize_work(fmt, shape) == want
    assert quantize_work("fp32", shape) == {} and quantize_work(fmt, (0, 4)) == {}


def test_replay_charges_the_quantizing_where_it_happens():
    """fp8 activations, fused attention: q's and k's outputs, read by MACs alone, are written
    in fp8 (their linears quantize them); the scores stay in the kernel, unquantized, so the
    product by v quantizes its probabilities (4 x 4) as it reads them; v, a constant, and the
    inputs are stored in fp8 already; the relu's output, the model's, stays fp32.  With a bf16
    store every op rounds its output to bf16 and each MAC converts its operands to fp8.
    Weights are quantized offline: never charged.  A linear's bias adds an fp32 add per
    output."""
    from mac_models.vector import quantize_work

    def pj(fmt, shape):
        return vector_energy_pj(quantize_work(fmt, shape))

    cfg = Config("fp8_e4m3", "fp8_e4m3", {"accumulator": "exact"})
    out = replay(_attention(True), cfg, "propagated").query("role == 'output'").set_index("op")
    want = {"q": pj("fp8_e4m3", (4, 8)), "k": pj("fp8_e4m3", (4, 8)), "scores": 0.0,
            "pv": pj("fp8_e4m3", (4, 4)), "relu": 0.0, "scale": 0.0, "softmax": 0.0}
    assert out.quantize_pj.drop("kT").to_dict() == pytest.approx(want)
    stored = replay(_attention(False), replace(cfg, storage="bf16", name=""), "propagated")
    got = stored.query("role == 'output'").set_index("op").quantize_pj
    assert got["q"] == pytest.approx(pj("bf16", (4, 8)) + pj("fp8_e4m3", (4, 8)))   # x in bf16
    assert got["scores"] == pytest.approx(pj("bf16", (4, 4)) + pj("fp8_e4m3", (4, 8)) * 2)
    assert got["pv"] == pytest.approx(pj("bf16", (4, 8)) + pj("fp8_e4m3", (4, 4)) +
                                      pj("fp8_e4m3", (4, 8)))
    x, w, b = np.ones((5, 8)), np.ones((3, 8)), np.ones(3)
    lin = from_arrays({"fc": {"kind": "linear", "input": x, "weight": w, "bias": b,
                              "output": x @ w.T + b}})
    row = replay(lin, Config(), "per-op").query("role == 'output'").iloc[0]
    plain = mm.layer_cost(mm.Matmul(5, 8, 3), Config().build_mac(), {"out": "fp32"})
    assert row.compute_pj == pytest.approx(plain.compute_pj + 15 * 0.9)
    assert row.quantize_pj == 0


@pytest.mark.parametrize("also_read", [False, True])
def test_a_kv_cache_concat_moves_as_its_readers_keep_it(also_read):
    """k = linear(x) joined to a constant past (6 rows) by a concat, read by the scores
    (cache @ q^T): the concat is a view of one tensor with k, which MACs alone read, so k is
    written, and the whole cache read, in fp8 (8 bits).  Where a relu reads the cache too, the
    tensor moves in fp32 (32 bits): k's write and the scores' read of all 10 rows."""
    rng = np.random.default_rng(15)
    x, w, past, q = (rng.normal(size=s) for s in ((4, 8), (8, 8), (6, 8), (8, 3)))
    k = x @ w.T
    cache = np.concatenate([past, k])
    ops = {"k": {"kind": "linear", "input": x, "weight": w, "output": k},
           "cache": {"kind": "concat", "output": cache, "inputs_from": ["k"],
                     "attrs": {"dim": 0, "sizes": [6, 4], "linked": [1]}},
           "scores": {"kind": "matmul", "a": cache, "b": q, "output": cache @ q,
                      "inputs_from": ["cache"]}}
    if also_read:
        ops["relu"] = {"kind": "relu", "input": cache, "output": np.maximum(cache, 0),
                       "inputs_from": ["cache"]}
    trace = from_arrays(ops)
    cfg = Config("fp8_e4m3", "fp8_e4m3", {"accumulator": "exact"})
    out = replay(trace, cfg, "propagated").query("role == 'output'").set_index("op")
    fmt, bits = ("fp32", 32) if also_read else ("fp8_e4m3", 8)
    mac = cfg.build_mac()
    k_cost = mm.layer_cost(mm.Matmul(4, 8, 8), mac, {"out": fmt})
    assert k_cost.memory["out"].bits == 4 * 8 * bits
    assert out.loc["k", "memory_pj"] == k_cost.memory_pj
    scores = mm.layer_cost(mm.Matmul(10, 8, 3), replace(mac, b_format="fp8_e4m3", name=""),
                           {"a": fmt, "out": "fp32"})
    assert scores.memory["a"].bits == 10 * 8 * bits
    assert out.loc["scores", "memory_pj"] == scores.memory_pj


def test_the_model_s_output_is_written_in_fp32_whatever_reads_it():
    """fc1 -> relu -> fc2, fp8.  The relu's output, which only fc2 reads, moves in fp8; named
    the model's output (the trace's meta ``output``: the model returns it, replay scores it
    unrounded) it is written in fp32.  Under epilogue fusion fc1's output stays in its epilogue
    (the relu its one reader); named the model's output it is written, in fp32, and the relu
    reads it back."""
    rng = np.random.default_rng(16)
    x, w1, w2 = rng.normal(size=(4, 8)), rng.normal(size=(8, 8)), rng.normal(size=(3, 8))
    ops = _mlp(x, w1, w2, {"relu": ("relu", {}, None)}).ops
    cfg = Config("fp8_e4m3", "fp8_e4m3", {"accumulator": "exact"})
    n = 4 * 8

    def memory(output, fusion):
        trace = Trace(ops, meta={"output": output} if output else None)
        df = replay(trace, replace(cfg, fusion=fusion, name=""), "propagated")
        return df.query("role == 'output'").set_index("op").memory_pj

    assert memory(None, "none")["relu"] == pytest.approx((n * 32 + n * 8) * DRAM)
    assert memory("relu", "none")["relu"] == pytest.approx((n * 32 + n * 32) * DRAM)
    fused, returned = memory(None, "epilogue"), memory("fc1", "epilogue")
    assert fused["relu"] == pytest.approx(n * 8 * DRAM)
    assert returned["relu"] == pytest.approx((n * 32 + n * 8) * DRAM)
    assert returned["fc1"] - fused["fc1"] == pytest.approx(n * 32 * DRAM)
