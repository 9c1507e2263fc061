"""Building traces from what a user has: plain arrays, or (optional extras) PyTorch models.

``from_arrays`` takes ops as a mapping of op name to a mapping with ``kind``, the tensors by
role, and optionally ``attrs`` and ``inputs_from``.  A linear or matmul op may leave out
``output``: it is then the exact product (float64: ``x @ W.T + b`` for linear, ``a @ b`` for
matmul), so replay measures error against exact arithmetic.
"""
from __future__ import annotations

import math
import weakref
from typing import Any, Mapping, Union

import numpy as np

from . import einsum, graph_ops
from .links import unlinked_message
from .onnx_capture import capture_onnx  # noqa: F401  (importable from here, as before)
from .traces import DTYPES, Op, Trace, TraceError


def _exact_output(kind: str, t: Mapping[str, np.ndarray], attrs: Mapping[str, Any]):
    if kind == "linear":
        x, w = np.asarray(t["input"], np.float64), np.asarray(t["weight"], np.float64)
        y = x @ w.T
        return y + np.asarray(t["bias"], np.float64) if "bias" in t else y
    if kind in ("matmul", "attention_scores"):
        return np.asarray(t["a"], np.float64) @ np.asarray(t["b"], np.float64)
    raise TraceError(f"a {kind} op needs its 'output' tensor")


def from_arrays(ops: Mapping[str, Mapping[str, Any]],
                extras: Union[Mapping[str, np.ndarray], None] = None,
                model: str = "arrays") -> Trace:
    """A trace from plain arrays (see the module doc), validated like a loaded one."""
    built = []
    for name, spec in ops.items():
        if not isinstance(spec, Mapping) or "kind" not in spec:
            raise TraceError(f"op {name!r}: needs a mapping with a 'kind'")
        spec = dict(spec)
        kind = spec.pop("kind")
        attrs, inputs_from = spec.pop("attrs", {}), spec.pop("inputs_from", [])
        if not isinstance(attrs, Mapping) or isinstance(inputs_from, str) or \
                not isinstance(inputs_from, (list, tuple)):
            raise TraceError(f"op {name!r}: 'attrs' must be a mapping and 'inputs_from' a list "
                             f"of op names")
        tensors = {}
        for role, value in spec.items():
            arr = np.asarray(value)
            if arr.dtype.name not in DTYPES:
                raise TraceError(f"op {name!r}: tensor {role!r} has dtype {arr.dtype}; a trace "
                                 f"stores {', '.join(DTYPES)}")
            tensors[role] = arr
        if "output" not in tensors:
            try:
                tensors["output"] = _exact_output(kind, tensors, attrs)
            except (KeyError, ValueError) as exc:
                raise TraceError(f"op {name!r} ({kind}): cannot compute its output from "
                                 f"{sorted(tensors)}: {exc}") from exc
        built.append(Op(name, kind, tensors, dict(attrs), list(inputs_from)))
    return Trace(built, extras, model=model)


# ---- PyTorch (optional extra: pip install torch) ------------------------------------------------
def _np(t) -> np.ndarray:
    """A torch tensor as a numpy copy in its own dtype (bfloat16 through ml_dtypes)."""
    import torch
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        import ml_dtypes
        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16).copy()
    return t.numpy().copy()


def _arg(args: tuple, kwargs: Mapping, i: int, *names: str):
    """Argument ``i`` of a call, given by position or by one of ``names`` (None if absent)."""
    if len(args) > i:
        return args[i]
    return next((kwargs[n] for n in names if n in kwargs), None)


def _tensors(v):
    """The tensors in a call's arguments or result (lists, tuples and dicts opened)."""
    import torch
    if isinstance(v, torch.Tensor):
        yield v
    elif isinstance(v, (list, tuple)):
        for i in v:
            yield from _tensors(i)
    elif isinstance(v, dict):
        for i in v.values():
            yield from _tensors(i)


def _int_list(v) -> list[int]:
    """An axis or size argument (an int, a numpy integer or a sequence of them) as a list."""
    return [int(v)] if isinstance(v, (int, np.integer)) else [int(i) for i in v]


def _same_values(func, x, out, args: tuple, kw: Mapping) -> bool:
    """Whether ``out`` of a view, reshape, copy, cast or dropout call holds ``x``'s values in
    their order (a cast only where it widens: every value is kept exactly)."""
    import torch
    import torch.nn.functional as F
    if not isinstance(out, torch.Tensor) or out.numel() != x.numel():
        return False
    if func is F.dropout:
        return _arg(args, kw, 2, "training") is False or _arg(args, kw, 1, "p") == 0
    return out.dtype == x.dtype or (x.is_floating_point() and out.is_floating_point() and
                                    torch.promote_types(x.dtype, out.dtype) == out.dtype)


def _permutation(func, x, args: tuple, kw: Mapping) -> list[int]:
    """The axes of ``x`` in the order a transpose, permute, t, ``.T``, ``.mT``/``.mH`` or
    movedim call puts them."""
    import torch
    T = torch.Tensor
    n = x.ndim
    if func in (T.permute, torch.permute):
        dims = args[1:] if len(args) > 1 else (kw.get("dims"),)
        dims = dims[0] if len(dims) == 1 and not isinstance(dims[0], int) else dims
        return [int(d) % n for d in dims]
    if func in (T.t, torch.t, T.T.__get__):
        return list(range(n))[::-1]
    if func in (T.mT.__get__, T.mH.__get__):
        return list(range(n - 2)) + [n - 1, n - 2]
    if func in (T.movedim, torch.movedim, T.moveaxis, torch.moveaxis):
        src, dst = (_arg(args, kw, i, *names) for i, names in ((1, ("source",)),
                                                              (2, ("destination",))))
        src, dst = ([d % n for d in _int_list(v)] for v in (src, dst))
        order = [d for d in range(n) if d not in src]
        for d, axis in sorted(zip(dst, src)):             # numpy's moveaxis rule
            order.insert(d, axis)
        return order
    order = list(range(n))
    i, j = (int(_arg(args, kw, k, *names)) % n for k, names in ((1, ("dim0", "axis0")),
                                                                (2, ("dim1", "axis1"))))
    order[i], order[j] = order[j], order[i]
    return order


def _last_two_swapped(ndim: int) -> list[int]:
    """The permutation that transposes the last two of ``ndim`` axes (``.mT``)."""
    return list(range(ndim - 2)) + [ndim - 1, ndim - 2]


def _index_entries(key) -> Union[list, None]:
    """A basic ``x[key]`` (integers, slices, None, Ellipsis) as an ``index`` op's attr; None
    for other keys (tensors, lists, booleans)."""
    def whole(v) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))

    entries = []
    for k in key if isinstance(key, tuple) else (key,):
        if k is None or k is Ellipsis:
            entries.append(None if k is None else "...")
        elif whole(k):
            entries.append(int(k))
        elif isinstance(k, slice) and all(v is None or whole(v)
                                          for v in (k.start, k.stop, k.step)):
            entries.append([None if v is None else int(v) for v in (k.start, k.stop, k.step)])
        else:
            return None
    return entries


def _torch_pool_attrs(mode: str, args: tuple, kw: Mapping) -> dict:
    """A ``pool2d`` op's attrs from an ``F.max_pool2d`` or ``F.avg_pool2d`` call."""
    def pair(v):
        v = _int_list(v)
        return v * 2 if len(v) == 1 else v

    kernel = pair(_arg(args, kw, 1, "kernel_size"))
    stride = _arg(args, kw, 2, "stride")
    attrs = {"mode": mode, "kernel": kernel, "stride": pair(stride) if stride else kernel,
             "padding": pair(_arg(args, kw, 3, "padding") or 0)}
    if mode == "max":
        dilation = _arg(args, kw, 4, "dilation")
        return {**attrs, "dilation": pair(1 if dilation is None else dilation),
                "ceil_mode": bool(_arg(args, kw, 5, "ceil_mode"))}
    include, divisor = _arg(args, kw, 5, "count_include_pad"), _arg(args, kw, 6,
                                                                    "divisor_override")
    return {**attrs, "ceil_mode": bool(_arg(args, kw, 4, "ceil_mode")),
            "count_include_pad": include is None or bool(include),
            "divisor_override": None if divisor is None else int(divisor)}


FUSED = {"fused": True}          # the attr of an op whose output stays inside a fused kernel


class _Unrecordable(ValueError):
    """A call whose shapes or arguments no op of its kind can hold (a pow by NaN, say)."""


class _Recorder:
    """Collects ops during one forward pass; links an op to the ops that produced its inputs.
    A link holds only while the tensor is as the op left it: an in-place change (``h += x``,
    ``relu_``) bumps the tensor's version and the link is dropped.  A tensor is *tainted* when
    it depends on a recorded op's output: propagated replay changes its value, so an op fed by
    a tainted tensor without a link loses the error of the ops before (an untainted one, the
    model's input, a parameter, a mask or an embedding, replays exactly as captured)."""

    def __init__(self, reserved: set) -> None:
        self.ops: list[Op] = []
        self.names: set[str] = set()
        self.reserved = reserved                 # module names: a repeat call's name avoids them
        self.producer: dict[int, tuple] = {}     # id(tensor) -> (op name, tensor version then)
        self.tainted: set[int] = set()           # ids of live tensors that depend on one
        self.blind = False                       # a link was asked of an inference tensor
        self.via: dict[int, str] = {}            # id -> the unrecorded call that made it
        self.keep: list = []                     # tensors kept alive, so ids stay unique
        self.on = True                           # off once the forward pass is over

    @staticmethod
    def _version(t) -> Union[int, None]:
        """``t``'s in-place version (None for inference-mode tensors, which keep none)."""
        return None if t.is_inference() else t._version

    def source(self, t) -> Union[str, None]:
        """The op whose output ``t`` is, unchanged since; None if unknown."""
        got = self.producer.get(id(t))
        if got is not None and got[1] is None:
            self.blind = True
        ok = got is not None and got[1] is not None and got[1] == self._version(t)
        return got[0] if ok else None

    def produced(self, t, name: str) -> None:
        self.producer[id(t)] = (name, self._version(t))
        self.keep.append(t)
        self.taint(t)

    def taint(self, t) -> None:
        """Mark ``t`` tainted while it lives (its id leaves the set when it is freed)."""
        if id(t) not in self.tainted:
            self.tainted.add(id(t))
            weakref.finalize(t, self._forget, id(t))

    def _forget(self, key: int) -> None:
        self.tainted.discard(key)
        self.via.pop(key, None)

    def add(self, base: str, kind: str, tensors: dict, sources: list, attrs=None,
            module: bool = False) -> Op:
        """Record an op; ``sources`` are the op names its inputs came from (None: unknown);
        ``module``: ``base`` is a module's name (its first call takes it; other ops never
        take a module's name)."""
        if kind in graph_ops.KINDS:
            problem = graph_ops.shape_problem(kind, {r: tuple(t.shape) for r, t in
                                                     tensors.items()}, attrs or {})
            if problem:
                raise _Unrecordable(problem)
        base = base or kind                      # the model itself is the module
        name, i = base, 1
        while name in self.names or (name in self.reserved and (i > 1 or not module)):
            i += 1
            name = f"{base}_{i}"
        self.names.add(name)
        op = Op(name, kind, {r: _np(t) for r, t in tensors.items()}, dict(attrs or {}),
                list(sources) if all(sources) else [])   # the graph only where all are known
        self.ops.append(op)
        self.keep += list(tensors.values())
        self.produced(tensors["output"], name)
        return op


def _weight_gradient(op: Op) -> np.ndarray:
    """dL/dW of one Linear or conv2d call from its captured input and grad_output, in float64
    (the weight-gradient GEMM of that call alone)."""
    import torch
    x, go = (torch.from_numpy(np.asarray(op.tensors[r], np.float64)) for r in ("input",
                                                                              "grad_output"))
    w = op.tensors["weight"]
    if op.kind == "linear":
        return (go.reshape(-1, w.shape[0]).T @ x.reshape(-1, w.shape[1])).numpy()
    a = op.attrs
    return torch.nn.grad.conv2d_weight(x, w.shape, go, a["stride"], a["padding"],
                                       a["dilation"], a["groups"]).numpy()


def _conv_attrs(what: str, kernel, stride, padding, dilation, groups: int, dims: int,
                padding_mode: str = "zeros") -> dict:
    """conv2d attrs (pairs) of a 1-D or 2-D conv ``what`` (a module or call, for messages)
    with these arguments (ints or tuples, padding also 'valid' or 'same')."""
    def tup(v):
        return tuple(v) if isinstance(v, (tuple, list)) else (v,) * dims

    k, stride, dilation = tup(kernel), tup(stride), tup(dilation)
    pad = padding
    if pad == "valid":
        pad = (0,) * dims
    elif pad == "same":
        if any((d * (kk - 1)) % 2 for d, kk in zip(dilation, k)):
            raise TraceError(f"{what}: padding='same' with an even kernel pads unevenly; not "
                             f"representable as a conv2d op")
        pad = tuple(d * (kk - 1) // 2 for d, kk in zip(dilation, k))
    if padding_mode != "zeros":
        raise TraceError(f"{what}: padding_mode={padding_mode!r} is not modelled (zeros only)")
    one = (1,) if dims == 1 else ()
    zero = (0,) if dims == 1 else ()
    return {"stride": [int(v) for v in one + stride], "padding": [int(v) for v in zero + tup(pad)],
            "dilation": [int(v) for v in one + dilation], "groups": int(groups)}


def capture_torch(model, inputs, *, kwargs=None, loss_fn=None, target=None, labels=None,
                  model_name: str = "") -> Trace:
    """Run ``model(*inputs, **kwargs)`` and record its ops (needs torch).

    Recorded, so that every MAC is replayed and the graph links from one to the next:

    * ``nn.Linear``, ``nn.Conv1d`` (as a conv2d of height 1) and ``nn.Conv2d`` modules with
      their stock forward, through forward hooks (a conv with non-zero padding modes or uneven
      'same' padding is left out with a warning), and ``F.linear``, ``torch.addmm`` (bias +
      a @ b, as a linear layer), ``F.conv1d`` and ``F.conv2d`` called outside those modules
      (a subclass with a forward of its own, LoRA say, is recorded so; no gradients; a weight
      that depends on recorded ops is never linked, and the warning names the op; such an op
      takes the name of the module it runs in, GPT-2's ``transformer.h.0.attn.c_attn`` say);
    * through a ``TorchFunctionMode``: ``torch.matmul``/``bmm``/``mm``/``@`` of two operands of
      2 or more dims (``matmul``; by a weight, a 2-D parameter of the model or a view of one such as
      ``W.T``, a ``linear``, so that the weight format quantizes it; where only the second
      operand depends on recorded ops and is batched at least as the first, ``c @ h``, as
      ``(h^T c^T)^T``: a ``permute`` of h, the product, a ``permute`` back, so that h links; a
      weight first is flipped so too); ``F.scaled_dot_product_attention`` as the ops it
      computes (``permute`` k^T, ``attention_scores`` q @ k^T, ``mul`` by the scale, ``add``
      of the mask, ``softmax``, ``matmul`` by v; grouped-query keys and values are repeated per
      query head by a fused ``expand`` op, which the kernel reads once per key head; all but
      the product by v are ``fused``: their values stay in the attention kernel; with
      ``dropout_p`` the product by v is left out; a mask built for ``is_causal`` or from a
      boolean ``attn_mask`` has the add's attr ``mask``); a two-operand ``torch.einsum`` that
      is one batched matmul (``bhqd,bhkd->bhqk``, ``bij,jk->bik``, ...) as a ``matmul`` named
      ``einsum`` (a ``linear`` where one operand is a weight and there is no batch letter)
      between the ``permute`` ops that lay its operands out as (batch, m, k) and (batch, k, n)
      and its output back;
    * where the input depends on a recorded op (below): ``relu``, ``gelu``, ``softmax`` (last
      axis), ``silu``, ``sigmoid``, ``tanh``, ``flatten``, ``transpose``/``permute``/``t``/
      ``.T``/``.mT``/``movedim`` (``permute``), ``expand``/``expand_as``/``broadcast_to``
      (``expand``), basic indexing ``x[...]`` and each piece of ``split``/``chunk``/``unbind``
      (``index``), ``+ - * /``, in place too, with the linked operand either side (``add``,
      ``sub``, ``mul``, ``div``; not with ``alpha`` or ``rounding_mode``) and ``-x`` (``mul``
      by -1), ``exp``, ``log``, ``sqrt``, ``rsqrt``, ``abs``, ``erf``, ``pow`` by a number,
      ``clamp``/``clip``/``relu6``/``hardtanh`` with number bounds (``clamp``; ``x ** 0.5``
      and ``x ** -0.5`` are ``sqrt`` and ``rsqrt``, as torch computes them),
      ``torch.cat``/``concat``/``concatenate``/``stack`` where a part does (``concat``; the
      other parts are constants), ``F.layer_norm``, ``F.rms_norm`` (``nn.RMSNorm``; without
      an eps, torch's: the epsilon of float32, or of float64 for float64 inputs; a
      Llama-style RMSNorm written out links through its pow, mean, add, rsqrt and mul),
      ``F.batch_norm`` with running statistics (``batch_norm``), ``mean``,
      ``F.max_pool2d``/``avg_pool2d`` (``pool2d``) and ``F.adaptive_avg_pool2d``.  These ops
      are replayed in float64 (:mod:`simulator.graph_ops`).  A call no op can hold (a pow by
      NaN, say) is left out with a warning.

    Views, reshapes, ``unflatten``, ``unsqueeze``/``squeeze``, ``contiguous``, ``clone``,
    ``detach``, widening casts and dropout that is off keep the values in their order: they
    are not recorded, and pass their input's link on (replay reshapes).
    ``nn.MultiheadAttention`` computes inside torch and is not recorded (a warning says so).
    Other calls that multiply-accumulate but are not recorded (transposed and 3-D convolutions,
    RNN/LSTM/GRU layers and cells, bilinear, tensordot, products by a vector, an einsum that is
    no single matmul) are named in one warning, with the module they run in: their MACs are
    missing from the trace.  A model of which nothing is recorded warns that its trace is
    empty.
    A module called again is named ``<name>_2``, ... (never another module's name).

    ``inputs_from`` links an op to the recorded ops whose outputs it reads, unchanged in place
    since.  A value that depends on no recorded op (the model's input, parameters, masks,
    embedding lookups, what is computed from them alone) is replayed as captured, which is
    exact: propagated replay changes only what depends on a recorded op.  An op that reads such
    a dependent value without a link (through an operation capture does not record: a
    narrowing cast, ``x.amax()``, ``torch.roll``, an ``einsum`` that is no matmul, ...) is
    named in a warning, with that operation; propagated replay feeds it its captured input, so
    the error of the ops before does not reach it.
    Under ``torch.inference_mode()`` tensors keep no version counter, so nothing is linked (a
    warning says so; ``torch.no_grad()`` links).

    With ``loss_fn``, ``loss_fn(output, target).backward()`` runs after the forward pass (the
    ``.grad`` of the parameters and of the inputs are restored afterwards) and each Linear/Conv
    op gains ``grad_output`` and ``grad_input``: dL/dy of that call and that call's own
    contribution to dL/dx (when the input needs a gradient), from autograd; and
    ``grad_weight``, that call's own weight gradient (what its weight-gradient GEMM computes),
    computed in float64 from the call's captured input and ``grad_output``, so a weight shared
    by several calls or modules, tied to other uses or decayed in the loss still gets its own.
    Under reentrant activation checkpointing (``use_reentrant=True``) the checkpointed calls
    get no gradients.  ``labels`` (an integer array, one class per row of the model's output's
    logits, else TraceError where a recorded op makes that output) become the trace's
    ``labels`` extra, for task accuracy in replay.  The op that makes the model's output (the
    first tensor it returns) is the trace's meta ``output``, which replay scores as the model's (its SQNR, and
    its accuracy against ``labels``); where no recorded op makes it, replay scores the last
    recorded op and a warning says so."""
    import warnings

    import torch
    import torch.nn.functional as F
    from torch.overrides import TorchFunctionMode

    stock = {cls: cls.forward for cls in (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d)}
    hooked = {name: m for name, m in model.named_modules()     # with a forward of its own
              if isinstance(m, tuple(stock))                   # (LoRA), its own F.linear
              and type(m).forward in stock.values()}           # calls are recorded instead
    rec = _Recorder({name for name, _ in model.named_modules() if name})
    grads: dict = {}                        # op name -> {role: gradient}
    handles = []
    T = torch.Tensor
    matmuls = {torch.matmul, torch.bmm, torch.mm, T.matmul, T.__matmul__, T.bmm, T.mm}
    # calls that multiply-accumulate but are recorded as no op (nn.MultiheadAttention's warn
    # of their own): their MACs are missing from the trace, and a warning names them
    unrecorded_macs = {F.conv3d, F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d,
                       F.bilinear, torch.tensordot, torch.mv, T.mv, torch.dot, T.dot,
                       torch.inner, T.inner, torch.vdot, T.vdot, torch.baddbmm, T.baddbmm,
                       torch.addbmm, T.addbmm, torch.addmv, T.addmv, torch.lstm, torch.gru,
                       torch.rnn_tanh, torch.rnn_relu, torch.lstm_cell, torch.gru_cell,
                       torch.rnn_tanh_cell, torch.rnn_relu_cell}
    unary = {F.relu: "relu", torch.relu: "relu", T.relu: "relu", F.relu_: "relu",
             torch.relu_: "relu", T.relu_: "relu", F.gelu: "gelu",
             F.softmax: "softmax", torch.softmax: "softmax", T.softmax: "softmax",
             torch.flatten: "flatten", T.flatten: "flatten", F.silu: "silu",
             torch.sigmoid: "sigmoid", T.sigmoid: "sigmoid", T.sigmoid_: "sigmoid",
             torch.tanh: "tanh", T.tanh: "tanh", T.tanh_: "tanh"}
    # recorded where the input is tainted: kind, and the attrs of a call
    def no_attrs(a, k):
        return {}

    def hardtanh(a, k):                 # F.hardtanh_ (a builtin) gets no defaults filled in
        lo, hi = _arg(a, k, 1, "min_val"), _arg(a, k, 2, "max_val")
        return {"min": -1.0 if lo is None else lo, "max": 1.0 if hi is None else hi}

    elementwise = {**{f: (name, no_attrs) for name in ("exp", "log", "sqrt", "rsqrt", "abs",
                                                       "erf")
                      for f in (getattr(torch, name), getattr(torch, name + "_"),
                                getattr(T, name), getattr(T, name + "_"))},
                   T.__abs__: ("abs", no_attrs), torch.special.erf: ("erf", no_attrs),
                   **dict.fromkeys((torch.pow, T.pow, T.pow_, T.__pow__, T.__ipow__),
                                   ("pow", lambda a, k: {"exponent": _arg(a, k, 1, "exponent")})),
                   **dict.fromkeys((torch.clamp, torch.clamp_, T.clamp, T.clamp_, torch.clip,
                                    torch.clip_, T.clip, T.clip_),
                                   ("clamp", lambda a, k: {"min": _arg(a, k, 1, "min"),
                                                           "max": _arg(a, k, 2, "max")})),
                   F.hardtanh: ("clamp", hardtanh), F.hardtanh_: ("clamp", hardtanh),
                   F.relu6: ("clamp", lambda a, k: {"min": 0.0, "max": 6.0})}
    inplace_arg = {F.relu: 1, F.silu: 1, F.relu6: 1, F.hardtanh: 3}   # where inplace=True goes
    binary = {f: name for name in graph_ops.BINARY
              for f in (getattr(torch, name), getattr(T, name), getattr(T, name + "_"))}
    reversed_ = {T.__rsub__: "sub", torch.rsub: "sub", T.__rtruediv__: "div"}   # c - x, c / x
    negs = {T.neg, torch.neg, T.__neg__, T.negative, torch.negative}           # x * -1
    binary.update({**reversed_, **dict.fromkeys(negs, "mul")})
    shape_only = {torch.zeros_like, torch.ones_like, torch.full_like, torch.empty_like,
                  torch.rand_like, torch.randn_like, torch.randint_like, T.new_zeros,
                  T.new_ones, T.new_full, T.new_empty}          # outputs owe x nothing but shape
    passes = {T.view, T.view_as, T.reshape, T.reshape_as, torch.reshape, T.unsqueeze,
              torch.unsqueeze, T.squeeze, torch.squeeze, T.contiguous, T.clone, torch.clone,
              T.detach, T.to, T.float, T.type_as, F.dropout, T.unflatten, torch.unflatten}
    pieces = {T.split, torch.split, T.chunk, torch.chunk, T.unbind, torch.unbind}
    expands = {T.expand, T.expand_as, torch.broadcast_to}
    permutes = {T.transpose, torch.transpose, T.permute, torch.permute, T.t, torch.t,
                T.swapaxes, torch.swapaxes, T.swapdims, torch.swapdims, T.T.__get__,
                T.mT.__get__, T.mH.__get__, T.movedim, torch.movedim, T.moveaxis,
                torch.moveaxis}
    concats = {torch.cat, torch.concat, torch.concatenate, torch.stack}
    pools = {F.max_pool2d: "max", F.avg_pool2d: "avg", F.adaptive_avg_pool2d: "adaptive"}
    functional = {F.linear, torch.addmm, F.conv1d, F.conv2d}
    scope: list[str] = []                   # the modules' forward calls under way
    missing: dict[str, None] = {}           # "module (call)" of each unrecorded MAC call
    mha = [n for n, m in model.named_modules() if isinstance(m, torch.nn.MultiheadAttention)]
    if mha:
        warnings.warn(f"nn.MultiheadAttention computes its projections and scores inside torch; "
                      f"not recorded: {', '.join(mha)}", stacklevel=2)

    def watch(op, role, t):
        """Record the gradient that reaches ``t`` in backward (a tensor hook keeps ids)."""
        if loss_fn is not None and t.requires_grad:
            t.register_hook(lambda g: grads.setdefault(op.name, {}).__setitem__(role, g))

    def enter(name: str):
        def pre_hook(m, args, kw):
            """Note the module's call (a hooked module's F.linear / F.conv* call is the
            module's; a functional MAC takes the name of the module it runs in); feed a hooked
            module a view of its input made for this call, so that the gradient reaching it is
            this call's own contribution to dL/dx (the mode passes the input's link on)."""
            scope.append(name)
            x = _arg(args, kw, 0, "input")
            if name not in hooked or not rec.on or loss_fn is None or x is None or \
                    not x.requires_grad:
                return None
            view = x.view_as(x)
            return ((view,) + tuple(args[1:]), kw) if args else (args, {**kw, "input": view})
        return pre_hook

    def leave(name: str) -> None:
        """End the module's call (if its pre-hook ran: one registered before it may raise)."""
        if scope and scope[-1] == name:
            scope.pop()

    params = {id(p) for p in model.parameters()}

    def weight(t) -> bool:
        """Whether ``t`` is a 2-D parameter of the model, or a view of one (``W.T``): a weight
        ``x @ W`` or an einsum multiplies as a linear layer does."""
        return isinstance(t, torch.Tensor) and t.ndim == 2 and not tainted(t) and \
            id(t if t._base is None else t._base) in params

    def tainted(t) -> bool:
        return isinstance(t, torch.Tensor) and id(t) in rec.tainted

    def check_link(op, *operands) -> None:
        """Name ``op`` in the warning when one of its ``operands`` ((tainted before the call,
        the source the trace links it to or None, the tensor)) is tainted but not linked, with
        the unrecorded calls that made such operands."""
        missed = [t for flag, s, t in operands if s is None and flag]
        if missed:
            via = sorted({rec.via.get(id(t)) for t in missed} - {None})
            unlinked.append(op.name + (f" (after {', '.join(via)})" if via else ""))

    def hook(name):
        def forward_hook(m, args, kw, out) -> None:   # returns None: out stays as it is
            leave(name)
            if name not in hooked or not rec.on or out is None:   # None: the forward raised
                return
            x = _arg(args, kw, 0, "input")
            conv1d = isinstance(m, torch.nn.Conv1d)
            if x is None or (not isinstance(m, torch.nn.Linear) and x.ndim != 3 + (not conv1d)):
                warnings.warn(f"{name}: not recorded: its input is not given as 'input' or is "
                              f"unbatched", stacklevel=2)
                return
            t = {"input": x, "weight": m.weight, "output": out}
            if m.bias is not None:
                t["bias"] = m.bias
            src = rec.source(x)
            if isinstance(m, torch.nn.Linear):
                op = rec.add(name, "linear", t, [src], module=True)
            else:
                try:
                    attrs = _conv_attrs(m, m.kernel_size, m.stride, m.padding, m.dilation,
                                        m.groups, 1 if conv1d else 2, m.padding_mode)
                except TraceError as exc:
                    warnings.warn(f"{name}: not recorded: {exc}", stacklevel=2)
                    return
                if conv1d:
                    t = {**t, "input": x.unsqueeze(2), "weight": m.weight.unsqueeze(2),
                         "output": out.unsqueeze(2)}
                op = rec.add(name, "conv2d", t, [src], attrs, module=True)
                rec.produced(out, op.name)
            check_link(op, (tainted(x), src, x))
            watch(op, "grad_output", out)
            watch(op, "grad_input", x)
        return forward_hook

    def record_functional(func, args, kw, out) -> None:
        """``F.linear``, ``torch.addmm`` (bias + a @ b, as a linear of weight b^T) and
        ``F.conv1d``/``F.conv2d`` called outside the hooked modules."""
        if func is torch.addmm:
            bias, x, b = (_arg(args, kw, i, n) for i, n in ((0, "input"), (1, "mat1"),
                                                            (2, "mat2")))
            if kw.get("beta", 1) != 1 or kw.get("alpha", 1) != 1 or \
                    bias.shape not in (b.shape[1:], (1,) + b.shape[1:]):
                return                      # not a linear layer: the taint warns downstream
            t = {"input": x, "weight": b.t(), "bias": bias.reshape(-1), "output": out}
        else:
            x, w, bias = (_arg(args, kw, i, n) for i, n in ((0, "input"), (1, "weight"),
                                                            (2, "bias")))
            t = {"input": x, "weight": w, "output": out, **({} if bias is None else
                                                            {"bias": bias})}
        src, w = rec.source(x), t["weight"]
        module = next((n for n in reversed(scope) if n), "")      # the model itself: ""
        if func in (torch.addmm, F.linear):
            op = rec.add(module or "linear", "linear", t, [src], module=bool(module))
        else:
            dims = 1 if func is F.conv1d else 2
            if x.ndim != dims + 2:
                warnings.warn(f"{func.__name__} of an unbatched input: not recorded",
                              stacklevel=3)
                return
            try:
                attrs = _conv_attrs(func.__name__, w.shape[2:], *(
                    _arg(args, kw, i, n) or d for i, n, d in (
                        (3, "stride", 1), (4, "padding", 0), (5, "dilation", 1),
                        (6, "groups", 1))), dims)
            except TraceError as exc:
                warnings.warn(f"not recorded: {exc}", stacklevel=3)
                return
            if dims == 1:
                t = {**t, "input": x.unsqueeze(2), "weight": w.unsqueeze(2),
                     "output": out.unsqueeze(2)}
            op = rec.add(module or "conv2d", "conv2d", t, [src], attrs, module=bool(module))
            rec.produced(out, op.name)
        check_link(op, (tainted(x), src, x), (tainted(w), None, w))   # a weight is never linked

    def record_binary(kind, a, b, out, asrc, bsrc, at, bt, reverse: bool) -> None:
        """``a`` (before the call) ``kind`` ``b`` (``b kind a`` with ``reverse``); the linked
        operand goes first (``reverse`` flipped for sub and div); a second operand without a
        link is a constant."""
        if asrc is None and bsrc is not None:
            a, b, asrc, bsrc, at, bt = b, a, bsrc, asrc, bt, at
            reverse = reverse != (kind in ("sub", "div"))
        a, b = (v if isinstance(v, torch.Tensor) else torch.tensor(float(v), dtype=torch.float64)
                for v in (a, b))
        sources = [asrc, bsrc] if asrc and bsrc else [asrc] if asrc else []
        op = rec.add(kind, kind, {"input": a, "other": b, "output": out}, sources,
                     {"reverse": True} if reverse else {})
        check_link(op, (at, asrc, a), (bt, bsrc if asrc else None, b))

    def record_concat(func, args, kw, out):
        """``torch.cat``/``concat``/``concatenate`` or ``stack`` (a concat of parts of length 1)
        where a part is tainted; the one part of a cat that is the identity (its output keeps
        that part's link, or its cause for the warning), else None."""
        parts, dim = _arg(args, kw, 0, "tensors"), _arg(args, kw, 1, "dim", "axis") or 0
        stack = func is torch.stack
        if not stack:                          # cat skips 1-D empty parts (a KV cache's first)
            parts = [p for p in parts if p.ndim == out.ndim or p.shape != (0,)]
        if not any(tainted(p) for p in parts) or not out.is_floating_point() or "out" in kw or \
                any(p.ndim != out.ndim - stack for p in parts):
            return None
        sources = [rec.source(p) for p in parts]
        if len(parts) == 1 and not stack:      # the identity: the link passes on, as a view's
            if sources[0]:
                rec.produced(out, sources[0])
            return parts[0]
        dim = int(dim) % out.ndim
        linked = [i for i, s in enumerate(sources) if s]
        op = rec.add("concat", "concat", {"output": out}, [sources[i] for i in linked],
                     {"dim": dim, "sizes": [1 if stack else p.shape[dim] for p in parts],
                      "linked": linked})
        check_link(op, *((tainted(p), s, p) for p, s in zip(parts, sources)))
        return None

    def repeat_heads(t, src, r: int) -> tuple:
        """Grouped-query keys or values (..., Hk, L, D) repeated ``r`` times per head: the
        ``expand`` op of (..., Hk, 1, L, D) to (..., Hk, r, L, D), and its name."""
        wide = t.unsqueeze(-3).expand(*t.shape[:-2], r, *t.shape[-2:])
        op = rec.add("expand", "expand", {"input": t.unsqueeze(-3), "output": wide}, [src],
                     FUSED)
        check_link(op, (tainted(t), src, t))
        return wide.reshape(*t.shape[:-3], -1, *t.shape[-2:]), op.name

    def record_attention(q, args, kw, out) -> None:
        """``F.scaled_dot_product_attention`` as the ops it computes: ``permute`` (k^T),
        ``attention_scores`` (q @ k^T), ``mul`` by the scale, ``add`` of the mask, ``softmax``
        and ``matmul`` (by v, whose output is the call's); all but the last ``fused``: their
        values stay inside the attention kernel."""
        k, v, mask = (_arg(args, kw, i, n) for i, n in ((1, "key"), (2, "value"),
                                                        (3, "attn_mask")))
        ks, vs, ms = rec.source(k), rec.source(v), rec.source(mask)
        kt_, vt_, mt = tainted(k), tainted(v), tainted(mask)
        if q.ndim >= 3 and k.ndim >= 3 and 1 < k.shape[-3] < q.shape[-3]:    # grouped query
            k, ks = repeat_heads(k, ks, q.shape[-3] // k.shape[-3])
            v, vs = repeat_heads(v, vs, q.shape[-3] // v.shape[-3])
        kt = k.transpose(-2, -1)
        t_op = rec.add("permute", "permute", {"input": k, "output": kt}, [ks],
                       {"dims": _last_two_swapped(k.ndim), **FUSED})
        check_link(t_op, (kt_, ks, k))
        qs = rec.source(q)
        scores = q @ kt
        op = rec.add("attention_scores", "attention_scores", {"a": q, "b": kt, "output": scores},
                     [qs, t_op.name] if qs else [], FUSED)
        check_link(op, (tainted(q), qs, q), (kt_, t_op.name if qs else None, k))
        scale = _arg(args, kw, 6, "scale")
        scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
        h = scores * scale
        op = rec.add("mul", "mul", {"input": scores, "other": torch.tensor(
            scale, dtype=torch.float64), "output": h}, [op.name], FUSED)
        made = None                          # "causal", "bool": the mask's origin
        if _arg(args, kw, 5, "is_causal"):
            mask, made = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril(), "causal"
        if mask is not None:
            if mask.dtype == torch.bool:     # as an additive mask, no longer its source's values
                ms, made = None, made or "bool"
                mask = torch.zeros(mask.shape, dtype=h.dtype).masked_fill(~mask, -math.inf)
            h, before = h + mask, h
            op = rec.add("add", "add", {"input": before, "other": mask, "output": h},
                         [op.name, ms] if ms else [op.name],
                         {**FUSED, **({"mask": made} if made else {})})
            check_link(op, (mt, ms, mask))
        p = torch.softmax(h, -1)           # SDPA's softmax gives a row of -inf zeros, not NaN
        p = torch.where(torch.isneginf(h).all(-1, keepdim=True), torch.zeros((), dtype=p.dtype), p)
        op = rec.add("softmax", "softmax", {"input": h, "output": p}, [op.name],
                     {"safe": True, **FUSED})
        if (_arg(args, kw, 4, "dropout_p") or 0.0) == 0.0:    # else the output is random
            op = rec.add("matmul", "matmul", {"a": p, "b": v, "output": out},
                         [op.name, vs] if vs else [op.name])
            check_link(op, (vt_, vs, v))

    def arrange(t, perm: list):
        """``t`` permuted by ``perm``, the permute recorded where ``t`` is tainted; (the
        result, its source).  Reshapes are not recorded: replay reshapes a link."""
        src = rec.source(t)
        if not einsum.moves(perm):
            return t, src
        p = t.permute(perm)
        if tainted(t):
            op = rec.add("permute", "permute", {"input": t, "output": p}, [src], {"dims": perm})
            check_link(op, (True, src, t))
            src = op.name
        return p, src

    def missed_macs(call: str) -> None:
        """Note an unrecorded call that multiply-accumulates, with the module it runs in."""
        where = scope[-1] if scope else ""
        missing[f"{where} ({call})" if where else call] = None

    def record_einsum(args, out) -> bool:
        """A two-operand ``torch.einsum`` that is a batched matmul (:mod:`simulator.einsum`),
        as the ops it amounts to: the operands laid out by ``permute`` ops, a ``matmul`` named
        ``einsum`` (a ``linear`` by a weight without batch letters), then a ``permute`` to the
        output (each only where it moves something; the operand with a link goes first, so
        that it links, and a weight second); whether it recorded them.  Other equations are
        left unrecorded (a warning names those that sum a letter; their readers warn,
        unlinked)."""
        pair = list(args[1]) if len(args) == 2 and isinstance(args[1], (list, tuple)) \
            else list(args[1:])
        if len(pair) != 2 or not isinstance(args[0], str) or not all(
                isinstance(t, torch.Tensor) and t.is_floating_point() for t in pair + [out]):
            return False
        x, y = pair
        swap = (bool(rec.source(y)) and not rec.source(x)) or (tainted(y) and not tainted(x)) \
            or (weight(x) and not tainted(y) and not weight(y))
        p = einsum.plan(args[0], tuple(x.shape), tuple(y.shape), swap)
        if p is None:
            return False
        if swap:
            x, y = y, x
        a, asrc = arrange(x, p.a_perm)
        b, bsrc = arrange(y, p.b_perm)
        middle = out.permute(p.back) if einsum.moves(p.back) else out
        if len(p.b_shape) == 2 and weight(y):
            op = rec.add("einsum", "linear", {"input": a.reshape(p.a_shape),
                                              "weight": b.reshape(p.b_shape).mT,
                                              "output": middle.reshape(p.product)}, [asrc])
            check_link(op, (tainted(x), asrc, x))
        else:
            op = rec.add("einsum", "matmul", {"a": a.reshape(p.a_shape),
                                              "b": b.reshape(p.b_shape),
                                              "output": middle.reshape(p.product)},
                         pair_sources(asrc, bsrc, y))
            check_link(op, (tainted(x), asrc, x), (tainted(y), bsrc if asrc else None, y))
        if middle is out:
            rec.produced(out, op.name)            # replay reshapes the product to it
        else:
            rec.add("permute", "permute", {"input": middle, "output": out}, [op.name],
                    {"dims": p.out_perm})
        return True

    def pair_sources(asrc, bsrc, b) -> list:
        """A matmul's ``inputs_from``: both operands' sources, the first's alone where the
        second operand ``b`` is a constant, else none (the graph only where all are known)."""
        return [asrc, bsrc] if asrc and bsrc else [asrc] if asrc and not tainted(b) else []

    def record_matmul(x, b, out) -> None:
        """``x @ b`` (both 2-D or more): a ``linear`` where ``b`` is a weight; flipped
        (:func:`record_flipped`) where ``x`` is a constant and a weight, or ``b`` alone depends
        on recorded ops and is batched at least as ``x`` is (flipped, a batched constant
        against a shared ``b`` would be priced once per batch); else a ``matmul``."""
        src, xt = rec.source(x), tainted(x)
        if weight(b):
            op = rec.add("matmul", "linear", {"input": x, "weight": b.mT, "output": out},
                         [src])
            check_link(op, (xt, src, x))
        elif not xt and (weight(x) or (tainted(b) and x.ndim <= b.ndim)):
            record_flipped(x, b, out)
        else:
            bsrc = rec.source(b)
            op = rec.add("matmul", "matmul", {"a": x, "b": b, "output": out},
                         pair_sources(src, bsrc, b))
            check_link(op, (xt, src, x), (tainted(b), bsrc if src else None, b))

    def record_flipped(c, h, out) -> None:
        """``c @ h``, ``c`` a constant, as ``(h^T c^T)^T`` so that ``h`` links (a matmul's
        link may go to its first operand alone) and a weight ``c`` is a linear's: a
        ``permute`` of ``h`` (where it depends on recorded ops), a ``linear`` by ``c`` where
        it is a weight (else a ``matmul`` by ``c^T``), and a ``permute`` back to the
        output."""
        ht, hsrc = arrange(h, _last_two_swapped(h.ndim))
        flipped = out.mT
        op = rec.add("matmul", "linear", {"input": ht, "weight": c, "output": flipped},
                     [hsrc]) if weight(c) else \
            rec.add("matmul", "matmul", {"a": ht, "b": c.mT, "output": flipped}, [hsrc])
        check_link(op, (tainted(h), hsrc, h))
        rec.add("permute", "permute", {"input": flipped, "output": out}, [op.name],
                {"dims": _last_two_swapped(out.ndim)})

    class Mode(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kw = dict(kwargs or {})
            x = _arg(args, kw, 0, "input", "query")
            src = rec.source(x) if isinstance(x, torch.Tensor) else None
            kind = unary.get(func) or binary.get(func) or elementwise.get(func, ("",))[0]
            other = -1.0 if func in negs else _arg(args, kw, 1, "other") if kind in \
                graph_ops.BINARY else None
            osrc = rec.source(other) if isinstance(other, torch.Tensor) else None
            xt, ot = tainted(x), tainted(other)
            name = getattr(func, "__name__", "")
            inplace = (name.endswith("_") and not name.endswith("__")) or name in (
                "__setitem__", "__iadd__", "__isub__", "__imul__", "__itruediv__",
                "__ipow__") or (func in inplace_arg and bool(_arg(args, kw, inplace_arg[func],
                                                                  "inplace")))
            before = x.detach().clone() if inplace and kind else x    # x before an in-place op
            if inplace and kind and other is x:
                other = before                       # h.add_(h): both operands as they were
            if before is not x and id(x) in rec.via:  # the warning names x's cause for it
                rec.taint(before)
                rec.via[id(before)] = rec.via[id(x)]
            out = func(*args, **kw)
            if not rec.on:
                return out
            origin = x if func in passes else None      # the value whose cause out keeps
            if func not in shape_only and any(tainted(t) for t in _tensors((args, kw))):
                for t in _tensors(out if not inplace else (out, x)):
                    rec.taint(t)
            try:
                if func in pieces and xt and isinstance(out, (tuple, list)):
                    dim = _arg(args, kw, 1 + (func not in (T.unbind, torch.unbind)), "dim") or 0
                    dim, start = dim % x.ndim, 0
                    for piece in out:                    # each a slice of x along dim
                        n = piece.shape[dim] if piece.ndim == x.ndim else None
                        at = [start, start + n, None] if n is not None else start
                        start += 1 if n is None else n
                        check_link(rec.add("index", "index", {"input": x, "output": piece}, [src],
                                           {"index": [[None] * 3] * dim + [at]}), (xt, src, x))
                if func in unrecorded_macs:
                    missed_macs(name)
                if not isinstance(out, torch.Tensor):
                    return out
                if func in matmuls:
                    b = _arg(args, kw, 1, "other", "mat2")
                    if getattr(x, "ndim", 0) >= 2 and getattr(b, "ndim", 0) >= 2:
                        record_matmul(x, b, out)
                    else:
                        missed_macs(f"{name.strip('_')} by a vector")
                elif func in binary:
                    if out.is_floating_point() and (xt or ot) and "out" not in kw and \
                            kw.get("alpha", 1) == 1 and kw.get("rounding_mode") is None and \
                            isinstance(other, (torch.Tensor, int, float)):
                        record_binary(kind, before, other, out, src, osrc, xt, ot,
                                      func in reversed_)
                elif func in unary and "out" not in kw and xt:
                    attrs = {}
                    if kind == "softmax":
                        dim = _arg(args, kw, 1, "dim")
                        if dim is None or dim not in (-1, x.ndim - 1):
                            return out                   # replay applies softmax on the last axis
                    elif kind == "gelu":
                        attrs["approximate"] = kw.get("approximate", "none")
                    check_link(rec.add(kind, kind, {"input": before, "output": out}, [src], attrs),
                               (xt, src, x))
                elif func is F.scaled_dot_product_attention:
                    record_attention(x, args, kw, out)
                elif func is torch.einsum:
                    if not record_einsum(args, out) and isinstance(args[0], str) and \
                            einsum.contracts(args[0]):
                        missed_macs(f"einsum {args[0]!r}")
                elif func in functional and not hooked.keys() & set(scope):
                    record_functional(func, args, kw, out)
                elif func in passes:
                    if src and out is not x and _same_values(func, x, out, args, kw):
                        rec.produced(out, src)
                elif func in concats:
                    origin = record_concat(func, args, kw, out)
                elif not xt:
                    pass                                 # the ops below are recorded where tainted
                elif func in elementwise and out.is_floating_point() and "out" not in kw:
                    attrs = elementwise[func][1](args, kw)
                    if all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
                           for v in attrs.values()):
                        if kind == "pow" and attrs["exponent"] in (0.5, -0.5):   # as torch runs
                            kind, attrs = "sqrt" if attrs["exponent"] > 0 else "rsqrt", {}
                        check_link(rec.add(kind, kind, {"input": before, "output": out}, [src],
                                           attrs), (xt, src, x))
                elif func in permutes:
                    check_link(rec.add("permute", "permute", {"input": x, "output": out}, [src],
                                       {"dims": _permutation(func, x, args, kw)}), (xt, src, x))
                elif func in expands:
                    check_link(rec.add("expand", "expand", {"input": x, "output": out}, [src]),
                               (xt, src, x))
                elif func is T.__getitem__:
                    entries = _index_entries(args[1])
                    if entries is not None:
                        check_link(rec.add("index", "index", {"input": x, "output": out}, [src],
                                           {"index": entries}), (xt, src, x))
                elif func in (F.layer_norm, F.rms_norm):
                    norm = "layer_norm" if func is F.layer_norm else "rms_norm"
                    roles = ("weight", "bias") if norm == "layer_norm" else ("weight",)
                    params = {r: _arg(args, kw, i, r) for i, r in enumerate(roles, 2)}
                    params = {r: v for r, v in params.items() if v is not None}
                    eps = _arg(args, kw, len(roles) + 2, "eps")
                    if eps is None:      # rms_norm's: the epsilon of the type torch computes in
                        eps = 1e-5 if norm == "layer_norm" else torch.finfo(
                            torch.promote_types(x.dtype, torch.float32)).eps
                    op = rec.add(norm, norm, {"input": x, "output": out, **params}, [src], {
                        "normalized_shape": _int_list(_arg(args, kw, 1, "normalized_shape")),
                        "eps": float(eps)})
                    check_link(op, (xt, src, x), *((tainted(v), None, v) for v in params.values()))
                elif func in (torch.mean, T.mean) and out.is_floating_point() and "dtype" not in kw:
                    dim = _arg(args, kw, 1, "dim")
                    dims = (_int_list(dim) if dim is not None else []) or list(range(x.ndim))
                    check_link(rec.add("mean", "mean", {"input": x, "output": out}, [src], {
                        "dims": [d % x.ndim for d in dims],
                        "keepdim": bool(_arg(args, kw, 2, "keepdim"))}), (xt, src, x))
                elif func in pools and x.ndim == 4:
                    if pools[func] == "adaptive":
                        op = rec.add("adaptive_avg_pool2d", "adaptive_avg_pool2d",
                                     {"input": x, "output": out}, [src])
                    else:
                        op = rec.add("pool2d", "pool2d", {"input": x, "output": out}, [src],
                                     _torch_pool_attrs(pools[func], args, kw))
                    check_link(op, (xt, src, x))
                elif func is F.batch_norm and not _arg(args, kw, 5, "training"):
                    t = {"input": x, "output": out}
                    for i, role in enumerate(("running_mean", "running_var", "weight", "bias"), 1):
                        if _arg(args, kw, i, role) is not None:
                            t[role] = _arg(args, kw, i, role)
                    if "running_var" in t:
                        eps = _arg(args, kw, 7, "eps")
                        op = rec.add("batch_norm", "batch_norm", t, [src], {
                            "eps": 1e-5 if eps is None else float(eps)})
                        check_link(op, (xt, src, x), *((tainted(v), None, v) for r, v in t.items()
                                                       if r not in ("input", "output")))
                return out
            except _Unrecordable as exc:
                warnings.warn(f"{name.strip('_')}: not recorded: {exc}", stacklevel=2)
                return out
            finally:                    # name what made unlinked values, for the warning
                # a view of an unlinked value keeps that value's cause
                cause = rec.via.get(id(origin)) if origin is not None and \
                    rec.source(origin) is None else None
                for t in _tensors(out if not inplace else (out, x)):
                    if tainted(t) and rec.source(t) is None:
                        rec.via[id(t)] = cause or name.strip("_")

    args = inputs if isinstance(inputs, (tuple, list)) else (inputs,)
    unlinked: list[str] = []                # ops fed by something capture did not record
    leaves = [t for t in list(model.parameters()) + list(args) + list(dict(kwargs or {}).values())
              if isinstance(t, torch.Tensor) and t.is_leaf]
    saved = [t.grad for t in leaves]
    try:
        for name, m in model.named_modules():       # TorchScript modules take no hooks
            if not isinstance(m, torch.jit.ScriptModule):
                handles.append(m.register_forward_pre_hook(enter(name), with_kwargs=True,
                                                           prepend=True))
                handles.append(m.register_forward_hook(hook(name), with_kwargs=True,
                                                       always_call=True))  # ends it on errors
        with torch.set_grad_enabled(loss_fn is not None), Mode():
            output = model(*args, **dict(kwargs or {}))
        rec.on = False                      # activation checkpointing reruns forward hooks
        last = next(iter(_tensors(output)), None)
        made = rec.source(last) if last is not None else None
        if missing:
            calls = ", ".join(list(missing)[:3]) + (f" and {len(missing) - 3} more"
                                                    if len(missing) > 3 else "")
            warnings.warn(f"not recorded, though they multiply-accumulate: {calls} "
                          f"(capture records linear, conv1d/conv2d, matmul/bmm/mm of 2-D or more "
                          f"operands and einsums that are one matmul): their MACs are missing "
                          f"from the trace, so replay neither prices them nor measures their "
                          f"error", stacklevel=2)
        if not rec.ops:
            warnings.warn("no op recorded: the trace is empty (see capture_torch's doc for "
                          "what it records)", stacklevel=2)
        elif not made and not rec.blind:
            cause = rec.via.get(id(last)) if last is not None else None
            warnings.warn(f"the model's output is not the output of a recorded op, so replay "
                          f"scores the last recorded op's, {rec.ops[-1].name}, as the model's "
                          f"(its SQNR, and its accuracy against labels): the op that makes the "
                          f"output is not one capture records"
                          + (f" ({cause})" if cause else " (an einsum that is no single "
                             "matmul, a custom kernel, ...)"), stacklevel=2)
        if rec.blind:
            warnings.warn("tensors made under torch.inference_mode() keep no version counter, "
                          "so capture cannot see an in-place change and links no op to "
                          "another: propagated replay is per-op; use torch.no_grad() instead",
                          stacklevel=2)
        elif unlinked:
            warnings.warn(unlinked_message(unlinked), stacklevel=2)
        if loss_fn is not None:
            for t in leaves:                # backward would add into the user's .grad in place
                t.grad = None
            loss_fn(output, target).backward()
            for op in rec.ops:
                for role, g in grads.get(op.name, {}).items():
                    if op.kind == "conv2d" and g.ndim == 3:        # Conv1d
                        g = g.unsqueeze(2)
                    op.tensors[role] = _np(g)
                if op.kind in ("linear", "conv2d") and "grad_output" in op.tensors:
                    op.tensors["grad_weight"] = _weight_gradient(op)
    finally:
        for h in handles:
            h.remove()
        for t, g in zip(leaves, saved):
            t.grad = g
    extras = {} if labels is None else {"labels": np.asarray(labels)}
    trace = Trace(rec.ops, extras, model=model_name or type(model).__name__,
                  meta={"output": made} if made else None)
    trace.check_labels_fit()
    return trace
