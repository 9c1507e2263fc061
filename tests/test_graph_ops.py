"""The ops between the MACs (simulator.graph_ops) against PyTorch's own, in float64.

The oracle is PyTorch (an optional extra: skipped without torch): each kind's float64 result
must equal torch's on the same float64 input to within a few ulps (bit for bit where the
result is a selection: max pooling, indexing, permutes), and the output shape that trace
validation demands must be torch's, over an exhaustive grid of small pooling parameters.
"""
import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is an optional extra (pip install torch)")
F = torch.nn.functional

from simulator import graph_ops  # noqa: E402
from simulator.capture import from_arrays  # noqa: E402
from simulator.traces import TraceError  # noqa: E402

RNG = np.random.default_rng(11)


def _run(kind, x, shape, attrs=None, **t):
    return graph_ops.evaluate(kind, {"input": x, **t}, shape, attrs or {})


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


@pytest.mark.parametrize("kind, fn", [("silu", F.silu), ("sigmoid", torch.sigmoid),
                                      ("tanh", torch.tanh), ("relu", torch.relu)])
def test_unary_ops_are_torchs(kind, fn):
    x = np.concatenate([RNG.normal(0, 4, 500), [0.0, -0.0, 800.0, -800.0, 1e-300, np.inf,
                                                   -np.inf, np.nan]])
    got, want = _run(kind, x, x.shape), fn(_t(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=4e-16, atol=0)
    assert np.array_equal(np.isnan(got), np.isnan(want))


@pytest.mark.parametrize("kind, attrs, fn", [
    ("exp", {}, torch.exp), ("log", {}, torch.log), ("sqrt", {}, torch.sqrt),
    ("rsqrt", {}, torch.rsqrt), ("abs", {}, torch.abs), ("erf", {}, torch.erf),
    ("pow", {"exponent": 2}, lambda x: torch.pow(x, 2)),      # (±0.5: torch's sqrt and rsqrt,
    ("pow", {"exponent": 1.5}, lambda x: x ** 1.5),            # not C's pow, which pow is:
    ("pow", {"exponent": -2}, lambda x: x ** -2),              # checked against onnxruntime)
    ("pow", {"exponent": 3.0}, lambda x: x.pow(3.0)),
    ("clamp", {"min": 0.0, "max": 6.0}, F.relu6),
    ("clamp", {"min": -1, "max": 1}, F.hardtanh),
    ("clamp", {"min": None, "max": 0.5}, lambda x: torch.clamp(x, max=0.5)),
    ("clamp", {"min": -2.0}, lambda x: x.clamp(min=-2.0))])
def test_more_unary_ops_are_torchs(kind, attrs, fn):
    """Negative, zero and huge inputs included: log/sqrt of a negative is NaN, rsqrt(0) inf,
    exp(800) inf, clamp keeps NaN; each as torch gives it."""
    x = np.concatenate([RNG.normal(0, 4, 500), RNG.uniform(0, 3, 100), [
        0.0, -0.0, 800.0, -800.0, 1e-300, np.inf, -np.inf, np.nan]])
    got, want = _run(kind, x, x.shape, attrs), fn(_t(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=4e-16, atol=0)
    assert np.array_equal(np.isnan(got), np.isnan(want))


@pytest.mark.parametrize("ns, weighted, eps", [((6,), True, 1e-6), ((4, 6), True, 1e-5),
                                               ((6,), False, 0.0)])
def test_rms_norm_is_torchs(ns, weighted, eps):
    x = RNG.normal(0.5, 2, size=(2, 4, 6))
    w = RNG.normal(size=ns) if weighted else None
    got = _run("rms_norm", x, x.shape, {"normalized_shape": list(ns), "eps": eps},
               **({"weight": w} if weighted else {}))
    want = F.rms_norm(_t(x), ns, None if w is None else _t(w), eps).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("shapes, dim", [([(2, 1, 3), (2, 4, 3)], 1), ([(5,), (0,), (2,)], 0),
                                         ([(2, 3, 1), (2, 3, 2), (2, 3, 1)], 2)])
def test_concat_is_torch_cat_with_constant_parts_from_the_captured_output(shapes, dim):
    parts = [RNG.normal(size=s) for s in shapes]
    want = torch.cat([_t(p) for p in parts], dim).numpy()
    sizes = [s[dim] for s in shapes]
    for linked in itertools.chain.from_iterable(
            itertools.combinations(range(len(parts)), n) for n in range(len(parts) + 1)):
        attrs = {"dim": dim, "sizes": sizes, "linked": list(linked)}
        assert graph_ops.concat_parts(want.shape, attrs) == [tuple(s) for s in shapes]
        captured = want.copy()
        for i in linked:                     # what a linked part held at capture is not read
            captured[(slice(None),) * dim + (slice(sum(sizes[:i]), sum(sizes[:i + 1])),)] = 9
        got = graph_ops.concat(captured, [parts[i] for i in linked], attrs)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("kind, fn", [("add", torch.add), ("sub", torch.sub),
                                      ("mul", torch.mul), ("div", torch.div)])
def test_binary_ops_broadcast_as_torch(kind, fn):
    a, b = RNG.normal(size=(3, 1, 5)), RNG.normal(size=(4, 1))
    b[0, 0] = 0.0                                          # x / 0: inf, as torch gives
    got = _run(kind, a, None, other=b)
    assert got.shape == (3, 4, 5)
    np.testing.assert_array_equal(got, fn(_t(a), _t(b)).numpy())


@pytest.mark.parametrize("ns, affine", [((6,), True), ((4, 6), True), ((6,), False)])
def test_layer_norm_is_torchs(ns, affine):
    x = RNG.normal(3, 2, size=(2, 4, 6))
    w, b = (RNG.normal(size=ns), RNG.normal(size=ns)) if affine else (None, None)
    extra = {"weight": w, "bias": b} if affine else {}
    got = _run("layer_norm", x, x.shape, {"normalized_shape": list(ns), "eps": 1e-5}, **extra)
    want = F.layer_norm(_t(x), ns, None if w is None else _t(w), None if b is None else _t(b),
                        1e-5).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("shape", [(5, 3), (2, 3, 4, 5)])
def test_batch_norm_inference_is_torchs(shape):
    x = RNG.normal(size=shape)
    mean, var = RNG.normal(size=3), RNG.uniform(0.1, 2, 3)
    w, b = RNG.normal(size=3), RNG.normal(size=3)
    for affine in (True, False):
        extra = {"weight": w, "bias": b} if affine else {}
        got = _run("batch_norm", x, x.shape, {"eps": 1e-3}, running_mean=mean,
                   running_var=var, **extra)
        want = F.batch_norm(_t(x), _t(mean), _t(var), _t(w) if affine else None,
                            _t(b) if affine else None, False, 0.1, 1e-3).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-14)


def test_mean_permute_expand_and_index_are_torchs():
    x = RNG.normal(size=(2, 3, 4, 5))
    for dims, keep in (([2, 3], False), ([1], True), ([0, 1, 2, 3], False)):
        np.testing.assert_allclose(_run("mean", x, None, {"dims": dims, "keepdim": keep}),
                                   _t(x).mean(dims, keepdim=keep).numpy(),
                                   rtol=1e-13, atol=1e-15)     # summed in another order
    assert np.array_equal(_run("permute", x, None, {"dims": [0, 2, 3, 1]}),
                          _t(x).permute(0, 2, 3, 1).numpy())
    y = _t(x[:, :, :1])
    assert np.array_equal(_run("expand", x[:, :, :1], (2, 3, 6, 5)),
                          y.expand(2, 3, 6, 5).numpy())
    t = _t(x)
    for key, entries in (
            ((slice(None), 0), [[None, None, None], 0]),
            ((Ellipsis, slice(1, None, 2), None, -1), ["...", [1, None, 2], None, -1]),
            ((1, slice(-2, 9), slice(None, None, 3)), [1, [-2, 9, None], [None, None, 3]])):
        assert np.array_equal(_run("index", x, None, {"index": entries}), t[key].numpy())


POOLS = [dict(mode="max", kernel=[3, 3], stride=[2, 2], padding=[1, 1], dilation=[1, 1],
              ceil_mode=False),
         dict(mode="max", kernel=[2, 3], stride=[2, 1], padding=[1, 0], dilation=[2, 1],
              ceil_mode=True),
         dict(mode="avg", kernel=[3, 3], stride=[2, 2], padding=[1, 1], ceil_mode=True,
              count_include_pad=True, divisor_override=None),
         dict(mode="avg", kernel=[3, 2], stride=[2, 3], padding=[1, 1], ceil_mode=True,
              count_include_pad=False, divisor_override=None),
         dict(mode="avg", kernel=[2, 2], stride=[1, 2], padding=[0, 1], ceil_mode=False,
              count_include_pad=True, divisor_override=3)]


def _torch_pool(x, a):
    if a["mode"] == "max":
        return F.max_pool2d(x, a["kernel"], a["stride"], a["padding"], a["dilation"],
                            a["ceil_mode"])
    return F.avg_pool2d(x, a["kernel"], a["stride"], a["padding"], a["ceil_mode"],
                        a["count_include_pad"], a["divisor_override"])


@pytest.mark.parametrize("attrs", POOLS)
def test_pool2d_is_torchs(attrs):
    x = RNG.normal(size=(2, 3, 7, 9))
    want = _torch_pool(_t(x), attrs).numpy()
    got = _run("pool2d", x, want.shape, attrs)
    np.testing.assert_allclose(got, want, rtol=2e-16, atol=0)
    problem = graph_ops.shape_problem("pool2d", {"input": x.shape, "output": want.shape}, attrs)
    assert problem == ""


def test_pool2d_is_torchs_exhaustively_on_small_inputs():
    """Every (length, kernel, stride, padding, dilation, ceil_mode) with length up to 9,
    kernel up to 4, stride up to 3, dilation up to 2: validation demands torch's output size
    and refuses what torch refuses; max pooling (and average pooling, at dilation 1, with and
    without the padding counted) gives torch's values."""
    checked = 0
    for n, k, s, d, ceil in itertools.product(range(1, 10), range(1, 5), range(1, 4), (1, 2),
                                              (False, True)):
        for p in range(k // 2 + 1):
            x = RNG.normal(size=(1, 2, 2, n))
            modes = [dict(mode="max", dilation=[1, d])] + [
                dict(mode="avg", count_include_pad=c) for c in (False, True) if d == 1]
            for extra in modes:
                attrs = dict(kernel=[1, k], stride=[1, s], padding=[0, p], ceil_mode=ceil,
                             **extra)
                try:
                    want = _torch_pool(_t(x), {"dilation": [1, 1],
                                               "divisor_override": None, **attrs}).numpy()
                except RuntimeError:
                    want = None
                out = (1, 2, 2, 0) if want is None else want.shape
                problem = graph_ops.shape_problem("pool2d", {"input": x.shape, "output": out},
                                                  attrs)
                assert (problem == "") == (want is not None), (n, k, s, p, d, ceil, extra)
                if want is not None:
                    np.testing.assert_allclose(_run("pool2d", x, out, attrs), want, rtol=3e-16)
                    checked += 1
    assert checked > 1000


@pytest.mark.parametrize("hw, out", [((7, 5), (3, 2)), ((4, 4), (6, 5)), ((5, 6), (1, 1))])
def test_adaptive_avg_pool2d_is_torchs(hw, out):
    x = RNG.normal(size=(2, 3) + hw)
    want = F.adaptive_avg_pool2d(_t(x), out).numpy()
    np.testing.assert_allclose(_run("adaptive_avg_pool2d", x, want.shape), want, rtol=1e-14,
                               atol=1e-16)               # sums in another order


@pytest.mark.parametrize("kind, tensors, attrs, words", [
    ("permute", {"input": np.ones((2, 3))}, {"dims": [0, 0]}, ["distinct axes"]),
    ("permute", {"input": np.ones((2, 3))}, {"dims": [1]}, ["all 2 axes"]),
    ("index", {"input": np.ones((2, 3))}, {"index": [[0, 1, 0]]}, ["step not 0"]),
    ("index", {"input": np.ones((2, 3))}, {"index": [5]}, ["does not apply"]),
    ("add", {"input": np.ones((2, 3)), "other": np.ones(4)}, {}, ["do not broadcast"]),
    ("add", {"input": np.ones((2, 3))}, {}, ["'other'"]),
    ("layer_norm", {"input": np.ones((2, 3))}, {"normalized_shape": [2], "eps": 1e-5},
     ["last axes"]),
    ("layer_norm", {"input": np.ones((2, 3))}, {"normalized_shape": [3], "eps": "x"}, ["eps"]),
    ("batch_norm", {"input": np.ones((2, 3)), "running_mean": np.ones(2),
                    "running_var": np.ones(3)}, {"eps": 1e-5}, ["one value per channel"]),
    ("mean", {"input": np.ones((2, 3))}, {"dims": [2]}, ["distinct axes"]),
    ("pool2d", {"input": np.ones((1, 1, 4, 4))}, {"mode": "max", "kernel": [2, 2],
                                                  "padding": [2, 2]}, ["half the kernel"]),
    ("pool2d", {"input": np.ones((1, 1, 4, 4))}, {"mode": "min", "kernel": [2, 2]}, ["mode"]),
    ("pool2d", {"input": np.ones((1, 1, 4, 4))}, {"mode": "max", "kernel": [2, 2],
                                                  "strides": [1, 1]}, ["unknown attrs"]),
    ("expand", {"input": np.ones((2, 3))}, {}, ["broadcast"]),
    ("gelu", {"input": np.ones((4, 3))}, {"approximate": "fast"}, ["'none' or 'tanh'"]),
    ("softmax", {"input": np.ones((4, 3))}, {"dim": 0}, ["unknown attrs"]),
    ("softmax", {"input": np.ones((4, 3))}, {"safe": 1}, ["true or false"]),
    ("adaptive_avg_pool2d", {"input": np.ones((1, 1, 0, 3))}, {}, ["H and W at least 1"]),
    ("pow", {"input": np.ones((4, 3))}, {}, ["exponent must be a number"]),
    ("pow", {"input": np.ones((4, 3))}, {"exponent": "2"}, ["exponent must be a number"]),
    ("clamp", {"input": np.ones((4, 3))}, {"min": "0"}, ["numbers or null"]),
    ("rms_norm", {"input": np.ones((2, 3))}, {"normalized_shape": [2], "eps": 1e-5},
     ["last axes"]),
    ("rms_norm", {"input": np.ones((2, 3)), "bias": np.ones(3)},
     {"normalized_shape": [3], "eps": 1e-5}, ["tensor role 'bias'"]),
    ("concat", {}, {"dim": 0, "sizes": [1, 1], "linked": []}, ["add up"]),
    ("concat", {}, {"dim": 1, "sizes": [1], "linked": []}, ["axis of the 1-D output"]),
    ("concat", {}, {"dim": 0, "sizes": [0, 1], "linked": [1, 1]}, ["increasing indices"]),
    ("concat", {}, {"dim": 0, "sizes": [0, 1], "linked": [2]}, ["increasing indices"]),
    ("concat", {}, {"dim": 0, "sizes": [1], "linked": [0], "axis": 0}, ["unknown attrs"]),
    ("relu", {"input": np.ones(1)}, {"fused": 1}, ["fused must be true or false"]),
    ("attention_scores", {"a": np.ones((2, 2)), "b": np.ones((2, 2))}, {"fused": "true"},
     ["fused must be true or false"]),
])
def test_bad_ops_are_refused_with_a_reason(kind, tensors, attrs, words):
    out = {"expand": (4, 3), "gelu": (4, 3), "softmax": (4, 3), "pow": (4, 3), "clamp": (4, 3),
           "adaptive_avg_pool2d": (1, 1, 1, 1), "attention_scores": (2, 2)}
    spec = {"kind": kind, **tensors, "attrs": attrs, "output": np.ones(out.get(kind, (1,)))}
    with pytest.raises(TraceError) as info:
        from_arrays({"op": spec})
    for word in words:
        assert word in str(info.value)


def test_safe_softmax_is_sdpas_on_fully_masked_rows():
    """A query row whose keys are all masked: SDPA gives zeros, plain softmax NaN."""
    x = RNG.normal(size=(2, 3, 4))
    mask = np.ones((3, 4), bool)
    mask[1] = False
    scores = np.where(mask, x, -np.inf)
    v = np.eye(4)
    want = F.scaled_dot_product_attention(_t(x[:, :, :1] * 0 + 1), _t(np.ones((2, 4, 1))), _t(v),
                                          attn_mask=_t(mask), scale=1.0).numpy()
    got = _run("softmax", scores, None, {"safe": True})
    assert np.array_equal(got[:, 1], np.zeros((2, 4))) and np.array_equal(want[:, 1], got[:, 1])
    np.testing.assert_allclose(got, torch.softmax(_t(scores), -1).nan_to_num(0).numpy(),
                               rtol=1e-15)
    assert np.isnan(_run("softmax", scores, None)[:, 1]).all()           # as torch.softmax


def test_a_concat_links_one_source_per_linked_part():
    a = np.ones((2, 3))
    spec = {"kind": "concat", "output": np.ones((2, 5)), "inputs_from": ["a"],
            "attrs": {"dim": 1, "sizes": [3, 2], "linked": [0, 1]}}
    with pytest.raises(TraceError, match="one part per source"):
        from_arrays({"a": {"kind": "relu", "input": a, "output": a}, "cat": spec})
    spec["attrs"]["linked"] = [0]
    assert from_arrays({"a": {"kind": "relu", "input": a, "output": a},
                        "cat": spec}).op("cat").inputs_from == ["a"]
