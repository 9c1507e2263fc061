"""Capturing a trace from an ONNX model through onnxruntime (optional extras: pip install onnx
onnxruntime).  See :func:`capture_onnx`."""
from __future__ import annotations

from typing import Mapping

import numpy as np

from . import einsum, graph_ops
from .links import unlinked_message
from .traces import Op, Trace, TraceError

# Nodes whose output holds their first input's values in their order: they pass its link on.
_PASSES = ("Reshape", "Squeeze", "Unsqueeze", "Dropout")
# Nodes whose outputs do not depend on their inputs' values.
_SHAPES = ("Shape", "Size")


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


def _widens(x: np.ndarray, y: np.ndarray) -> bool:
    """Whether a Cast from ``x`` to ``y`` keeps every value: float to a float that holds it."""
    return x.dtype.kind == y.dtype.kind == "f" and np.promote_types(x.dtype, y.dtype) == y.dtype


def _onnx_pool_attrs(t: str, at: dict) -> dict:
    """A ``pool2d`` op's attrs from the attributes ``at`` of an ONNX MaxPool/AveragePool node
    (``t``) on an NCHW input; TraceError for what one cannot hold (SAME padding, asymmetric
    pads)."""
    auto = at.get("auto_pad", "NOTSET")
    pads = [0, 0, 0, 0] if auto == "VALID" else list(at.get("pads", [0, 0, 0, 0]))
    if auto not in ("NOTSET", "VALID") or pads[:2] != pads[2:]:
        raise TraceError(f"auto_pad {auto} / pads {pads}: only symmetric explicit pads are "
                         f"modelled")
    attrs = {"mode": "max" if t == "MaxPool" else "avg", "kernel": list(at["kernel_shape"]),
             "stride": list(at.get("strides", [1, 1])), "padding": pads[:2],
             "ceil_mode": bool(at.get("ceil_mode", 0))}
    attrs["dilation"] = list(at.get("dilations", [1, 1]))     # an avg pool's: refused unless 1
    if t == "MaxPool":
        return attrs
    return {**attrs, "count_include_pad": bool(at.get("count_include_pad", 0)),
            "divisor_override": None}


def _slice_entries(x: np.ndarray, starts, ends, axes, steps) -> list:
    """An ``index`` op's entries for an ONNX Slice (positive steps only: ValueError else)."""
    entries = [[None, None, None] for _ in range(x.ndim)]
    axes = range(len(starts)) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    for a, b, e, s in zip(axes, starts, ends, steps):
        if s < 1:
            raise ValueError("negative steps are not modelled")
        entries[int(a) % x.ndim] = [int(b), int(e), int(s)]
    return entries


def capture_onnx(model, feeds: Mapping[str, np.ndarray], labels=None,
                 model_name: str = "") -> Trace:
    """Run an ONNX model (a path or a ModelProto) on ``feeds`` with onnxruntime and record its
    ops from the intermediate values (needs onnx and onnxruntime).

    Recorded:

    * ``Gemm`` (alpha = beta = 1, no transposed A, a bias C of one value per output or one for
      all; other Gemm nodes are left out with a warning) and ``MatMul`` by a 2-D constant (an
      initializer, or a value computed from initializers alone: the ``Identity`` an exporter
      puts before a shared one, say) as ``linear`` (a following ``Add`` of a 1-D constant is
      folded in as the bias); other ``MatMul`` as ``matmul``; 1-D and 2-D ``Conv``
      (symmetric explicit pads) as ``conv2d`` (auto_pad VALID, and SAME where it pads evenly,
      included; other Conv nodes are left out with a warning); a two-input ``Einsum`` that is
      one batched matmul as ``matmul`` (``linear`` by a constant without batch letters) between
      the ``permute`` ops that lay it out, as capture_torch records ``torch.einsum`` (other
      Einsum nodes reading a recorded op's output are left out with a warning);
    * where the input depends on a recorded op (below): ``Relu``, ``Gelu``, ``Sigmoid``,
      ``Tanh``, ``Softmax`` (on the last axis; before opset 13 only of 2-D inputs),
      ``Flatten``, ``Identity``, ``Transpose`` (``permute``), ``Expand``, ``Add``, ``Sub``,
      ``Mul``, ``Div`` of floats (the linked operand either side), ``Neg`` (``mul`` by -1),
      ``Reciprocal`` (``div``), ``Sqrt``, ``Exp``, ``Log``, ``Abs``, ``Erf`` (GELU as
      exported below opset 20), ``Pow`` by a constant number, ``Clip`` with constant bounds
      (``clamp``), ``Concat`` (``concat``; parts without a link are constants),
      ``LayerNormalization``, ``BatchNormalization`` in inference mode, ``ReduceMean``,
      ``GlobalAveragePool`` (``adaptive_avg_pool2d``), ``MaxPool``/``AveragePool`` of NCHW
      inputs with symmetric pads (``pool2d``), ``Gather`` of one index, ``Slice`` with
      positive steps and ``Split`` (``index``).  A node whose shapes or attributes an op
      cannot hold as PyTorch defines it (a pool's padding above half its kernel, say) is left
      out with a warning.

    ``Reshape``, ``Squeeze``, ``Unsqueeze``, ``Dropout``, a widening ``Cast`` and a
    ``ReduceMean`` without axes that is the identity keep the values in their order: they pass
    their input's link on.  Biases may come from initializers or computed values (a
    ``Constant``, say).  Other nodes, contrib ops included, are run but not recorded.  As in
    :func:`simulator.capture.capture_torch`, a value that depends on no recorded op is replayed
    as captured, and a recorded op that reads a value depending on one without a link (through
    a node not recorded) is named in a warning."""
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
    consts = set(inits)                      # values that depend on no graph input
    for node in graph.node:                  # (an If's or Loop's branches may read any)
        subgraph = any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                       for a in node.attribute)
        if not subgraph and all(i in consts for i in node.input if i):
            consts.update(node.output)
    consumers: dict = {}
    for node in graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    producer: dict = {}                      # value name -> op name whose output it is
    tainted: set = set()                     # value names that depend on a recorded op
    via: dict = {}                           # such a value without a producer -> its node's type
    unlinked: list[str] = []
    ops: list[Op] = []
    taken: set = set()
    folded: set = set()

    def add(node, kind, tensors, sources, out_name, attrs=None, reads=None, label=""):
        """Record an op reading the values ``sources``: linked where the first has a producer
        (then each other one that has a producer too; one without is a constant: a binary op's
        ``other``; a concat passes only its linked parts); ``reads``: the values to check for a
        missed link (``sources`` unless given); ``label``: added to the node's name (an op of
        several one node makes)."""
        attrs = attrs or {}
        if kind in graph_ops.KINDS:
            problem = graph_ops.shape_problem(kind, {r: np.shape(v) for r, v in tensors.items()},
                                              attrs)
            if problem:
                warnings.warn(f"ONNX node {node.name!r}: not recorded: {problem}", stacklevel=3)
                return
        base = ((node.name or node.op_type.lower()) + label).replace("/", ".").lstrip(".") \
            or "op"
        name, i = base, 1
        while name in taken:
            i += 1
            name = f"{base}_{i}"
        taken.add(name)
        links = [producer[s] for s in sources if s in producer] \
            if sources and sources[0] in producer else []
        missed = [s for s in (sources if reads is None else reads)
                  if s in tainted and (s not in producer or not links)]
        if missed:
            made = sorted({via[s] for s in missed if s in via})
            unlinked.append(name + (f" (after {', '.join(made)})" if made else ""))
        ops.append(Op(name, kind, tensors, attrs, links))
        producer[out_name] = name
        tainted.add(out_name)

    def have(n) -> bool:
        return n in values

    def arrange(node, name: str, perm: list, role: str) -> tuple:
        """The value ``name`` permuted by ``perm``, the permute (op ``<node>.<role>``)
        recorded where it is tainted; (the array, the name its link goes through)."""
        x = values[name]
        if not einsum.moves(perm):
            return x, name
        y = x.transpose(perm)
        if name in tainted:
            tag = f"{name}.{node.name or 'einsum'}.{role}"
            add(node, "permute", {"input": x, "output": y}, [name], tag, {"dims": perm},
                label=f".{role}")
            name = tag
        return y, name

    def record_einsum(node, equation: str, ins: list, out: str) -> None:
        """A two-input ``Einsum`` that is a batched matmul (:mod:`simulator.einsum`), as
        capture_torch records ``torch.einsum``: ``permute`` ops laying out the operands, a
        ``matmul`` named after the node (``linear`` where one operand is a constant and there
        are no batch letters, as a MatMul by a constant), a ``permute`` to the output; other
        Einsum nodes reading a recorded op's output are left out with a warning."""
        p = None
        if len(ins) == 2:
            x, y = ins
            swap = y in producer and x not in producer      # the linked operand first
            p = einsum.plan(equation, values[x].shape, values[y].shape, swap)
        if p is None:
            if any(i in tainted for i in ins):
                warnings.warn(f"ONNX node {node.name!r}: not recorded: einsum {equation!r} is "
                              f"no single matmul", stacklevel=4)
            return
        if swap:
            x, y = y, x
        a, an = arrange(node, x, p.a_perm, "a")
        b, bn = arrange(node, y, p.b_perm, "b")
        middle = values[out].transpose(p.back)
        turn = einsum.moves(p.back)
        product_name = f"{out}.middle" if turn else out
        a, b, product = a.reshape(p.a_shape), b.reshape(p.b_shape), middle.reshape(p.product)
        if y in consts and x not in consts and len(p.a_shape) == 2:
            add(node, "linear", {"input": a, "weight": np.ascontiguousarray(b.T),
                                 "output": product}, [an], product_name)
        else:
            add(node, "matmul", {"a": a, "b": b, "output": product}, [an, bn], product_name)
        if turn:
            add(node, "permute", {"input": middle, "output": values[out]}, [product_name], out,
                {"dims": p.out_perm}, label=".out")

    def record(node, t, ins, out, at) -> None:
        if t in ("Gemm", "MatMul"):
            a, b = values[ins[0]], values[ins[1]]
            gemm_ok = t == "MatMul" or (at.get("alpha", 1.0) == 1.0 and at.get("beta", 1.0) == 1.0
                                        and not at.get("transA", 0))
            if ins[1] in consts and b.ndim == 2 and gemm_ok and ins[0] not in consts:
                w = b if at.get("transB", 0) else b.T
                tensors = {"input": a, "weight": np.ascontiguousarray(w)}
                out_name = out
                if t == "Gemm" and len(ins) > 2 and ins[2]:
                    c = values[ins[2]]
                    if c.size != 1 and (c.size != w.shape[0] or c.shape[-1] != w.shape[0]):
                        warnings.warn(f"ONNX node {node.name!r}: not recorded: its C {c.shape} "
                                      f"is not one bias per output", stacklevel=3)
                        return
                    tensors["bias"] = np.broadcast_to(c.reshape(-1), (w.shape[0],)).copy()
                elif t == "MatMul" and len(consumers.get(out, [])) == 1:
                    nxt = consumers[out][0]
                    other = [n for n in nxt.input if n != out]
                    if (nxt.op_type == "Add" and len(other) == 1 and other[0] in consts
                            and values[other[0]].shape == (w.shape[0],)
                            and have(nxt.output[0])):
                        tensors["bias"] = values[other[0]]
                        out_name = nxt.output[0]
                        folded.add(id(nxt))
                tensors["output"] = values[out_name]
                add(node, "linear", tensors, [ins[0]], out_name)
            elif t == "MatMul" and a.ndim >= 2 and b.ndim >= 2:
                add(node, "matmul", {"a": a, "b": b, "output": values[out]}, ins[:2], out)
            elif t == "Gemm":
                warnings.warn(f"ONNX node {node.name!r}: not recorded: only Gemm with alpha = "
                              f"beta = 1, A not transposed, B a constant", stacklevel=3)
        elif t == "Einsum" and values[out].dtype.kind == "f":
            record_einsum(node, at["equation"], ins, out)
        elif t == "Conv" and ins[1] in consts:
            w, x, y = values[ins[1]], values[ins[0]], values[out]
            try:
                attrs, lift = _onnx_conv_attrs(node, x, w)
            except TraceError as exc:
                warnings.warn(f"not recorded: {exc}", stacklevel=3)
                return
            if lift:
                x, w, y = x[:, :, None], w[:, :, None], y[:, :, None]
            tensors = {"input": x, "weight": w, "output": y}
            if len(ins) > 2 and ins[2]:
                tensors["bias"] = values[ins[2]]
            add(node, "conv2d", tensors, [ins[0]], out, attrs)
        elif t in _PASSES or (t == "Cast" and _widens(values[ins[0]], values[out])):
            if ins[0] in producer:
                producer[out] = producer[ins[0]]
        elif not any(i in tainted for i in ins):
            return                               # the nodes below are recorded where tainted
        elif t in ("Relu", "Gelu", "Sigmoid", "Tanh", "Softmax", "Flatten", "Identity", "Erf",
                   "Sqrt", "Exp", "Log", "Abs") and values[out].dtype.kind == "f":
            x = values[ins[0]]
            if t == "Softmax" and (at.get("axis", -1 if opset >= 13 else 1) not in
                                   (-1, x.ndim - 1) or (opset < 13 and x.ndim != 2)):
                return                           # replay's softmax runs on the last axis
            attrs = {"approximate": at.get("approximate", "none")} if t == "Gelu" else {}
            add(node, t.lower(), {"input": x, "output": values[out]}, [ins[0]], out, attrs)
        elif t == "Expand" and values[out].dtype.kind == "f":
            add(node, "expand", {"input": values[ins[0]], "output": values[out]}, ins[:1], out)
        elif t in ("Add", "Sub", "Mul", "Div") and values[out].dtype.kind == "f":
            a, b = ins[:2]
            flip = a not in producer and b in producer        # the linked operand goes first
            if flip:
                a, b = b, a
            add(node, t.lower(), {"input": values[a], "other": values[b],
                                  "output": values[out]}, [a, b], out,
                {"reverse": True} if flip and t in ("Sub", "Div") else {})
        elif t == "Neg" and values[out].dtype.kind == "f":
            x = values[ins[0]]
            add(node, "mul", {"input": x, "other": -np.ones((), x.dtype), "output": values[out]},
                ins[:1], out)
        elif t == "Reciprocal" and values[out].dtype.kind == "f":
            x = values[ins[0]]
            add(node, "div", {"input": x, "other": np.ones((), x.dtype), "output": values[out]},
                ins[:1], out, {"reverse": True})
        elif t == "Pow" and ins[1] not in tainted and values[ins[1]].size == 1 and \
                values[out].dtype.kind == "f":
            add(node, "pow", {"input": values[ins[0]], "output": values[out]}, ins[:1], out,
                {"exponent": float(values[ins[1]].reshape(()))})
        elif t == "Clip" and values[out].dtype.kind == "f" and not any(n in tainted
                                                                       for n in ins[1:]):
            y = values[out]                # a bound left out is the type's lowest or largest
            given = [at.get("min"), at.get("max")] if opset < 11 else [
                float(values[n].reshape(())) if n else None for n in (ins + ["", ""])[1:3]]
            lo, hi = (float(v) if v is not None else float(d) for v, d in
                      zip(given, (np.finfo(y.dtype).min, np.finfo(y.dtype).max)))
            add(node, "clamp", {"input": values[ins[0]], "output": y}, ins[:1], out,
                {"min": lo, "max": hi})
        elif t == "Concat" and values[out].dtype.kind == "f":
            y = values[out]
            axis = at["axis"] % y.ndim
            linked = [i for i, n in enumerate(ins) if n in producer]
            add(node, "concat", {"output": y}, [ins[i] for i in linked], out,
                {"dim": axis, "sizes": [values[n].shape[axis] for n in ins], "linked": linked},
                reads=ins)
        elif t == "Transpose":
            x = values[ins[0]]
            dims = list(at.get("perm", range(x.ndim)[::-1]))
            add(node, "permute", {"input": x, "output": values[out]}, ins[:1], out,
                {"dims": dims})
        elif t == "LayerNormalization":
            x = values[ins[0]]
            ns = list(x.shape[at.get("axis", -1) % x.ndim:])
            tensors = {"input": x, "output": values[out]}
            for role, n in zip(("weight", "bias"), ins[1:3]):
                if n:
                    tensors[role] = np.broadcast_to(values[n], ns).copy()
            add(node, "layer_norm", tensors, ins[:1], out,
                {"normalized_shape": ns, "eps": float(at.get("epsilon", 1e-5))})
        elif t == "BatchNormalization" and not at.get("training_mode", 0):
            tensors = {"input": values[ins[0]], "output": values[out]}
            for role, n in zip(("weight", "bias", "running_mean", "running_var"), ins[1:5]):
                tensors[role] = values[n]
            add(node, "batch_norm", tensors, ins[:1], out,
                {"eps": float(at.get("epsilon", 1e-5))})
        elif t == "ReduceMean":
            x = values[ins[0]]
            axes = at.get("axes") if opset < 18 else (
                values[ins[1]].tolist() if len(ins) > 1 and ins[1] else None)
            if not axes and at.get("noop_with_empty_axes", 0):      # the identity
                if ins[0] in producer:
                    producer[out] = producer[ins[0]]
                return
            add(node, "mean", {"input": x, "output": values[out]}, ins[:1], out, {
                "dims": [int(a) % x.ndim for a in (axes or range(x.ndim))],
                "keepdim": bool(at.get("keepdims", 1))})
        elif t == "GlobalAveragePool":
            add(node, "adaptive_avg_pool2d", {"input": values[ins[0]], "output": values[out]},
                ins[:1], out)
        elif t in ("MaxPool", "AveragePool") and values[ins[0]].ndim == 4:
            try:
                attrs = _onnx_pool_attrs(t, at)
            except TraceError as exc:
                warnings.warn(f"ONNX node {node.name!r}: not recorded: {exc}", stacklevel=3)
                return
            add(node, "pool2d", {"input": values[ins[0]], "output": values[out]}, ins[:1], out,
                attrs)
        elif t == "Gather" and values[ins[1]].ndim == 0:
            x = values[ins[0]]
            axis = at.get("axis", 0) % x.ndim
            add(node, "index", {"input": x, "output": values[out]}, ins[:1], out,
                {"index": [[None] * 3] * axis + [int(values[ins[1]])]})
        elif t == "Slice" and opset >= 10:
            x = values[ins[0]]
            starts, ends, axes, steps = (values[n].tolist() if n else None
                                         for n in (ins + [""] * 4)[1:5])
            try:
                entries = _slice_entries(x, starts, ends, axes, steps)
            except ValueError as exc:
                warnings.warn(f"ONNX node {node.name!r}: not recorded: {exc}", stacklevel=3)
                return
            add(node, "index", {"input": x, "output": values[out]}, ins[:1], out,
                {"index": entries})
        elif t == "Split":
            x = values[ins[0]]
            axis, start = at.get("axis", 0) % x.ndim, 0
            for name in node.output:
                n = values[name].shape[axis]
                add(node, "index", {"input": x, "output": values[name]}, ins[:1], name,
                    {"index": [[None] * 3] * axis + [[start, start + n, None]]})
                start += n

    for node in graph.node:
        t, ins, out = node.op_type, list(node.input), node.output[0]
        if id(node) in folded or not all(have(n) for n in ins if n) or not have(out):
            continue
        record(node, t, ins, out, _onnx_attrs(node))
        if t not in _SHAPES and any(i in tainted for i in ins):
            tainted.update(node.output)
            # a node that keeps the values (a reshape, a cast) keeps its input's cause
            made = via.get(ins[0], t) if t in _PASSES + ("Cast", "ReduceMean") else t
            via.update({o: made for o in node.output if o not in producer})
    if unlinked:
        warnings.warn(unlinked_message(unlinked), stacklevel=2)
    extras = {} if labels is None else {"labels": np.asarray(labels)}
    made = producer.get(graph.output[0].name) if graph.output else None
    if ops and not made:
        warnings.warn(f"the graph's output is not the output of a recorded op, so replay "
                      f"scores the last recorded op's, {ops[-1].name}, as the model's",
                      stacklevel=2)
    trace = Trace(ops, extras, model=model_name or (graph.name or "onnx"),
                  meta={"output": made} if made else None)
    trace.check_labels_fit()
    return trace
