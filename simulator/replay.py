"""Replay a trace through configurations: a tidy table of error and cost per op and tensor.

``replay(trace, configs, mode)`` returns one row per (configuration, op, tensor role):

* roles ``input``/``weight`` (linear, conv2d) or ``a``/``b`` (matmul, attention_scores): the
  quantization error of that operand as the MAC multiplies it (activations in the activation
  format, weights in the weight format; both matmul operands are activations), with
  ``clipped`` the elements clipped to the format's range;
* role ``output``: the op's output against the captured one, with the MAC's event counts
  (``overflows``, ``saturations``, ``swamped``, ``max_abs_partial``, ``macs``) and its cost
  (``compute_pj``, ``memory_pj``, ``total_pj``, ``area_um2`` of one MAC unit, from
  :func:`mac_models.layer_cost`); for the trace's last op when it has ``labels`` (logits) and
  for softmax ops, ``kl_softmax`` of the captured against the replayed logits;
* roles ``grad_output``/``grad_input``/``grad_weight`` where captured and the config names a
  gradient format: their quantization error in that format (backward matmuls are not replayed);
* in ``"propagated"`` mode with labels, one ``task`` row: ``accuracy`` of the replayed logits,
  ``reference_accuracy`` of the captured ones, and the summed costs.

Modes: ``"per-op"`` feeds every op its captured inputs; ``"propagated"`` feeds each op the
replayed output of the ops it takes input from (``inputs_from``), the captured input where the
trace records no source.  Elementwise ops (relu, gelu (erf form), softmax, flatten, identity)
run in float64 on propagated values (softmax on the last axis; gelu's ``approximate``
attribute honoured) and are skipped in per-op mode.  A MAC op's result is the
MAC's output register plus the bias, rounded to fp32 (the op's output is stored in fp32).
Error metrics are those of :mod:`simulator.metrics`.  An op that cannot run (NaN for an integer
format, for example) gives a row with its ``error`` message instead of stopping the replay.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Iterable, Union

import numpy as np
import pandas as pd

import formats
import mac_models as mm
from mac_models.ops import im2col, quantized_operand

from . import metrics
from .configs import Config
from .traces import Op, Trace

MODES = ("per-op", "propagated")


def _gelu(x: np.ndarray, approximate: str = "none") -> np.ndarray:
    """GELU: x * Phi(x) (erf form), or PyTorch's ``approximate="tanh"`` form."""
    if approximate == "tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    from math import erf
    return x * 0.5 * (1.0 + np.vectorize(erf, otypes=[float])(x / math.sqrt(2.0)))


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return z / np.sum(z, axis=-1, keepdims=True)


ELEMENTWISE = {"relu": lambda x, shape, attrs: np.maximum(x, 0.0),
               "gelu": lambda x, shape, attrs: _gelu(x, attrs.get("approximate", "none")),
               "softmax": lambda x, shape, attrs: _softmax(x),
               "flatten": lambda x, shape, attrs: x.reshape(shape),
               "identity": lambda x, shape, attrs: x}


def _quant_row(ref: np.ndarray, fmt, k_axis: int) -> dict:
    q, clipped = quantized_operand(ref, fmt, k_axis)
    row = metrics.error_metrics(ref, q)
    row["clipped"] = clipped
    row["numel"] = ref.size
    return row


def _grad_rows(op: Op, cfg: Config) -> list[dict]:
    rows = []
    if cfg.gradients is None:
        return rows
    fmt = formats.get(cfg.gradients)
    for role in ("grad_output", "grad_input", "grad_weight"):
        if role in op.tensors:
            g = np.asarray(op.tensors[role], dtype=np.float64)
            g2 = g.reshape(-1, g.shape[-1]) if g.ndim else g.reshape(1, 1)
            rows.append({"role": role, **_quant_row(g2, fmt, 1)})
    return rows


def _run_mac_op(op: Op, cfg: Config, x: Union[np.ndarray, None], tech, level) -> tuple:
    """(output as fp32, rows for the operands, output row fields) of one MAC op."""
    t = op.tensors
    mac = cfg.build_mac()
    a_fmt = formats.get(cfg.activations)
    rows = []
    if op.kind == "linear":
        x = np.asarray(t["input"] if x is None else x, dtype=np.float64)
        w = np.asarray(t["weight"], dtype=np.float64)
        a2 = x.reshape(-1, w.shape[1])
        rows += [{"role": "input", **_quant_row(a2, a_fmt, 1)},
                 {"role": "weight", **_quant_row(w.T, formats.get(cfg.weights), 0)}]
        r = mm.matmul(a2, w.T, mac)
        y = r.values.reshape(x.shape[:-1] + (w.shape[0],))
        shape = mm.Matmul(a2.shape[0], w.shape[1], w.shape[0])
    elif op.kind == "conv2d":
        x = np.asarray(t["input"] if x is None else x, dtype=np.float64)
        w = np.asarray(t["weight"], dtype=np.float64)
        at = op.attrs
        conv = mm.Conv2d(x.shape[0], x.shape[1], x.shape[2], x.shape[3], w.shape[0],
                         tuple(w.shape[2:]), at.get("stride", 1), at.get("padding", 0),
                         at.get("dilation", 1), at.get("groups", 1))
        cols = im2col(x, tuple(w.shape[2:]), _pair(conv.stride), _pair(conv.padding),
                      _pair(conv.dilation))
        g, cg = conv.groups, w.shape[1]
        a_parts = [cols[:, :, :, i * cg:(i + 1) * cg].reshape(-1, cg * w.shape[2] * w.shape[3])
                   for i in range(g)]
        og = w.shape[0] // g
        b_parts = [w[i * og:(i + 1) * og].reshape(og, -1).T for i in range(g)]
        rows += [{"role": "input", **_merge_quant(a_parts, a_fmt, 1)},
                 {"role": "weight", **_merge_quant(b_parts, formats.get(cfg.weights), 0)}]
        r = mm.conv2d(x, w, mac, conv.stride, conv.padding, conv.dilation, conv.groups)
        y = r.values
        shape = conv
    else:                                    # matmul, attention_scores: two activations
        a = np.asarray(t["a"] if x is None else x, dtype=np.float64)
        b = np.asarray(t["b"], dtype=np.float64)
        mac = replace(mac, b_format=mac.a_format, name="")
        rows += [{"role": "a", **_quant_row(a.reshape(-1, a.shape[-1]), a_fmt, 1)},
                 {"role": "b", **_quant_row(np.moveaxis(b, -2, 0).reshape(b.shape[-2], -1),
                                            a_fmt, 0)}]
        r = mm.matmul(a, b, mac)
        y = r.values
        batch = int(np.prod(np.broadcast_shapes(a.shape[:-2], b.shape[:-2])))
        shape = mm.Matmul(a.shape[-2], a.shape[-1], b.shape[-1], batch, b.ndim > 2)
    if "bias" in t:
        bias = np.asarray(t["bias"], dtype=np.float64)
        y = y + (bias.reshape(-1, 1, 1) if op.kind == "conv2d" else bias)
    y = y.astype(np.float32)
    lc = mm.layer_cost(shape, mac, tech=tech, level=level)
    out = {"overflows": r.overflows, "saturations": r.saturations, "swamped": r.swamped,
           "max_abs_partial": r.max_abs_partial, "macs": r.macs, "compute_pj": lc.compute_pj,
           "memory_pj": lc.memory_pj, "total_pj": lc.total_pj, "area_um2": lc.area_um2}
    return y, rows, out


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _merge_quant(parts: list, fmt, k_axis: int) -> dict:
    """Quantization metrics over several operand pieces taken together."""
    refs, qs, clipped = [], [], 0
    for p in parts:
        q, c = quantized_operand(p, fmt, k_axis)
        refs.append(p.ravel())
        qs.append(q.ravel())
        clipped += c
    ref, q = np.concatenate(refs), np.concatenate(qs)
    return {**metrics.error_metrics(ref, q), "clipped": clipped, "numel": ref.size}


def _task(labels: np.ndarray, ref: np.ndarray, got: np.ndarray, failed: bool) -> dict:
    """Accuracy of the replayed and the captured logits against ``labels``."""
    if ref.shape[:-1] != labels.shape:
        return {"error": f"labels of shape {labels.shape} do not match the last op's logits "
                         f"{ref.shape} (one label per row of logits)"}
    acc = math.nan if failed else float(np.mean(np.argmax(got, axis=-1) == labels))
    return {"numel": labels.size, "accuracy": acc,
            "reference_accuracy": float(np.mean(np.argmax(ref, axis=-1) == labels))}


def _check_configs(configs) -> list[Config]:
    if isinstance(configs, Config):
        configs = [configs]
    configs = list(configs)
    if not configs:
        raise ValueError("replay needs at least one configuration")
    for c in configs:
        if not isinstance(c, Config):
            raise TypeError(f"configs must be Config objects, got {c!r}")
    return configs


def replay(trace: Trace, configs: Union[Config, Iterable[Config]], mode: str = "per-op", *,
           tech=None, level: str = "dram", progress: bool = False) -> pd.DataFrame:
    """Replay ``trace`` through each configuration (see the module doc for the table).
    ``tech`` (node in nm) and ``level`` (memory level of the tensors) go to the cost model."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    configs = _check_configs(configs)
    from tqdm.auto import tqdm

    rows = []
    bar = tqdm(total=len(configs) * len(trace.ops), desc="replay", unit="op",
               disable=not progress)
    for cfg in configs:
        rows += _replay_one(trace, cfg, mode, tech, level, bar)
    bar.close()
    return pd.DataFrame(rows)


def _replay_one(trace: Trace, cfg: Config, mode: str, tech, level, bar) -> list[dict]:
    head = {**cfg.as_dict(), "mode": mode}
    labels = trace.extras.get("labels") if "labels" in trace.extras else None
    outputs: dict[str, np.ndarray] = {}
    rows: list[dict] = []
    totals = {"compute_pj": 0.0, "memory_pj": 0.0, "total_pj": 0.0, "macs": 0}
    failed = False
    last = trace.ops[-1].name if trace.ops else None
    for op in trace.ops:
        bar.update(1)
        src = [outputs[s] for s in op.inputs_from if s in outputs] \
            if mode == "propagated" else []
        x = src[0] if len(src) == len(op.inputs_from) and src else None
        if x is not None:                    # a Conv1d's output (N, O, 1, L) feeds (N, O, L)
            want = np.shape(op.tensors["a" if "a" in op.tensors else "input"])
            x = x.reshape(want) if x.size == int(np.prod(want)) else None
        base = {**head, "op": op.name, "kind": op.kind}
        if not op.is_mac:
            if mode == "propagated":
                ref_out = np.asarray(op.tensors["output"], dtype=np.float64)
                inp = np.asarray(op.tensors["input"] if x is None else x, dtype=np.float64)
                y = ELEMENTWISE[op.kind](inp, ref_out.shape, op.attrs)
                outputs[op.name] = y
                row = {**base, "role": "output", "numel": y.size,
                       **metrics.error_metrics(ref_out, y)}
                if op.kind == "softmax":
                    row["kl_softmax"] = metrics.kl_softmax(op.tensors["input"], inp)
                rows.append(row)
            continue
        try:
            if op.kind in ("matmul", "attention_scores") and len(src) == 2:
                op = Op(op.name, op.kind, {**op.tensors, "b": src[1]}, op.attrs, op.inputs_from)
            y, qrows, out = _run_mac_op(op, cfg, x, tech, level)
        except ValueError as exc:
            rows.append({**base, "role": "output", "error": str(exc)})
            failed = True
            continue
        outputs[op.name] = y
        rows += [{**base, **r} for r in qrows + _grad_rows(op, cfg)]
        ref_out = np.asarray(op.tensors["output"], dtype=np.float64)
        row = {**base, "role": "output", "numel": y.size, **metrics.error_metrics(ref_out, y),
               **out}
        if labels is not None and op.name == last:
            row["kl_softmax"] = metrics.kl_softmax(ref_out, y)
        rows.append(row)
        for k in totals:
            totals[k] += out[k]
    if mode == "propagated" and labels is not None and last in outputs:
        rows.append({**head, "op": "model", "kind": "task", "role": "task", **totals,
                     **_task(np.asarray(labels), np.asarray(trace.ops[-1].tensors["output"]),
                             outputs[last], failed)})
    return rows

