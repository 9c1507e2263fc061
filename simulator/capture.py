"""Building traces from what a user has: plain arrays, or (optional extras) PyTorch models.

``from_arrays`` takes ops as a mapping of op name to a mapping with ``kind``, the tensors by
role, and optionally ``attrs`` and ``inputs_from``.  A linear or matmul op may leave out
``output``: it is then the exact product (float64: ``x @ W.T + b`` for linear, ``a @ b`` for
matmul), so replay measures error against exact arithmetic.
"""
from __future__ import annotations

from typing import Any, Mapping, Union

import numpy as np

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


class _Recorder:
    """Collects ops during one forward pass; links an op to the ops that produced its inputs.
    A link holds only while the tensor is as the op left it: an in-place change (``h += x``,
    ``relu_``) bumps the tensor's version and the link is dropped."""

    def __init__(self, reserved: set) -> None:
        self.ops: list[Op] = []
        self.names: set[str] = set()
        self.reserved = reserved                 # module names: a repeat call's name avoids them
        self.producer: dict[int, tuple] = {}     # id(tensor) -> (op name, tensor version then)
        self.keep: list = []                     # tensors kept alive, so ids stay unique
        self.on = True                           # off once the forward pass is over

    @staticmethod
    def _version(t) -> Union[int, None]:
        """``t``'s in-place version (None for inference-mode tensors, which keep none)."""
        return None if t.is_inference() else t._version

    def source(self, t) -> Union[str, None]:
        """The op whose output ``t`` is, unchanged since; None if unknown."""
        got = self.producer.get(id(t))
        ok = got is not None and got[1] is not None and got[1] == self._version(t)
        return got[0] if ok else None

    def produced(self, t, name: str) -> None:
        self.producer[id(t)] = (name, self._version(t))
        self.keep.append(t)

    def add(self, base: str, kind: str, tensors: dict, sources: list, attrs=None,
            module: bool = False) -> Op:
        """Record an op; ``sources`` are the op names its inputs came from (None: unknown);
        ``module``: ``base`` is a module's name (its first call takes it; other ops never
        take a module's name)."""
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


def _conv_attrs(m, dims: int) -> dict:
    """stride, padding, dilation, groups of a Conv1d/Conv2d as conv2d pairs."""
    k = tuple(m.kernel_size)
    pad = m.padding
    if pad == "valid":
        pad = (0,) * dims
    elif pad == "same":
        if any((d * (kk - 1)) % 2 for d, kk in zip(m.dilation, k)):
            raise TraceError(f"{m}: padding='same' with an even kernel pads unevenly; not "
                             f"representable as a conv2d op")
        pad = tuple(d * (kk - 1) // 2 for d, kk in zip(m.dilation, k))
    if m.padding_mode != "zeros":
        raise TraceError(f"{m}: padding_mode={m.padding_mode!r} is not modelled (zeros only)")
    one = (1,) if dims == 1 else ()
    zero = (0,) if dims == 1 else ()
    return {"stride": list(one + tuple(m.stride)), "padding": list(zero + tuple(pad)),
            "dilation": list(one + tuple(m.dilation)), "groups": m.groups}


def capture_torch(model, inputs, *, kwargs=None, loss_fn=None, target=None, labels=None,
                  model_name: str = "") -> Trace:
    """Run ``model(*inputs, **kwargs)`` and record its ops (needs torch).

    Recorded: ``nn.Linear``, ``nn.Conv1d`` (as a conv2d of height 1) and ``nn.Conv2d`` modules
    through forward hooks (a conv with non-zero padding modes or uneven 'same' padding is left
    out with a warning); ``torch.matmul``/``bmm``/``@`` of two operands of 2 or more dims
    (``matmul``) and the scores ``q @ k^T`` of ``F.scaled_dot_product_attention``
    (``attention_scores``, before scaling; grouped-query keys repeated per query head, so
    their memory traffic is priced once per query head) through a
    ``TorchFunctionMode``; ``relu``, ``gelu``, ``softmax`` and ``flatten`` calls as elementwise
    ops, so the graph links through them.  ``nn.MultiheadAttention`` computes inside torch and
    is not recorded (a warning says so).  A module called again is named ``<name>_2``, ... (never
    another module's name).  ``inputs_from`` is recorded where every input of an op is the
    output of a recorded op, unchanged in place since; a Linear/Conv or elementwise op whose
    input is neither that nor the model's own input is named in a warning (propagated replay
    feeds it its captured input).

    With ``loss_fn``, ``loss_fn(output, target).backward()`` runs after the forward pass (the
    ``.grad`` of the parameters and of the inputs are restored afterwards) and each Linear/Conv
    op gains ``grad_output`` and ``grad_input``: dL/dy of that call and that call's own
    contribution to dL/dx (when the input needs a gradient), from autograd; and
    ``grad_weight``, that call's own weight gradient (what its weight-gradient GEMM computes),
    computed in float64 from the call's captured input and ``grad_output``, so a weight shared
    by several calls or modules, tied to other uses or decayed in the loss still gets its own.
    Under reentrant activation checkpointing (``use_reentrant=True``) the checkpointed calls
    get no gradients.  ``labels`` (an integer array) become the trace's ``labels`` extra, for
    task accuracy in replay."""
    import warnings

    import torch
    import torch.nn.functional as F
    from torch.overrides import TorchFunctionMode

    hooked = {name: m for name, m in model.named_modules()
              if isinstance(m, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d))}
    rec = _Recorder(set(hooked))
    grads: dict = {}                        # op name -> {role: gradient}
    handles = []
    matmuls = {torch.matmul, torch.bmm, torch.Tensor.matmul, torch.Tensor.__matmul__,
               torch.Tensor.bmm}
    elementwise = {F.relu: "relu", torch.relu: "relu", torch.Tensor.relu: "relu",
                   F.gelu: "gelu", F.softmax: "softmax", torch.softmax: "softmax",
                   torch.Tensor.softmax: "softmax", torch.flatten: "flatten",
                   torch.Tensor.flatten: "flatten"}
    mha = [n for n, m in model.named_modules() if isinstance(m, torch.nn.MultiheadAttention)]
    if mha:
        warnings.warn(f"nn.MultiheadAttention computes its projections and scores inside torch; "
                      f"not recorded: {', '.join(mha)}", stacklevel=2)

    def watch(op, role, t):
        """Record the gradient that reaches ``t`` in backward (a tensor hook keeps ids)."""
        if loss_fn is not None and t.requires_grad:
            t.register_hook(lambda g: grads.setdefault(op.name, {}).__setitem__(role, g))

    def pre_hook(m, args, kw):
        """Feed the module a view of its input made for this call, so that the gradient
        reaching it is this call's own contribution to dL/dx."""
        x = _arg(args, kw, 0, "input")
        if not rec.on or loss_fn is None or x is None or not x.requires_grad:
            return None
        view = x.view_as(x)
        if rec.source(x):
            rec.produced(view, rec.source(x))
        if id(x) in given:
            given.add(id(view))
        return ((view,) + tuple(args[1:]), kw) if args else (args, {**kw, "input": view})

    def check_link(op, x, src) -> None:
        """Name ``op`` in the warning when its input ``x`` (recorded source ``src``) is neither
        a recorded op's output nor the model's own input."""
        if src is None and id(x) not in given:
            unlinked.append(op.name)

    def hook(name):
        def forward_hook(m, args, kw, out):
            if not rec.on:
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
                    attrs = _conv_attrs(m, 1 if conv1d else 2)
                except TraceError as exc:
                    warnings.warn(f"{name}: not recorded: {exc}", stacklevel=2)
                    return
                if conv1d:
                    t = {**t, "input": x.unsqueeze(2), "weight": m.weight.unsqueeze(2),
                         "output": out.unsqueeze(2)}
                op = rec.add(name, "conv2d", t, [src], attrs, module=True)
                rec.produced(out, op.name)
            check_link(op, x, src)
            watch(op, "grad_output", out)
            watch(op, "grad_input", x)
        return forward_hook

    class Mode(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kw = dict(kwargs or {})
            x = _arg(args, kw, 0, "input", "query")
            src = rec.source(x) if isinstance(x, torch.Tensor) else None
            kind = elementwise.get(func)
            inplace = kind == "relu" and bool(_arg(args, kw, 1, "inplace"))
            before = x.detach().clone() if inplace else x       # relu_(x): x before the call
            out = func(*args, **kw)
            if not rec.on:
                return out
            if func in matmuls:
                b = _arg(args, kw, 1, "other", "mat2")
                if getattr(x, "ndim", 0) >= 2 and getattr(b, "ndim", 0) >= 2:
                    bsrc = rec.source(b)
                    rec.add("matmul", "matmul", {"a": x, "b": b, "output": out}, [src, bsrc])
            elif kind and isinstance(out, torch.Tensor):
                attrs = {}
                if kind == "softmax":
                    dim = _arg(args, kw, 1, "dim")
                    if dim is None or dim not in (-1, x.ndim - 1):
                        return out                   # replay applies softmax on the last axis
                elif kind == "gelu":
                    attrs["approximate"] = kw.get("approximate", "none")
                check_link(rec.add(kind, kind, {"input": before, "output": out}, [src], attrs),
                           x, src)
            elif func is F.scaled_dot_product_attention:
                k = _arg(args, kw, 1, "key")
                if x.ndim >= 3 and k.ndim >= 3 and 1 < k.shape[-3] < x.shape[-3]:
                    k = k.repeat_interleave(x.shape[-3] // k.shape[-3], dim=-3)   # grouped query
                kt = k.transpose(-2, -1)
                rec.add("attention_scores", "attention_scores",
                        {"a": x, "b": kt, "output": x @ kt}, [None])
            return out

    for name, m in hooked.items():
        handles.append(m.register_forward_pre_hook(pre_hook, with_kwargs=True))
        handles.append(m.register_forward_hook(hook(name), with_kwargs=True))
    args = inputs if isinstance(inputs, (tuple, list)) else (inputs,)
    given = {id(t) for t in list(args) + list(dict(kwargs or {}).values())}   # the model's inputs
    unlinked: list[str] = []                # ops fed by something capture did not record
    leaves = [t for t in list(model.parameters()) + list(args) + list(dict(kwargs or {}).values())
              if isinstance(t, torch.Tensor) and t.is_leaf]
    saved = [t.grad for t in leaves]
    try:
        with torch.set_grad_enabled(loss_fn is not None), Mode():
            output = model(*args, **dict(kwargs or {}))
        rec.on = False                      # activation checkpointing reruns forward hooks
        if unlinked:
            named = ", ".join(unlinked[:3]) + (f" and {len(unlinked) - 3} more ops"
                                               if len(unlinked) > 3 else "")
            warnings.warn(f"{named}: the input is the output of an operation capture does not "
                          f"record (pooling, a residual add, a reshape, ...), so propagated "
                          f"replay feeds the captured input there and the error of the ops "
                          f"before does not reach it", stacklevel=2)
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
    return Trace(rec.ops, extras, model=model_name or type(model).__name__)


# ---- ONNX (optional extra: pip install onnx onnxruntime) ----------------------------------------
def _onnx_attrs(node) -> dict:
    """A node's attributes, strings decoded."""
    from onnx import helper
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def _onnx_conv_attrs(node, x: np.ndarray, w: np.ndarray) -> tuple[dict, bool]:
    """conv2d attrs of an ONNX Conv node on input ``x`` and whether it is 1-D (then lifted to
    height 1); TraceError for what a conv2d op cannot hold (3-D, asymmetric padding)."""
    at = _onnx_attrs(node)
    dims = w.ndim - 2
    if dims not in (1, 2):
        raise TraceError(f"ONNX node {node.name!r}: only 1-D and 2-D Conv are captured")
    strides = list(at.get("strides", [1] * dims))
    dilations = list(at.get("dilations", [1] * dims))
    auto = at.get("auto_pad", "NOTSET")
    if auto == "VALID":
        pads = [0] * 2 * dims
    elif auto in ("SAME_UPPER", "SAME_LOWER"):        # output size ceil(in / stride)
        total = [max((-(-n // s) - 1) * s + d * (k - 1) + 1 - n, 0)
                 for n, s, d, k in zip(x.shape[2:], strides, dilations, w.shape[2:])]
        pads = [t // 2 for t in total] + [t - t // 2 for t in total]
    else:
        pads = list(at.get("pads", [0] * 2 * dims))
    if pads[:dims] != pads[dims:]:
        raise TraceError(f"ONNX node {node.name!r}: asymmetric pads {pads} are not modelled")
    lift = (lambda v, fill: [fill] + list(v)) if dims == 1 else (lambda v, fill: list(v))
    return ({"stride": lift(strides, 1), "padding": lift(pads[:dims], 0),
             "dilation": lift(dilations, 1), "groups": int(at.get("group", 1))}, dims == 1)


def capture_onnx(model, feeds: Mapping[str, np.ndarray], labels=None,
                 model_name: str = "") -> Trace:
    """Run an ONNX model (a path or a ModelProto) on ``feeds`` with onnxruntime and record its
    ops from the intermediate values (needs onnx and onnxruntime).

    Recorded: ``Gemm`` (alpha = beta = 1, no transposed A, a bias C of one value per output or
    one for all; other Gemm nodes are left out with a warning)
    and ``MatMul`` by a 2-D initializer as ``linear`` (a following ``Add`` of a 1-D initializer
    is folded in as the bias); other ``MatMul`` as ``matmul`` (linked to the graph only when its
    first operand is an activation); 1-D and 2-D ``Conv`` (symmetric explicit pads) as
    ``conv2d`` (auto_pad VALID, and SAME where it pads evenly, included; other Conv nodes are
    left out with a warning); ``Relu``, ``Gelu``, ``Softmax`` (on the last axis; before opset 13
    only of 2-D inputs), ``Flatten`` and ``Identity`` as elementwise ops.  Biases may come from
    initializers or computed values (a ``Constant``, say).  Other nodes, contrib ops included,
    are run but not recorded, and break the graph links."""
    import warnings

    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper, shape_inference

    proto = onnx.load(str(model)) if not isinstance(model, onnx.ModelProto) else model
    proto = shape_inference.infer_shapes(proto)
    graph = proto.graph
    opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
                default=13)
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    typed = {vi.name: vi for vi in graph.value_info}
    wanted = dict.fromkeys(n for node in graph.node for n in node.output
                           if n and n not in outputs)
    full = onnx.ModelProto()
    full.CopyFrom(proto)
    full.graph.output.extend(typed.get(n) or helper.make_empty_tensor_value_info(n)
                             for n in wanted)          # untyped: outputs of contrib ops
    sess = ort.InferenceSession(full.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    values = {**inits, **{k: np.asarray(v) for k, v in feeds.items()},
              **dict(zip(names, sess.run(names, dict(feeds))))}
    consumers: dict = {}
    for node in graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    producer: dict = {}
    ops: list[Op] = []
    taken: set = set()
    folded: set = set()

    def add(node, kind, tensors, sources, out_name, attrs=None):
        base = (node.name or node.op_type.lower()).replace("/", ".").lstrip(".") or "op"
        name, i = base, 1
        while name in taken:
            i += 1
            name = f"{base}_{i}"
        taken.add(name)
        known = [producer.get(s) for s in sources]
        ops.append(Op(name, kind, tensors, attrs or {}, known if all(known) else []))
        producer[out_name] = name

    def have(n) -> bool:
        return n in values

    for node in graph.node:
        t, ins, out = node.op_type, list(node.input), node.output[0]
        if id(node) in folded or not all(have(n) for n in ins if n) or not have(out):
            continue
        at = _onnx_attrs(node)
        if t in ("Gemm", "MatMul"):
            a, b = values[ins[0]], values[ins[1]]
            gemm_ok = t == "MatMul" or (at.get("alpha", 1.0) == 1.0 and at.get("beta", 1.0) == 1.0
                                        and not at.get("transA", 0))
            if ins[1] in inits and b.ndim == 2 and gemm_ok and ins[0] not in inits:
                w = b if at.get("transB", 0) else b.T
                tensors = {"input": a, "weight": np.ascontiguousarray(w)}
                out_name = out
                if t == "Gemm" and len(ins) > 2 and ins[2]:
                    c = values[ins[2]]
                    if c.size != 1 and (c.size != w.shape[0] or c.shape[-1] != w.shape[0]):
                        warnings.warn(f"ONNX node {node.name!r}: not recorded: its C {c.shape} "
                                      f"is not one bias per output", stacklevel=2)
                        continue
                    tensors["bias"] = np.broadcast_to(c.reshape(-1), (w.shape[0],)).copy()
                elif t == "MatMul" and len(consumers.get(out, [])) == 1:
                    nxt = consumers[out][0]
                    other = [n for n in nxt.input if n != out]
                    if (nxt.op_type == "Add" and len(other) == 1 and other[0] in inits
                            and inits[other[0]].shape == (w.shape[0],) and have(nxt.output[0])):
                        tensors["bias"] = inits[other[0]]
                        out_name = nxt.output[0]
                        folded.add(id(nxt))
                tensors["output"] = values[out_name]
                add(node, "linear", tensors, [ins[0]], out_name)
            elif t == "MatMul" and a.ndim >= 2 and b.ndim >= 2:
                sources = [] if ins[0] in inits else [n for n in ins if n not in inits]
                add(node, "matmul", {"a": a, "b": b, "output": values[out]}, sources, out)
            elif t == "Gemm":
                warnings.warn(f"ONNX node {node.name!r}: not recorded: only Gemm with alpha = "
                              f"beta = 1, A not transposed, B an initializer", stacklevel=2)
        elif t == "Conv" and ins[1] in inits:
            w, x, y = inits[ins[1]], values[ins[0]], values[out]
            try:
                attrs, lift = _onnx_conv_attrs(node, x, w)
            except TraceError as exc:
                warnings.warn(f"not recorded: {exc}", stacklevel=2)
                continue
            if lift:
                x, w, y = x[:, :, None], w[:, :, None], y[:, :, None]
            tensors = {"input": x, "weight": w, "output": y}
            if len(ins) > 2 and ins[2]:
                tensors["bias"] = values[ins[2]]
            add(node, "conv2d", tensors, [ins[0]], out, attrs)
        elif t in ("Relu", "Gelu", "Softmax", "Flatten", "Identity"):
            x = values[ins[0]]
            if t == "Softmax" and (at.get("axis", -1 if opset >= 13 else 1) not in
                                   (-1, x.ndim - 1) or (opset < 13 and x.ndim != 2)):
                continue                         # replay's softmax runs on the last axis
            attrs = {"approximate": at.get("approximate", "none")} if t == "Gelu" else {}
            add(node, t.lower(), {"input": x, "output": values[out]}, [ins[0]], out, attrs)
    extras = {} if labels is None else {"labels": np.asarray(labels)}
    return Trace(ops, extras, model=model_name or (graph.name or "onnx"))
