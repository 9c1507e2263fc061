"""Building traces from what a user has: plain arrays, or (optional extras) PyTorch models.

``from_arrays`` takes ops as a mapping of op name to a mapping with ``kind``, the tensors by
role, and optionally ``attrs`` and ``inputs_from``.  A MAC op may leave out ``output``: it is
then the exact product (float64: ``x @ W.T + b`` for linear, ``a @ b`` for matmul), so replay
measures error against exact arithmetic.
"""
from __future__ import annotations

from typing import Any, Mapping, Union

import numpy as np

from .traces import Op, Trace, TraceError


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
        attrs = dict(spec.pop("attrs", {}))
        inputs_from = list(spec.pop("inputs_from", []))
        tensors = {}
        for role, value in spec.items():
            arr = np.asarray(value)
            if arr.dtype.kind not in "fiub":
                raise TraceError(f"op {name!r}: tensor {role!r} must be a numeric array, got "
                                 f"dtype {arr.dtype}")
            tensors[role] = arr
        if "output" not in tensors:
            try:
                tensors["output"] = _exact_output(kind, tensors, attrs)
            except (KeyError, ValueError) as exc:
                raise TraceError(f"op {name!r} ({kind}): cannot compute its output from "
                                 f"{sorted(tensors)}: {exc}") from exc
        built.append(Op(name, kind, tensors, attrs, inputs_from))
    return Trace(built, extras, model=model)
