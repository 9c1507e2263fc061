"""The ops between the MACs, as propagated replay runs them: float64, no rounding of their own.

A trace records these kinds besides the MAC kinds so that the graph links through them (each
also takes the attr ``fused``: true where its output stays inside a fused kernel, as
:mod:`simulator.replay` describes):

* unary, output of the input's shape: ``relu``, ``gelu`` (attr ``approximate``: "none" for the
  erf form, "tanh"), ``softmax`` (last axis; attr ``safe``: a row of -inf gives zeros, as
  ``scaled_dot_product_attention``'s softmax does, where plain softmax gives NaN), ``silu``,
  ``sigmoid``, ``tanh``, ``identity``, ``exp``, ``log``, ``sqrt``, ``rsqrt`` (1/sqrt),
  ``abs``, ``erf``, ``pow`` (attr ``exponent``, a number; C's ``pow``, as ONNX's: torch
  computes ``x ** 0.5`` and ``x ** -0.5`` as sqrt and rsqrt, which differ at -0 and -inf, and
  capture records them so), ``clamp`` (attrs ``min`` and ``max``, each a number or
  null for no bound; ``relu6`` and ``hardtanh`` are clamps);
* ``flatten``: the input's values in their order, in the output's shape;
* ``permute``: attr ``dims``, the input's axes in the output's order (``np.transpose``);
* ``expand``: the input broadcast to the output's shape (``np.broadcast_to``);
* ``index``: attr ``index``, basic indexing ``x[...]`` as a list of entries, each an integer,
  ``[start, stop, step]`` (a slice; null for a bound left out), null (a new axis) or
  ``"..."``;
* binary, roles ``input`` and ``other`` broadcast together: ``add``, ``sub``, ``mul``, ``div``
  (attr ``reverse``: ``other - input``, ``other / input``, so that the operand a trace links
  first is always ``input``; attr ``mask`` on an attention mask's add, where capture made the
  additive mask its ``other`` holds: "causal" where the kernel builds it (``is_causal``: it is
  not read from memory), "bool" where the model gave a boolean mask (one byte per element is
  read));
* ``concat``: the output only, and attrs ``dim`` (a non-negative axis), ``sizes`` (each part's
  length along it, in order) and ``linked`` (the indices of the parts that ``inputs_from``
  gives, in order): a part without a source is a constant, its values those of the captured
  output, so no part is stored twice;
* ``layer_norm``: attrs ``normalized_shape`` (the input's trailing axes) and ``eps``, optional
  ``weight`` and ``bias`` of that shape; the biased variance, as PyTorch and ONNX use;
* ``batch_norm`` in inference form (running statistics), channels on axis 1: roles
  ``running_mean``, ``running_var`` and optional ``weight``, ``bias`` (C,); attr ``eps``;
* ``mean``: attrs ``dims`` (the axes averaged) and ``keepdim``;
* ``pool2d`` of an NCHW input: attrs ``mode`` ("max" or "avg"), ``kernel``, ``stride``,
  ``padding``, ``dilation`` (pairs), ``ceil_mode``, and for "avg" ``count_include_pad`` and
  ``divisor_override`` (null or a positive integer), with PyTorch's rules for each;
* ``adaptive_avg_pool2d`` of an NCHW input: the output's (H, W) says the windows, PyTorch's
  (window i of n over L covers floor(i·L/n) to ceil((i+1)·L/n)).
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Mapping, Sequence, Union

import numpy as np


_erf = np.vectorize(math.erf, otypes=[float])


def _gelu(x: np.ndarray, approximate: str = "none") -> np.ndarray:
    """GELU: x * Phi(x) (erf form), or PyTorch's ``approximate="tanh"`` form."""
    if approximate == "tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    return x * 0.5 * (1.0 + _erf(x / math.sqrt(2.0)))


def _softmax(x: np.ndarray, safe: bool = False) -> np.ndarray:
    """Softmax on the last axis; ``safe``: rows of -inf give zeros (else NaN, as torch's)."""
    top = np.max(x, axis=-1, keepdims=True)
    empty = np.isneginf(top) if safe else False
    z = np.exp(x - np.where(empty, 0.0, top))
    return np.where(empty, 0.0, z / np.where(empty, 1.0, np.sum(z, axis=-1, keepdims=True)))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):             # exp(-x) = inf for x below -709 gives 0
        return 1.0 / (1.0 + np.exp(-x))


def _pow(x: np.ndarray, e: float) -> np.ndarray:
    """C's pow(x, e) (an array exponent: with a scalar 0.5 numpy takes a sqrt shortcut, which
    differs at -0 and -inf)."""
    return np.power(x, np.full(np.shape(x), e))


def _clamp(x: np.ndarray, lo, hi) -> np.ndarray:
    """``x`` clipped to [lo, hi] (None: no bound); NaN stays NaN, as torch.clamp's."""
    y = x if lo is None else np.where(x < lo, float(lo), x)
    return y if hi is None else np.where(y > hi, float(hi), y)


UNARY = {"relu": lambda x, a: np.maximum(x, 0.0),
         "gelu": lambda x, a: _gelu(x, a.get("approximate", "none")),
         "softmax": lambda x, a: _softmax(x, a.get("safe", False)),
         "silu": lambda x, a: x * _sigmoid(x),
         "sigmoid": lambda x, a: _sigmoid(x),
         "tanh": lambda x, a: np.tanh(x),
         "identity": lambda x, a: x,
         "exp": lambda x, a: np.exp(x),
         "log": lambda x, a: np.log(x),
         "sqrt": lambda x, a: np.sqrt(x),
         "rsqrt": lambda x, a: 1.0 / np.sqrt(x),
         "abs": lambda x, a: np.abs(x),
         "erf": lambda x, a: _erf(x),
         "pow": lambda x, a: _pow(x, float(a["exponent"])),
         "clamp": lambda x, a: _clamp(x, a.get("min"), a.get("max"))}
BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide}
# Sources a trace may link per kind: the binary kinds' ``input`` and ``other``, else ``input``
# (a concat's: one per part its ``linked`` attr names, checked by trace validation).
SOURCES = {k: 2 if k in BINARY else 1 for k in
           tuple(UNARY) + ("flatten", "permute", "expand", "index") + tuple(BINARY) +
           ("layer_norm", "rms_norm", "batch_norm", "mean", "pool2d", "adaptive_avg_pool2d")}
SOURCES["concat"] = None
KINDS = tuple(SOURCES)
# Ops that only move values: no arithmetic, and a storage format does not round their outputs
# again (a per-tensor scale would otherwise change a slice's values).
MOVERS = ("flatten", "permute", "expand", "index", "concat", "identity")
# Elementwise kinds (each output element from the same element of each input): what a MAC's
# epilogue can apply to its outputs before writing them (see simulator.replay).
ELEMENTWISE = tuple(k for k in UNARY if k not in ("softmax", "identity")) + tuple(BINARY)
ROLES = {**{k: ("input", "other", "output") for k in BINARY},
         "concat": ("output",),
         "layer_norm": ("input", "weight", "bias", "output"),
         "rms_norm": ("input", "weight", "output"),
         "batch_norm": ("input", "running_mean", "running_var", "weight", "bias", "output")}
REQUIRED = {**{k: ("input", "other", "output") for k in BINARY}, "concat": ("output",),
            "batch_norm": ("input", "running_mean", "running_var", "output")}
# The attrs each kind accepts (nothing else, so that a misspelt or unmodelled one, softmax's
# ``dim`` or add's ``alpha``, cannot be ignored).
# ``fused`` (every kind): the output stays inside a fused kernel (see simulator.replay).
_OWN = {**{k: ("reverse", "mask") for k in BINARY},
        "gelu": ("approximate",), "softmax": ("safe",), "permute": ("dims",),
        "index": ("index",), "layer_norm": ("normalized_shape", "eps"),
        "rms_norm": ("normalized_shape", "eps"), "batch_norm": ("eps",),
        "pow": ("exponent",), "clamp": ("min", "max"), "concat": ("dim", "sizes", "linked"),
        "mean": ("dims", "keepdim"),
        "pool2d": ("mode", "kernel", "stride", "padding", "dilation", "ceil_mode",
                   "count_include_pad", "divisor_override")}
ATTRS = {k: _OWN.get(k, ()) + ("fused",) for k in KINDS}
_FLAGS = ("safe", "reverse", "keepdim", "ceil_mode", "count_include_pad", "fused")
MASKS = ("causal", "bool")             # where an attention mask's add got its other from
POOL_DEFAULTS = {"stride": None, "padding": [0, 0], "dilation": [1, 1], "ceil_mode": False,
                 "count_include_pad": True, "divisor_override": None}


def _ints(v: Any, what: str, n: int = 0) -> list[int]:
    """``v`` as a list of ints (``n`` of them when ``n``); a ValueError naming ``what``."""
    ok = isinstance(v, (list, tuple)) and all(isinstance(i, int) and not isinstance(i, bool)
                                              for i in v)
    if not ok or (n and len(v) != n):
        raise ValueError(f"{what} must be a list of {n or 'some'} integers, got {v!r}")
    return list(v)


def _axes(dims: Any, ndim: int, what: str) -> list[int]:
    """Axes in [-ndim, ndim) as non-negative ints, each once."""
    axes = _ints(dims, what)
    if any(not -ndim <= d < ndim for d in axes) or len({d % ndim for d in axes}) != len(axes):
        raise ValueError(f"{what} {axes} are not distinct axes of a {ndim}-D input")
    return [d % ndim for d in axes]


def index_key(entries: Any) -> tuple:
    """An ``index`` op's attr as a numpy index (see the module doc); a ValueError if it is
    not one."""
    def one(e):
        if e is None or e == "...":
            return Ellipsis if e == "..." else None
        if isinstance(e, int) and not isinstance(e, bool):
            return e
        if isinstance(e, list) and len(e) == 3 and all(
                v is None or (isinstance(v, int) and not isinstance(v, bool)) for v in e) \
                and e[2] != 0:
            return slice(*e)
        raise ValueError(f"index entry {e!r} is not an integer, [start, stop, step] (step not "
                         f"0), null or '...'")

    if not isinstance(entries, list):
        raise ValueError(f"index must be a list of entries, got {entries!r}")
    return tuple(one(e) for e in entries)


def _pool_args(attrs: Mapping[str, Any]) -> dict:
    """pool2d's attrs with defaults filled in and checked; a ValueError says what is wrong."""
    a = {**POOL_DEFAULTS, **attrs}
    if a.get("mode") not in ("max", "avg"):
        raise ValueError(f"pool2d mode must be 'max' or 'avg', got {a.get('mode')!r}")
    k = _ints(a.get("kernel"), "pool2d kernel", 2)
    s = k if a["stride"] is None else _ints(a["stride"], "pool2d stride", 2)
    p, d = _ints(a["padding"], "pool2d padding", 2), _ints(a["dilation"], "pool2d dilation", 2)
    if min(k + s + d) < 1 or min(p) < 0:
        raise ValueError(f"pool2d kernel, stride and dilation must be positive and padding not "
                         f"negative: kernel {k}, stride {s}, padding {p}, dilation {d}")
    if any(pp > kk // 2 for pp, kk in zip(p, k)):
        raise ValueError(f"pool2d padding {p} is more than half the kernel {k}")
    div = a["divisor_override"]
    if a["mode"] == "avg" and (d != [1, 1] or not (div is None or (
            isinstance(div, int) and not isinstance(div, bool) and div > 0))):
        raise ValueError(f"an avg pool2d takes dilation 1 and a divisor_override that is null or "
                         f"a positive integer, got dilation {d}, divisor_override {div!r}")
    return {**a, "kernel": k, "stride": s, "padding": p, "dilation": d}


def _pool_size(length: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """Output length of a pooling window along one axis (PyTorch's rule: with ``ceil_mode`` a
    last window that would start in the right padding is dropped)."""
    span = length + 2 * p - d * (k - 1) - 1              # floor division, as PyTorch's
    n = (-(-span // s) if ceil_mode else span // s) + 1
    return n - 1 if ceil_mode and (n - 1) * s >= length + p else n


def _eps_problem(attrs: Mapping[str, Any]) -> str:
    eps = attrs.get("eps")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
        return f"eps must be a number, at least 0, got {eps!r}"
    return ""


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)


def _unary_problem(kind: str, attrs: Mapping[str, Any]) -> str:
    """What is wrong with a unary op's attrs, or ''."""
    if kind == "gelu" and attrs.get("approximate", "none") not in ("none", "tanh"):
        return f"gelu approximate must be 'none' or 'tanh', got {attrs['approximate']!r}"
    if kind == "pow" and not _number(attrs.get("exponent")):
        return f"pow exponent must be a number, got {attrs.get('exponent')!r}"
    if kind == "clamp":
        lo, hi = attrs.get("min"), attrs.get("max")
        if not all(v is None or _number(v) for v in (lo, hi)):
            return f"clamp min and max must be numbers or null, got {lo!r}, {hi!r}"
    return ""


def concat_parts(out: tuple, attrs: Mapping[str, Any]) -> list[tuple]:
    """The shapes of a ``concat`` op's parts, from its output's shape and its attrs; a
    ValueError says what does not fit."""
    dim, sizes = attrs.get("dim"), _ints(attrs.get("sizes"), "concat sizes")
    if not isinstance(dim, int) or isinstance(dim, bool) or not 0 <= dim < len(out):
        raise ValueError(f"concat dim must be an axis of the {len(out)}-D output, from 0, "
                         f"got {dim!r}")
    if min(sizes, default=-1) < 0 or sum(sizes) != out[dim]:
        raise ValueError(f"concat sizes {sizes} must be lengths that add up to the output's "
                         f"{out[dim]} along axis {dim}")
    linked = _ints(attrs.get("linked"), "concat linked")
    if sorted(set(linked)) != linked or any(not 0 <= i < len(sizes) for i in linked):
        raise ValueError(f"concat linked {linked} must be increasing indices of its "
                         f"{len(sizes)} parts")
    return [tuple(out[:dim]) + (n,) + tuple(out[dim + 1:]) for n in sizes]


def shape_problem(kind: str, shapes: Mapping[str, tuple], attrs: Mapping[str, Any]) -> str:
    """What is wrong with the shapes or attrs of an op of one of :data:`KINDS`, or ''."""
    x, out = shapes.get("input"), shapes["output"]
    flags = [f for f in _FLAGS if f in attrs and not isinstance(attrs[f], bool)]
    if flags:
        return f"{flags[0]} must be true or false, got {attrs[flags[0]]!r}"
    if kind == "concat":
        try:
            concat_parts(out, attrs)
        except ValueError as exc:
            return str(exc)
        return ""
    if kind in UNARY:
        problem = _unary_problem(kind, attrs)
        if problem:
            return problem
        return "" if out == x else f"output {out} should have the input's shape {x}"
    try:
        if kind == "flatten":
            if math.prod(out) != math.prod(x):
                return f"output {out} does not hold the {math.prod(x)} values of input {x}"
            return ""
        if kind in BINARY:
            if attrs.get("mask", "causal") not in MASKS:
                return f"mask must be one of {', '.join(MASKS)}, got {attrs['mask']!r}"
            try:
                want = tuple(np.broadcast_shapes(x, shapes["other"]))
            except ValueError:
                return f"input {x} and other {shapes['other']} do not broadcast"
        elif kind == "permute":
            dims = _axes(attrs.get("dims"), len(x), "permute dims")
            if len(dims) != len(x):
                return f"permute dims {dims} do not order all {len(x)} axes of input {x}"
            want = tuple(x[d] for d in dims)
        elif kind == "expand":
            try:
                want = tuple(np.broadcast_shapes(x, out))
            except ValueError:
                return f"input {x} does not broadcast to output {out}"
        elif kind == "index":
            key = index_key(attrs.get("index"))
            try:
                want = np.lib.stride_tricks.as_strided(np.zeros(1), x, (0,) * len(x))[key].shape
            except IndexError as exc:
                return f"index {attrs['index']} does not apply to input {x}: {exc}"
        elif kind in ("layer_norm", "rms_norm"):
            ns = tuple(_ints(attrs.get("normalized_shape"), f"{kind} normalized_shape"))
            if not ns or tuple(x[len(x) - len(ns):]) != ns:
                return f"normalized_shape {list(ns)} must be the last axes of input {x}"
            for role in ("weight", "bias"):
                if role in shapes and tuple(shapes[role]) != ns:
                    return f"{role} {shapes[role]} should be the normalized shape {ns}"
            want = x
        elif kind == "batch_norm":
            if len(x) < 2:
                return f"input {x} has no channel axis (axis 1)"
            for role in ("running_mean", "running_var", "weight", "bias"):
                if role in shapes and tuple(shapes[role]) != (x[1],):
                    return f"{role} {shapes[role]} should be one value per channel ({x[1]},)"
            want = x
        elif kind == "mean":
            axes = _axes(attrs.get("dims"), len(x), "mean dims")
            keep = attrs.get("keepdim", False)
            want = tuple(1 if i in axes else n for i, n in enumerate(x) if keep or i not in axes)
        elif kind in ("pool2d", "adaptive_avg_pool2d"):
            if len(x) != 4 or min(x[2:]) < 1:
                return f"input {x} is not NCHW with H and W at least 1"
            if kind == "adaptive_avg_pool2d":
                if len(out) != 4 or min(out[2:]) < 1:
                    return f"output {out} should be (N, C, H, W) with H, W at least 1"
                want = x[:2] + tuple(out[2:])
            else:
                a = _pool_args(attrs)
                want = x[:2] + tuple(_pool_size(n, *v, a["ceil_mode"]) for n, *v in zip(
                    x[2:], a["kernel"], a["stride"], a["padding"], a["dilation"]))
                if min(want[2:]) < 1:
                    return f"the pooling window {a['kernel']} (dilation {a['dilation']}) is " \
                           f"larger than the padded input {x}"
    except ValueError as exc:
        return str(exc)
    if kind in ("layer_norm", "rms_norm", "batch_norm") and _eps_problem(attrs):
        return _eps_problem(attrs)
    return "" if tuple(out) == tuple(want) else f"output {out} should be {want}"


def _windows(length: int, n: int, k: int, s: int, p: int, d: int) -> tuple:
    """Indices (n, k) of the taps of ``n`` windows of ``k`` taps along an axis of ``length``
    (clipped into range), which taps fall inside it, and each window's extent clipped to the
    padded axis (avg's ``count_include_pad`` divisor)."""
    start = np.arange(n) * s - p
    idx = start[:, None] + d * np.arange(k)
    inside = (idx >= 0) & (idx < length)
    return np.clip(idx, 0, max(length - 1, 0)), inside, np.minimum(start + k, length + p) - start


def _adaptive_windows(length: int, n: int) -> tuple:
    """PyTorch's adaptive windows along one axis: indices, inside mask, sizes."""
    i = np.arange(n)
    start, end = (i * length) // n, -((-(i + 1) * length) // n)
    idx = start[:, None] + np.arange(int((end - start).max()))
    inside = idx < end[:, None]
    return np.minimum(idx, length - 1), inside, end - start


def _pool(x: np.ndarray, hw: tuple, mode: str, divisor=None) -> np.ndarray:
    """Max or average of NCHW ``x`` over windows ``hw`` = ((idx, inside) along H, along W);
    ``divisor`` (Ho, Wo) for "avg" (the count of taps inside when None)."""
    (ih, vh), (iw, vw) = hw
    taps = x[:, :, ih][..., iw]                            # (N, C, Ho, kh, Wo, kw)
    inside = vh[:, :, None, None] & vw[None, None]
    if mode == "max":
        return np.where(inside, taps, -np.inf).max(axis=(3, 5))
    if divisor is None:
        divisor = vh.sum(1)[:, None] * vw.sum(1)[None, :]
    return np.where(inside, taps, 0.0).sum(axis=(3, 5)) / divisor


# Vector steps per output element of the unary kinds (mac_models.vector.STEPS); gelu, pow and
# clamp depend on their attrs (see work).
_UNARY_STEPS = {"relu": {"compare": 1}, "silu": {"exp": 1, "add": 1, "recip": 1, "mul": 1},
                "sigmoid": {"exp": 1, "add": 1, "recip": 1}, "tanh": {"tanh": 1},
                "exp": {"exp": 1}, "log": {"log": 1}, "sqrt": {"sqrt": 1},
                "rsqrt": {"rsqrt": 1}, "erf": {"erf": 1}, "abs": {}}
_BINARY_STEPS = {"add": "add", "sub": "add", "mul": "mul", "div": "div"}


def _steps(per: Mapping[str, int], n: int, per_row: Union[Mapping[str, int], None] = None,
           rows: int = 0) -> dict:
    """Counts of ``per`` steps for each of ``n`` elements and ``per_row`` for each of
    ``rows`` rows (steps counted 0 times left out)."""
    out = {step: k * n for step, k in per.items()}
    for step, k in (per_row or {}).items():
        out[step] = out.get(step, 0) + k * rows
    return {step: k for step, k in out.items() if k}


def _unary_steps(kind: str, attrs: Mapping[str, Any]) -> dict:
    """Steps per element of a unary op: gelu's tanh form computes x³ as two multiplies; pow
    by 2 is one multiply, by 0 or 1 none, by any other exponent (3 and -1 too) exp(e·log x),
    a pessimistic price for small integer exponents."""
    if kind == "gelu":              # x·0.5·(1 + erf(x/√2)), or the tanh form's 6 mul, 2 add
        return {"tanh": 1, "mul": 6, "add": 2} if attrs.get("approximate") == "tanh" else \
            {"erf": 1, "mul": 3, "add": 1}
    if kind == "pow":
        e = float(attrs["exponent"])
        return {"mul": 1} if e == 2 else {} if e in (0, 1) else {"exp": 1, "log": 1, "mul": 1}
    if kind == "clamp":
        return {"compare": sum(attrs.get(b) is not None for b in ("min", "max"))}
    return _UNARY_STEPS[kind]


def work(kind: str, shapes: Mapping[str, tuple], attrs: Mapping[str, Any]) -> dict:
    """The vector steps (:data:`mac_models.vector.STEPS`: step name -> count) of one op of
    ``kind`` whose tensors have ``shapes`` (by role): per output element for the elementwise
    kinds; softmax, per element a max, a subtraction, an exp, a sum and a multiply, per row a
    reciprocal; layer_norm, per element the sum, the subtraction of the mean, its square and
    sum, the multiply by 1 / std (and by the weight, the bias's add), per row two multiplies
    by 1 / n, the eps add and an rsqrt (rms_norm the same without the mean); batch_norm, a
    multiply and an add per element with the scale and shift folded per channel (an add, an
    rsqrt, two multiplies and an add); mean and pools, an add (a max pool's compare) per tap
    but the first of each output and a multiply by 1 / count per output.  The movers do no
    arithmetic."""
    out = shapes["output"]
    n = math.prod(out)
    if kind in MOVERS:
        return {}
    if kind in BINARY:
        return _steps({_BINARY_STEPS[kind]: 1}, n)
    if kind == "softmax":
        return _steps({"compare": 1, "add": 2, "exp": 1, "mul": 1}, n, {"recip": 1},
                      n // out[-1] if out and n else n)
    if kind in UNARY:
        return _steps(_unary_steps(kind, attrs), n)
    x = shapes["input"]
    if kind in ("layer_norm", "rms_norm"):
        width = math.prod(attrs["normalized_shape"])
        rows = n // width if width else 0
        per = {"add": 3 + ("bias" in shapes), "mul": 2 + ("weight" in shapes)}
        if kind == "rms_norm":
            per["add"] -= 2
        return _steps(per, n, {"mul": 2 if kind == "layer_norm" else 1, "add": 1, "rsqrt": 1},
                      rows)
    if kind == "batch_norm":
        return _steps({"mul": 1, "add": 1}, n, {"add": 2, "rsqrt": 1, "mul": 2}, x[1])
    if kind == "mean":
        return _steps({"add": 1}, max(math.prod(x) - n, 0), {"mul": 1}, n)  # empty: no adds
    if kind == "adaptive_avg_pool2d":
        taps = math.prod(x[:2]) * math.prod(
            int(_adaptive_windows(length, m)[2].sum()) for length, m in zip(x[2:], out[2:]))
        return _steps({"add": 1}, taps - n, {"mul": 1}, n)
    a = _pool_args(attrs)                    # pool2d: every tap of the window, padding's too
    taps = n * math.prod(a["kernel"])
    if a["mode"] == "max":
        return _steps({"compare": 1}, taps - n)
    return _steps({"add": 1}, taps - n, {"mul": 1}, n)


def concat(captured: np.ndarray, parts: Sequence[np.ndarray], attrs: Mapping[str, Any],
           constant: Callable[[np.ndarray], np.ndarray] = lambda part: part) -> np.ndarray:
    """A ``concat`` op's output: the ``captured`` output with its linked parts (``attrs``
    ``linked``) replaced by ``parts``, one per linked part in order, each of that part's
    shape, and each other part, a constant, as ``constant`` reads it (as captured by
    default)."""
    ends = np.cumsum(attrs["sizes"])
    pieces = np.split(np.asarray(captured, dtype=np.float64), ends[:-1], axis=attrs["dim"])
    given = dict(zip(attrs["linked"], parts))
    pieces = [given[i] if i in given else constant(p) for i, p in enumerate(pieces)]
    return np.concatenate(pieces, axis=attrs["dim"])


def evaluate(kind: str, t: Mapping[str, np.ndarray], shape: tuple,
             attrs: Mapping[str, Any]) -> np.ndarray:
    """The output of an op of one of :data:`KINDS` from its float64 tensors ``t`` by role
    (``input``, and ``other``, ``weight``, ``bias`` where the kind has them); ``shape`` is the
    captured output's (what ``flatten`` and ``adaptive_avg_pool2d`` produce)."""
    x = t["input"]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):   # IEEE results (inf,
        if kind in UNARY:                                                  # NaN), as torch's
            return UNARY[kind](x, attrs)
        if kind in BINARY:
            a, b = (t["other"], x) if attrs.get("reverse") else (x, t["other"])
            return BINARY[kind](a, b)
    if kind == "flatten":
        return x.reshape(shape)
    if kind == "permute":
        return np.transpose(x, attrs["dims"])
    if kind == "expand":
        return np.broadcast_to(x, shape)
    if kind == "index":
        return np.array(x[index_key(attrs["index"])])
    if kind in ("layer_norm", "rms_norm"):
        axes = tuple(range(x.ndim - len(attrs["normalized_shape"]), x.ndim))
        centred = x - x.mean(axis=axes, keepdims=True) if kind == "layer_norm" else x
        y = centred / np.sqrt((centred ** 2).mean(axis=axes, keepdims=True) + attrs["eps"])
        return y * t.get("weight", 1.0) + t.get("bias", 0.0)
    if kind == "batch_norm":
        c = (1, -1) + (1,) * (x.ndim - 2)                  # one value per channel, on axis 1
        y = (x - t["running_mean"].reshape(c)) / np.sqrt(t["running_var"].reshape(c) +
                                                          attrs["eps"])
        return y * t.get("weight", np.ones(1)).reshape(c) + t.get("bias", np.zeros(1)).reshape(c)
    if kind == "mean":
        with warnings.catch_warnings():                   # an empty mean is NaN, as torch's
            warnings.simplefilter("ignore", RuntimeWarning)
            return x.mean(axis=tuple(attrs["dims"]), keepdims=attrs.get("keepdim", False))
    if kind == "adaptive_avg_pool2d":
        (ih, vh, nh), (iw, vw, nw) = (_adaptive_windows(n, m) for n, m in zip(x.shape[2:],
                                                                             shape[2:]))
        return _pool(x, ((ih, vh), (iw, vw)), "avg", nh[:, None] * nw[None, :])
    if kind != "pool2d":
        raise ValueError(f"{kind!r} is not an op between the MACs that evaluate runs (kinds: "
                         f"{', '.join(k for k in KINDS if k != 'concat')}; a concat runs "
                         f"through graph_ops.concat)")
    a = _pool_args(attrs)
    (ih, vh, ph), (iw, vw, pw) = (
        _windows(n, _pool_size(n, k, s, p, d, a["ceil_mode"]), k, s, p, d)
        for n, k, s, p, d in zip(x.shape[2:], a["kernel"], a["stride"], a["padding"],
                                 a["dilation"]))
    divisor = a["divisor_override"] or (ph[:, None] * pw[None, :] if a["count_include_pad"]
                                        else None)
    return _pool(x, ((ih, vh), (iw, vw)), a["mode"], divisor)
