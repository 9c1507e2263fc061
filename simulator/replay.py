"""Replay a trace through configurations: a tidy table of error and cost per op and tensor.

``replay(trace, configs, mode)`` returns one row per (configuration, op, tensor role):

* roles ``input``/``weight`` (linear, conv2d) or ``a``/``b`` (matmul, attention_scores): the
  quantization error of that operand as the MAC multiplies it (a conv's input and weights as
  stored, each element once: see :func:`mac_models.conv2d`; activations in the activation
  format, weights in the weight format; both matmul operands are activations; a config's
  rounding other than nearest even applied), with ``clipped`` the elements beyond the format's
  range (scaled formats: exact scaled values beyond the element range, counting those within
  half a step of it that round to its end anyway, as :class:`formats.ScaledTensor` does);
* every row: the metrics of :mod:`simulator.metrics`, with ``max_ulp_error`` in ulps of the
  operand's format (scalar float or integer formats) or of the MAC's output format (the
  storage format where the config has one, else the promotion register's or the
  accumulator's; NaN where ulps do not apply: posits, scaled formats);
* role ``output``: the op's output against the captured one, with the MAC's event counts
  (``overflows``, ``saturations``, ``swamped``, ``max_abs_partial``, ``macs``) and its cost
  (``compute_pj``, ``memory_pj``, ``total_pj``, ``area_um2`` of one MAC unit, from
  :func:`mac_models.layer_cost`; ``compute_pj`` adds the bias add, an fp32 add per output, and
  ``quantize_pj``, below); for the model's output op when the trace has ``labels`` (logits) and
  for softmax ops, ``kl_softmax`` of the captured against the replayed logits;
* roles ``grad_output``/``grad_input``/``grad_weight`` where captured and the config names a
  gradient format: their quantization error in that format (backward matmuls are not replayed);
* in ``"propagated"`` mode, one ``task`` row (op ``model``), the last: the summed costs,
  ``sqnr_db`` of the model's output (:attr:`Trace.output_op`'s, every error before it
  propagated; NaN where an op failed) and, with labels, ``accuracy`` of the replayed logits
  (that output) and ``reference_accuracy`` of the captured ones.

Modes: ``"per-op"`` feeds every op its captured inputs; ``"propagated"`` feeds each op the
replayed output of the ops it takes input from (``inputs_from``), the captured input where the
trace records no source.  The ops between the MACs (elementwise, reshaping, indexing,
arithmetic, concatenation, norms, pooling: :mod:`simulator.graph_ops`) run in float64 on
propagated values, a binary op's ``other`` (a concat's part) its captured value where the trace
gives it no source, and are skipped in per-op mode.  A MAC op's result is the MAC's output
register plus the bias, rounded to fp32 (the value the next op reads, which quantizes it
again).  A config's ``storage`` format is the one the values between the MACs are kept in (a
bf16 residual stream, say): every op's output, a MAC's after that fp32 rounding and an op
between the MACs' after its float64 evaluation, is rounded to it as a store would (nearest
even; a scaled format's blocks along the last axis, where an infinity makes its block NaN; a
float format without infinities saturates, infinities included, to its largest finite value,
as fp8 stores with ``satfinite`` do; formats with infinities keep them, and overflow to them,
as IEEE casts do, so an attention mask's -inf survives a bf16 or fp8 e5m2 store), in both
modes; the output's ``max_ulp_error`` is then in its ulps.  Ops that only move values
(flatten, permute, expand, index, concat, identity) are not rounded again.  An op whose attr
``fused`` is true (the ops capture makes of one ``scaled_dot_product_attention`` call but
its output: k^T, repeated grouped-query heads, scores, scale, mask, softmax) keeps its value
inside the fused kernel: it is not rounded, and a fused MAC's ulps are counted as without a
storage format.  A config's ``fusion`` "epilogue" keeps a MAC's output in its epilogue the
same way, in propagated mode, where the one op that reads it (in the trace) is elementwise or a
batch norm (:data:`EPILOGUE`: a ReLU, a GELU, a residual add either way round, a scale, a batch
norm's per-channel scale and shift), and so on down a chain of such ops: only the chain's last
output is stored (an add of two such MAC outputs goes to the later MAC's epilogue, which
reads the other from memory; the model's output is written, whatever reads it, but another
value the model returns besides is not seen).

Memory traffic, at ``level``: each op reads each of its tensors once and writes its output
once.  Every tensor between the ops moves in one format, the one its values are kept in: the
storage format; without one, the activation format where every op that reads the tensor (a
mover's readers count as the tensor's own: a view moves as what it views), and at least one,
is a MAC, which quantizes it to that format anyway (the quantization fused into the op that
writes it), and otherwise fp32 (VECTOR_FORMAT: a residual stream, a MAC output a norm or a
ReLU reads, the model's output (:attr:`Trace.output_op`'s, which the model returns and replay
scores) and any other that no op reads: there the values stay as precise as the error model
keeps them, so energy and error describe one machine; a tensor of integers or booleans in its
captured dtype).  A constant an op reads (the model's input, an embedding)
moves in the storage format, else in the activation format where a MAC reads it and in fp32
where another op does.  Weights move in the weight format, other parameters (a norm's weight,
running statistics) in the dtype they were captured in (an integer or boolean operand too); a
single value (a scale) is a kernel's argument and moves nothing.  A fused kernel's tensors
stay on chip, in both modes: a fused op's output (a mover's, where all it moves is on chip) is
not written, and an operand fed by one is not read, by a MAC (``layer_cost``'s ``on_chip``)
or another op; an epilogue's kept outputs likewise.  An operand a fused kernel reads through
its fused movers from memory is read once: grouped-query keys and values once per key head,
not per query head.  An attention mask capture made (graph_ops' attr ``mask``) is not read
where "causal" (the kernel builds it) and moves a byte per element where "bool".  Every
other op is a kernel of its own, as eager PyTorch runs them (with fusion "none", a ReLU after
a linear layer too).

Costs of the ops between the MACs (propagated mode, role ``output``): ``compute_pj`` their
vector steps (:func:`graph_ops.work`, priced by :mod:`mac_models.vector` in VECTOR_FORMAT)
and ``quantize_pj``, ``memory_pj`` their traffic, ``total_pj``; movers cost nothing (the op
that reads their output reads it from memory).  ``quantize_pj`` (part of ``compute_pj``, every
op's): quantizing the output into the format it moves in, unless kept on chip, and a MAC's
activations into the activation format where they are not read in it (kept on chip, or moving
in another format), as :func:`mac_models.vector.quantize_work` counts the steps, in
VECTOR_FORMAT; weights are quantized once, offline.  The task row's costs add up every op's.

Values that depend on no recorded op (the model's input, constants, a KV cache's past entries)
stay as captured, but with a storage format in propagated mode: there the activations an op
reads without a source (a MAC's ``input``, ``a``, ``b``; an op's ``input``, ``other``; a concat's
constant parts: the embeddings, a KV cache's past entries, a float mask) holding floats are
read as stored, rounded to it, their infinities (a mask's -inf) kept, unless a single value (a
kernel's argument, such as a scale) or a mask capture made.  Parameters (a norm's weight and
bias, a MAC's bias) and integer or boolean operands stay as captured.

Error metrics are those of :mod:`simulator.metrics`.  An op that cannot run (NaN for a scalar
integer format, for example) gives a row with its ``error`` message instead of stopping the
replay; in propagated mode the ops fed by it get an ``error`` row too, and the task accuracy is
NaN.  (Scaled formats follow their own NaN rule: a group holding NaN decodes to NaN, counted in
``nan_count``.)  A row of logits holding NaN counts as a wrong answer.
"""
from __future__ import annotations

import math
import warnings
from collections import Counter
from dataclasses import replace
from typing import Callable, Iterable, Mapping, Union

import numpy as np
import pandas as pd

import formats
import mac_models as mm
from mac_models.layers import output_format
from mac_models.memory import memory_cost, pj_per_bit
from mac_models.ops import (beyond_range, conv_block, conv_input_whole, conv_pixels,
                            conv_weights, quantized_slices)
from mac_models.technology import technology
from mac_models.vector import quantize_work, vector_energy_pj

from . import graph_ops, metrics
from .configs import Config, repeats
from .traces import GRAD_ROLES, Op, Trace, linked_roles

MODES = ("per-op", "propagated")
# The version of replay's results: bumped when the same trace and config give other numbers, so
# that a sweep recomputes the cells an older replay wrote (2: storage formats, fused ops; 3: the
# ops between the MACs priced, fused kernels' tensors kept on chip, constants read as stored;
# 4: without a storage format, a tensor moves in the activation format only where MACs alone
# read it; quantizing and a MAC's bias add priced; the model's output SQNR in the task row;
# 5: a batch norm fuses into an epilogue; rows count the reference's non-zero elements).
RESULTS = 5
# The format the vector unit computes the ops between the MACs in (mac_models.vector), and the
# one a float tensor between the ops is kept in where no format is chosen for it (see the module
# doc: a MAC's output is rounded to fp32, the ops between the MACs compute near enough to it).
VECTOR_FORMAT = "fp32"
# The ops a MAC's epilogue can apply (fusion "epilogue"): the elementwise ones and a batch norm
# with running statistics, a per-channel scale and shift.
EPILOGUE = graph_ops.ELEMENTWISE + ("batch_norm",)
# The MAC roles as layer_cost names its tensors.
_LAYER_TENSORS = {"input": "a", "a": "a", "b": "b", "output": "out"}
OPERAND_ROLES = ("input", "weight", "a", "b")          # the rows of a MAC's operands


def _operand_rows(refs: list, useds: list, fmt, k_axis: int, cfg: Config,
                  part: Callable = lambda m: m) -> dict:
    """Quantization error of 2-D operand pieces as the MAC multiplies them: ``refs`` the
    captured values, ``useds`` what was handed to the MAC (``refs`` rounded with the config's
    rounding when it is not nearest even; the format is then scalar); ``part`` selects the
    elements of a piece that are the operand's (a conv's padded channels are not)."""
    ref = np.concatenate([part(r).ravel() for r in refs])
    got, clipped = quantized_slices(useds, fmt, k_axis)
    got = np.concatenate([part(q).ravel() for q in got])
    if cfg.rounding != "nearest_even":             # u is already inside the range: count on r
        clipped = sum(beyond_range(r, fmt) for r in refs)
    return {**metrics.error_metrics(ref, got), "max_ulp_error": metrics.max_ulp_error(ref, got,
                                                                                     fmt),
            "clipped": clipped, "numel": ref.size}


def _rounded(x: np.ndarray, fmt_name: str, cfg: Config, stream: int) -> np.ndarray:
    """``x`` rounded into ``fmt_name`` with the config's rounding when that is not nearest even
    (scalar formats only, checked by Config; the MAC's own nearest-even quantization then
    leaves the values unchanged); ``stream`` separates the random streams of the operands."""
    if cfg.rounding == "nearest_even":
        return x
    return formats.get(fmt_name).quantize(x, rounding=cfg.rounding,
                                          seed=(cfg.seed * 4 + stream) % (1 << 63))


def _stores(op: Op, cfg: Config, kept: set) -> bool:
    """Whether ``op``'s output is rounded to ``cfg``'s storage format: there is one, the output
    is not ``kept`` on chip (:func:`_kept`) and the op does more than move values (see the
    module doc)."""
    return cfg.storage is not None and "output" not in kept and \
        op.kind not in graph_ops.MOVERS


def _to_storage(y: np.ndarray, cfg: Config, what: str) -> np.ndarray:
    """``y`` rounded to the config's storage format as a store rounds it (see the module doc);
    a ValueError naming ``what`` where the format cannot hold it."""
    fmt = formats.get(cfg.storage)
    finite = isinstance(fmt, formats.FloatFormat) and not fmt.has_inf   # stores saturate there
    tiled = isinstance(fmt, formats.ScaledFormat) and isinstance(fmt.group, tuple)
    try:                                         # a vector in tiles: one row, as _tensor_pj
        got = fmt.quantize(np.atleast_2d(y) if tiled else np.atleast_1d(y),
                           **({"overflow": "saturate"} if finite else {}))
    except ValueError as exc:
        raise ValueError(f"{what} cannot be stored in {cfg.storage}: {exc}") from exc
    return got.reshape(np.shape(y))


def _stored(y: np.ndarray, op: Op, cfg: Config, kept: set) -> np.ndarray:
    """An op's output as it is stored (:func:`_stores`): rounded to the config's ``storage``
    format, else unchanged."""
    return _to_storage(y, cfg, "its output") if _stores(op, cfg, kept) else y


def _argument(shape: tuple) -> bool:
    """Whether a constant of ``shape`` is a single value: a kernel's argument (a scale), not a
    tensor read from memory, so neither rounded to the storage format nor priced."""
    return math.prod(shape) <= 1


def _is_activation(op: Op, role: str) -> bool:
    """Whether ``role`` is an activation an op reads as stored (:func:`_constant`): a MAC's
    ``input``, ``a``, ``b``, another op's ``input`` or ``other`` holding floats, but for a
    single value and for an attention mask capture made (graph_ops' attr ``mask``: its zeros
    and -inf are built in the kernel from a causal flag or booleans)."""
    acts = ("input", "a", "b") if op.is_mac else ("input", "other")
    return role in acts and not (role == "other" and op.attrs.get("mask")) and \
        _is_float(op, role) and not _argument(op.shape(role))


def _is_float(op: Op, role: str) -> bool:
    """Whether the tensor ``role`` of ``op`` was captured holding floats."""
    return op.dtype(role).startswith(("float", "bfloat"))


def _constant(op: Op, role: str, cfg: Config) -> np.ndarray:
    """``role`` of ``op``, a value no recorded op made (an embedding, a KV cache's past
    entries, a mask), as a propagated op reads it: where it is an activation
    (:func:`_is_activation`) and the config has a storage format, rounded to it (its
    infinities, a mask's -inf, kept as they are: a scaled format would make their blocks
    NaN), else as captured."""
    return _constant_value(_f64(op.tensors[role]), cfg, f"its {role}") \
        if _is_activation(op, role) else _f64(op.tensors[role])


def _constant_value(v: np.ndarray, cfg: Config, what: str) -> np.ndarray:
    """A constant activation ``v`` as stored (see :func:`_constant`)."""
    if cfg.storage is None or _argument(v.shape):
        return v
    finite = np.isfinite(v)
    got = _to_storage(np.where(finite, v, 0.0), cfg, what)
    return np.where(finite, got, v)


def _mac_activations(op: Op) -> tuple:
    """The activation roles of a MAC op: ``a`` and ``b``, or a linear's or conv's ``input``."""
    return linked_roles(op.kind)[:2 if op.kind in ("matmul", "attention_scores") else 1]


def _mac_operands(op: Op, got: list, cfg: Config) -> list:
    """The activations a MAC op reads in propagated mode: ``got``, the outputs of its sources,
    then the operands without one as stored (:func:`_constant`)."""
    roles = _mac_activations(op)
    return [got[i] if i < len(got) else _constant(op, r, cfg) for i, r in enumerate(roles)]


def _grad_rows(op: Op, cfg: Config) -> list[dict]:
    rows = []
    if cfg.gradients is None:
        return rows
    fmt = formats.get(cfg.gradients)
    for role in ("grad_output", "grad_input", "grad_weight"):
        if role in op.tensors:
            g = np.asarray(op.tensors[role], dtype=np.float64)
            g = g.reshape(-1, g.shape[-1]) if g.ndim else g.reshape(1, 1)
            rows.append({"role": role, **_operand_rows(
                [g], [_rounded(g, cfg.gradients, cfg, 3)], fmt, 1, cfg)})
    return rows


def _f64(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def _in_kernel(op: Op, kernel: set) -> bool:
    """Whether ``op``'s output stays inside a fused kernel, given the names of the earlier ops
    whose outputs do (``kernel``): it is ``fused`` and not a mover, or a mover whose every part
    comes from such ops (a fused k^T of a k in memory is read from memory by the kernel)."""
    if op.kind not in graph_ops.MOVERS:
        return bool(op.attrs.get("fused"))
    whole = op.kind != "concat" or len(op.attrs["linked"]) == len(op.attrs["sizes"])
    return bool(op.inputs_from) and whole and all(s in kernel for s in op.inputs_from)


def _on_chip(trace: Trace, cfg: Config, mode: str, output: Union[str, None]) -> set:
    """The names of the ops whose outputs never go to memory under ``cfg``: fused kernels'
    (:func:`_in_kernel`) and, with fusion "epilogue" in propagated mode (per-op mode runs no
    ops between the MACs, so none writes an epilogue's result), every op whose one reader in
    the trace is an elementwise op or a batch norm (:data:`EPILOGUE`) while it is a MAC or such a
    reader itself (a MAC's epilogue applies a chain of them, then writes); of a binary op's two
    such sources, the later one (its MAC runs last and reads the other from memory).  The
    ``output`` op's output, the model's (None: an empty trace), the model returns: written."""
    readers = Counter(s for op in trace.ops for s in op.inputs_from)
    readers[output] += 1                      # the model returns it: it is written
    order = {op.name: i for i, op in enumerate(trace.ops)}
    macs = {op.name for op in trace.ops if op.is_mac}
    kernel: set[str] = set()
    epilogue: set[str] = set()               # the ops a MAC's epilogue applies
    fuse = cfg.fusion == "epilogue" and mode == "propagated"
    for op in trace.ops:
        if _in_kernel(op, kernel):
            kernel.add(op.name)
        elif fuse and op.kind in EPILOGUE:
            heads = [s for s in op.inputs_from if (s in macs or s in epilogue) and
                     readers[s] == 1 and s not in kernel]
            if heads:
                kernel.add(max(heads, key=order.get))
                epilogue.add(op.name)
    return kernel


def _moved_formats(trace: Trace, cfg: Config, output: Union[str, None]) -> dict:
    """{op name: the format its output moves in}, a registry name, or None for an output
    captured as integers or booleans (priced in its captured dtype): see the module doc;
    ``output`` names the model's output op (None: an empty trace)."""
    if cfg.storage is not None:
        return {op.name: cfg.storage for op in trace.ops}
    parent: dict[str, str] = {}                # a mover and what it moves are one tensor

    def tensor(name: str) -> str:
        while parent.get(name, name) != name:
            name = parent[name]
        return name

    for op in trace.ops:
        if op.kind in graph_ops.MOVERS:
            for src in op.inputs_from:
                parent[tensor(src)] = tensor(op.name)
    readers: dict[str, list] = {tensor(output): [False]} if output else {}   # the model returns it
    for op in trace.ops:
        if op.kind not in graph_ops.MOVERS:
            for src in op.inputs_from:
                readers.setdefault(tensor(src), []).append(op.is_mac)

    def moved(op: Op) -> Union[str, None]:
        macs = readers.get(tensor(op.name), [])
        if macs and all(macs):
            return cfg.activations
        return VECTOR_FORMAT if _is_float(op, "output") else None

    return {op.name: moved(op) for op in trace.ops}


def _operand_formats(op: Op, moves: Mapping[str, Union[str, None]], cfg: Config) -> dict:
    """{role: the format it moves in} for ``op``'s output and the activations it reads
    (:func:`_moved_formats` for those an op made; see the module doc for constants)."""
    fmts = {"output": moves[op.name]}
    sources = dict(zip(linked_roles(op.kind), op.inputs_from))
    for role in _mac_activations(op) if op.is_mac else ("input", "other"):
        if role in sources:
            fmts[role] = moves[sources[role]]
        elif cfg.storage is not None or op.is_mac:
            fmts[role] = cfg.storage or cfg.activations
        else:
            fmts[role] = VECTOR_FORMAT
    return fmts


def _read_shares(op: Op, by_name: Mapping[str, Op]) -> dict:
    """{role: the share of its elements a MAC op reads from memory} for the operands that
    reach it through fused movers (a fused kernel's k^T, its grouped-query heads) from a tensor
    in memory: a fused ``expand`` repeats what the kernel reads once (1 / the repeats)."""
    shares = {}
    for role, src in zip(linked_roles(op.kind), op.inputs_from):
        share, o = 1.0, by_name[src]
        while o.kind in ("expand", "permute", "flatten", "identity") and \
                o.attrs.get("fused") and o.inputs_from:
            if o.kind == "expand":
                share *= math.prod(o.shape("input")) / max(math.prod(o.shape("output")), 1)
            o = by_name[o.inputs_from[0]]
        if share < 1:
            shares[role] = share
    return shares


def _kept(op: Op, kernel: set) -> set:
    """The roles of ``op`` that never go to memory: the operands fed by ops in ``kernel`` and
    the output where ``op`` itself is in it (see :func:`_in_kernel`)."""
    kept = {r for r, s in zip(linked_roles(op.kind), op.inputs_from) if s in kernel}
    return kept | ({"output"} if op.name in kernel else set())


def _run_mac_op(op: Op, cfg: Config, x: Union[np.ndarray, None], tech, level,
                kept: set, shares: dict, fmts: dict) -> tuple:
    """(output as fp32, rows for the operands, output row fields) of one MAC op, its output
    and activations moving in ``fmts`` (:func:`_operand_formats`), the roles ``kept`` on chip
    moving nothing and those in ``shares`` (:func:`_read_shares`) that share of their
    elements."""
    t = op.tensors
    roles = ("input", "weight") if op.kind in ("linear", "conv2d") else ("a", "b")
    for role, v in zip(roles, (t[roles[0]] if x is None else x, t[roles[1]])):
        if np.size(v) == 0:
            raise ValueError(f"the {role} is empty (shape {np.shape(v)}): no multiply-"
                             f"accumulate to replay")
    mac = cfg.build_mac()
    a_fmt, w_fmt = formats.get(cfg.activations), formats.get(cfg.weights)
    if op.kind in ("linear", "conv2d"):
        x = _f64(t["input"] if x is None else x)
        w = _f64(t["weight"])
        xu, wu = _rounded(x, cfg.activations, cfg, 0), _rounded(w, cfg.weights, cfg, 1)
    if op.kind == "linear":
        a2, au = x.reshape(-1, w.shape[1]), xu.reshape(-1, w.shape[1])
        rows = [{"role": "input", **_operand_rows([a2], [au], a_fmt, 1, cfg)},
                {"role": "weight", **_operand_rows([w.T], [wu.T], w_fmt, 0, cfg)}]
        r = mm.matmul(au, wu.T, mac)
        y = r.values.reshape(x.shape[:-1] + (w.shape[0],))
        shape = mm.Matmul(a2.shape[0], w.shape[1], w.shape[0])
    elif op.kind == "conv2d":
        at = op.attrs
        conv = mm.Conv2d(x.shape[0], x.shape[1], x.shape[2], x.shape[3], w.shape[0],
                         tuple(w.shape[2:]), at.get("stride", 1), at.get("padding", 0),
                         at.get("dilation", 1), at.get("groups", 1))
        g, cg, og = conv.groups, w.shape[1], w.shape[0] // conv.groups
        block = conv_block(a_fmt, w_fmt, cg)

        def w_part(m):                       # a tap-major weight matrix without padded channels
            return m.reshape(w.shape[2] * w.shape[3], -1, og)[:, :cg]

        ws, wus = conv_weights(w, g, block), conv_weights(wu, g, block)
        if conv_input_whole(a_fmt, x.shape[1], cg):      # quantized over all channels at once
            xs, xus = conv_pixels(x, 1, 1), conv_pixels(xu, 1, 1)
            own = slice(None)
        else:                                 # group by group, padded
            xs, xus = conv_pixels(x, g, block), conv_pixels(xu, g, block)
            own = slice(0, cg)
        rows = [{"role": "input", **_operand_rows(xs, xus, a_fmt, 1, cfg, lambda m: m[:, own])},
                {"role": "weight", **_operand_rows(ws, wus, w_fmt, 0, cfg, w_part)}]
        r = mm.conv2d(xu, wu, mac, conv.stride, conv.padding, conv.dilation, conv.groups)
        y = r.values
        shape = conv
    else:                                    # matmul, attention_scores: two activations
        a, b = _f64(t["a"] if x is None else x), _f64(t["b"])
        au, bu = _rounded(a, cfg.activations, cfg, 0), _rounded(b, cfg.activations, cfg, 2)
        mac = replace(mac, b_format=mac.a_format, name="")

        batch_shape = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])

        def slices(v):                       # the 2-D operands of mm.matmul
            v = np.broadcast_to(v, batch_shape + v.shape[-2:])
            return list(v.reshape((-1,) + v.shape[-2:]))

        rows = [{"role": "a", **_operand_rows(slices(a), slices(au), a_fmt, 1, cfg)},
                {"role": "b", **_operand_rows(slices(b), slices(bu), a_fmt, 0, cfg)}]
        r = mm.matmul(au, bu, mac)
        y = r.values
        batch = int(np.prod(batch_shape))
        shape = mm.Matmul(a.shape[-2], a.shape[-1], b.shape[-1], batch, b.ndim > 2)
    if "bias" in t:
        bias = _f64(t["bias"])
        y = y + (bias.reshape(-1, 1, 1) if op.kind == "conv2d" else bias)
    y = _stored(y.astype(np.float32), op, cfg, kept)
    moved = {_LAYER_TENSORS[r]: f for r, f in fmts.items() if r in _LAYER_TENSORS}
    lc = mm.layer_cost(shape, mac, moved, tech=tech, level=level,
                       on_chip={_LAYER_TENSORS[r] for r in kept})
    memory = lc.memory_pj - sum((1 - share) * lc.memory[_LAYER_TENSORS[r]].energy_pj
                                for r, share in shares.items() if r not in kept)
    try:
        ulps = metrics.max_ulp_error(_f64(t["output"]), y, cfg.storage if
                                     _stores(op, cfg, kept) else output_format(mac))
    except ValueError:                       # an integer register wider than any stored format
        ulps = math.nan
    quantize = _quantize_pj(op, fmts, kept, cfg, tech)
    compute = lc.compute_pj + quantize + ("bias" in t) * vector_energy_pj(
        {"add": y.size}, VECTOR_FORMAT, tech)
    out = {"max_ulp_error": ulps, "overflows": r.overflows, "saturations": r.saturations,
           "swamped": r.swamped,
           "max_abs_partial": r.max_abs_partial, "macs": r.macs, "compute_pj": compute,
           "quantize_pj": quantize, "memory_pj": memory, "total_pj": compute + memory,
           "area_um2": lc.area_um2}
    return y, rows, out


def _quantize_pj(op: Op, fmts: dict, kept: set, cfg: Config, tech) -> float:
    """Energy (pJ) of the quantizing ``op`` does (:func:`mac_models.vector.quantize_work`, in
    VECTOR_FORMAT): its output into the format it moves in (``fmts``), unless kept on chip,
    and a MAC's activations into the activation format, each unless it is read in that format
    already (its writer quantized it).  Weights are quantized once, offline: not priced."""
    work: Counter = Counter()
    if "output" not in kept and fmts.get("output") and op.kind not in graph_ops.MOVERS:
        work.update(quantize_work(fmts["output"], op.shape("output"), VECTOR_FORMAT))
    for role in _mac_activations(op) if op.is_mac else ():
        if role in kept or fmts.get(role) != cfg.activations:
            work.update(quantize_work(cfg.activations, op.shape(role), VECTOR_FORMAT))
    return vector_energy_pj(work, VECTOR_FORMAT, tech)


def _accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Share of rows whose largest logit is the label's; a row holding NaN counts as wrong."""
    right = (np.argmax(logits, axis=-1) == labels) & ~np.any(np.isnan(logits), axis=-1)
    return float(np.mean(right))


def _task(labels: np.ndarray, ref: np.ndarray, got: Union[np.ndarray, None]) -> dict:
    """Accuracy of the replayed (NaN where ``got`` is None: an op failed) and the captured
    logits against ``labels``."""
    if ref.shape[:-1] != labels.shape:
        return {"error": f"labels of shape {labels.shape} do not match the output op's logits "
                         f"{ref.shape} (one label per row of logits)"}
    return {"numel": labels.size,
            "accuracy": math.nan if got is None else _accuracy(got, labels),
            "reference_accuracy": _accuracy(ref, labels)}


def _check_configs(configs) -> list[Config]:
    if isinstance(configs, Config):
        configs = [configs]
    configs = list(configs)
    if not configs:
        raise ValueError("replay needs at least one configuration")
    for c in configs:
        if not isinstance(c, Config):
            raise TypeError(f"configs must be Config objects, got {c!r}")
    repeated = repeats([c.name for c in configs])
    if repeated:           # the results table tells configurations apart by name
        raise ValueError(f"configuration names repeat: {repeated}; give each a distinct name")
    return configs


def replay(trace: Trace, configs: Union[Config, Iterable[Config]], mode: str = "propagated",
           *, tech=None, level: str = "dram", progress: bool = False) -> pd.DataFrame:
    """Replay ``trace`` through each configuration (see the module doc for the table), in
    ``mode`` "propagated" (the default, as ``numsim replay`` and sweeps have it) or "per-op".
    ``tech`` (node in nm) and ``level`` (memory level of the tensors) go to the cost model.
    ``progress``: a bar on standard error, where that is a terminal."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    configs = _check_configs(configs)
    technology(tech)                         # bad cost-model arguments raise here, not per op
    pj_per_bit(level)
    from tqdm.auto import tqdm

    rows = []
    bar = tqdm(total=len(configs) * len(trace.ops), desc="replay", unit="op",
               disable=None if progress else True)      # None: off where not a terminal
    for cfg in configs:
        rows += _replay_one(trace, cfg, mode, tech, level, bar)
    bar.close()
    results = pd.DataFrame(rows)
    warn_flushed(results)
    return results


class FlushWarning(UserWarning):
    """Most of a MAC operand's non-zero elements quantize to zero (:func:`warn_flushed`)."""


def warn_flushed(results: pd.DataFrame) -> None:
    """Warn (:class:`FlushWarning`, once per configuration) where more than half of a MAC
    operand's non-zero elements quantize to zero in ``results``, a replay table: a format
    without a scale for the data (plain int8 holds whole numbers), say."""
    if results.empty or "nonzero_count" not in results:      # a table older than the count
        return
    lost = results[results["role"].isin(OPERAND_ROLES) &
                   (results["underflow_count"] > results["nonzero_count"] / 2)]
    for config, g in lost.groupby("config", sort=False):
        flushed = [f"{op}'s {role}" for op, role in zip(g["op"], g["role"])]
        more = f" and {len(flushed) - 3} more" if len(flushed) > 3 else ""
        scaled = any(isinstance(formats.get(f), formats.ScaledFormat)
                     for f in (g["weights"].iloc[0], g["activations"].iloc[0]))
        hint = "" if scaled else (
            ": is the format meant to have a scale? (one without holds its own range only: "
            "plain int8 whole numbers, fp4_e2m1 magnitudes from 0.5 to 6; int8_channel, mxfp4 "
            "and the like scale to the data)")
        warnings.warn(f"configuration {config!r}: most non-zero elements of "
                      f"{', '.join(flushed[:3])}{more} quantize to zero{hint}", FlushWarning,
                      stacklevel=3)


def _source_shapes(op: Op) -> list[tuple]:
    """The shapes the outputs of ``op``'s sources take as its operands: the captured ``a``,
    ``b`` or ``input``, ``other``; a concat's linked parts."""
    if op.kind == "concat":
        parts = graph_ops.concat_parts(op.shape("output"), op.attrs)
        return [parts[i] for i in op.attrs["linked"]]
    return [op.shape(r) for r in linked_roles(op.kind)[:len(op.inputs_from)]]


def _propagated_input(op: Op, outputs: dict, failed: set) -> tuple[list, str]:
    """(the outputs of the ops before that ``op`` reads, in ``inputs_from`` order, each reshaped
    to the operand it is (the ops capture passes a link through, views and reshapes, keep the
    values' order); an error message or '')."""
    bad = [s for s in op.inputs_from if s in failed]
    if bad:
        return [], f"its input comes from {', '.join(bad)}, which failed"
    got = []
    for src, want in zip(op.inputs_from, _source_shapes(op)):
        if outputs[src].size != math.prod(want):
            return [], f"the output of {src} has shape {outputs[src].shape}, its operand {want}"
        got.append(outputs[src].reshape(want))
    return got, ""


def _replay_one(trace: Trace, cfg: Config, mode: str, tech, level, bar) -> list[dict]:
    head = {**cfg.as_dict(), "mode": mode, "tech_nm": technology(tech).node, "level": level}
    labels = trace.extras.get("labels") if "labels" in trace.extras else None
    outputs: dict[str, np.ndarray] = {}
    failed: set[str] = set()
    rows: list[dict] = []
    totals = {"compute_pj": 0.0, "quantize_pj": 0.0, "memory_pj": 0.0, "total_pj": 0.0,
              "macs": 0}
    output = trace.output_op.name if trace.ops else None      # the model's output op
    kernel = _on_chip(trace, cfg, mode, output)
    moves = _moved_formats(trace, cfg, output)
    by_name = {op.name: op for op in trace.ops}
    for op in trace.ops:
        bar.update(1)
        base = {**head, "op": op.name, "kind": op.kind}
        kept = _kept(op, kernel)
        got, problem = _propagated_input(op, outputs, failed) if mode == "propagated" \
            else ([], "")
        if problem:
            rows.append({**base, "role": "output", "error": problem})
            failed.add(op.name)
            continue
        if not op.is_mac:
            if mode == "propagated":
                try:
                    row = {**_between(op, got, outputs, cfg, kept),
                           **_between_cost(op, kept, _operand_formats(op, moves, cfg), cfg,
                                           tech, level)}
                except ValueError as exc:          # a storage format that cannot hold it
                    rows.append({**base, "role": "output", "error": str(exc)})
                    failed.add(op.name)
                    continue
                rows.append({**base, **row})
                for k in ("compute_pj", "quantize_pj", "memory_pj", "total_pj"):
                    totals[k] += row[k]
            continue
        try:
            if mode == "propagated":
                got = _mac_operands(op, got, cfg)
            if len(got) > 1:
                op = Op(op.name, op.kind, {**op.tensors, "b": got[1]}, op.attrs, op.inputs_from)
            y, qrows, out = _run_mac_op(op, cfg, got[0] if got else None, tech, level, kept,
                                        _read_shares(op, by_name),
                                        _operand_formats(op, moves, cfg))
        except ValueError as exc:
            rows.append({**base, "role": "output", "error": str(exc)})
            failed.add(op.name)
            continue
        outputs[op.name] = y
        rows += [{**base, **r} for r in qrows + _grad_rows(op, cfg)]
        ref_out = np.asarray(op.tensors["output"], dtype=np.float64)
        row = {**base, "role": "output", "numel": y.size, **metrics.error_metrics(ref_out, y),
               **out}
        if labels is not None and op.name == output:
            row["kl_softmax"] = metrics.kl_softmax(ref_out, y)
        rows.append(row)
        for k in totals:
            totals[k] += out[k]
    if mode == "propagated" and output:
        last = by_name[output]
        ref = np.asarray(last.tensors["output"])
        got = None if failed else outputs.get(last.name)
        task = {**head, "op": "model", "kind": "task", "role": "task", **totals,
                "numel": ref.size,
                "sqnr_db": math.nan if got is None else metrics.sqnr_db(_f64(ref), got)}
        if labels is not None:
            task.update(_task(np.asarray(labels), ref, got))
        if last.name not in outputs:
            task.setdefault("error", f"{last.name} did not run")
        rows.append(task)
    return rows


def _between_cost(op: Op, kept: set, fmts: dict, cfg: Config, tech, level: str) -> dict:
    """Cost fields of an op between the MACs: its vector steps (:func:`graph_ops.work`) in
    VECTOR_FORMAT, and its traffic (see the module doc): each tensor read once and the output
    written once, but the roles ``kept`` on chip and single values; the output and the
    activations in ``fmts`` (:func:`_operand_formats`; None: their captured dtype); an
    attention mask capture made as its attr ``mask`` says; parameters and other constants in
    their captured dtype.  Movers cost nothing: the op that reads their output pays."""
    if op.kind in graph_ops.MOVERS:
        return {"compute_pj": 0.0, "quantize_pj": 0.0, "memory_pj": 0.0, "total_pj": 0.0}
    shapes = {r: op.shape(r) for r in op.tensors if r not in GRAD_ROLES}
    quantize = _quantize_pj(op, fmts, kept, cfg, tech)
    compute = quantize + vector_energy_pj(graph_ops.work(op.kind, shapes, op.attrs),
                                          VECTOR_FORMAT, tech)
    per_bit = pj_per_bit(level, tech=tech)
    memory = 0.0
    for role, shape in shapes.items():
        if role in kept or (role != "output" and _argument(shape)):
            continue
        if role == "other" and op.attrs.get("mask"):      # built in the kernel, or bytes
            memory += (op.attrs["mask"] == "bool") * 8 * math.prod(shape) * per_bit
        elif (role == "output" or _is_activation(op, role)) and fmts.get(role):
            memory += _tensor_pj(fmts[role], shape, level, tech)
        else:
            memory += op.bits(role) * math.prod(shape) * per_bit
    return {"compute_pj": compute, "quantize_pj": quantize, "memory_pj": memory,
            "total_pj": compute + memory}


def _tensor_pj(fmt, shape: tuple, level: str, tech) -> float:
    """Energy (pJ) of moving a tensor of ``shape`` in ``fmt`` once: a scaled format's groups
    along its last axis, its tiles over its last two (as ``quantize`` makes them)."""
    n = math.prod(shape)
    if not n:
        return 0.0
    last = shape[-1] if shape else 1
    matrix = (shape[-2] if len(shape) > 1 else 1, last)
    return memory_cost(fmt, n, level, tech=tech, channels=last, rows=n // last,
                       matrix=matrix).energy_pj


def _between(op: Op, got: list, outputs: dict, cfg: Config, kept: set) -> dict:
    """Run an op between the MACs on its propagated operands ``got`` (the captured ones where
    there are none), its output stored as ``cfg`` says (unless ``kept`` on chip); its row."""
    ref_out = np.asarray(op.tensors["output"], dtype=np.float64)
    if op.kind == "concat":
        y = graph_ops.concat(ref_out, got, op.attrs,
                             lambda part: _constant_value(part, cfg, "its constant part"))
    else:
        propagated = dict(zip(linked_roles(op.kind), got))
        t = {r: _f64(propagated[r]) if r in propagated else _constant(op, r, cfg)
             for r in op.tensors if r != "output"}
        y = graph_ops.evaluate(op.kind, t, ref_out.shape, op.attrs)
    y = _stored(y, op, cfg, kept)
    outputs[op.name] = y
    row = {"role": "output", "numel": y.size, **metrics.error_metrics(ref_out, y)}
    if _stores(op, cfg, kept):
        row["max_ulp_error"] = metrics.max_ulp_error(ref_out, y, cfg.storage)
    if op.kind == "softmax":
        row["kl_softmax"] = metrics.kl_softmax(op.tensors["input"], t["input"])
    return row
