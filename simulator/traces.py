"""Trace folders: ``manifest.json`` plus one safetensors file per op (see DESIGN.md).

A trace records the ops of one model run in execution order.  The manifest (version 2;
version 1, which has no ``same_as`` entries, is read too)::

    {"format": "numsim-trace", "version": 2, "model": "...", "meta": {...},
     "ops": [{"name": "fc1", "kind": "linear", "file": "fc1.safetensors",
              "tensors": {"input": {"shape": [..], "dtype": "float32"}, "weight": ..., ...},
              "attrs": {...}, "inputs_from": ["op name", ...]}, ...],
     "extras": {"file": "extras.safetensors", "tensors": {"labels": {...}}}}

* ``kind`` is one of :data:`KINDS`.  MAC ops: ``linear`` (roles ``input`` (..., K), ``weight``
  (N, K), optional ``bias`` (N,), ``output``), ``conv2d`` (``input`` NCHW, ``weight`` OIhw,
  optional ``bias``, ``output``; attrs ``stride``, ``padding``, ``dilation``, ``groups`` and
  no others),
  ``matmul`` and ``attention_scores`` (``a`` (..., M, K), ``b`` (..., K, N), ``output``).
  The ops between the MACs (elementwise, ``flatten``, ``permute``, ``expand``, ``index``,
  binary ``add``/``sub``/``mul``/``div``, ``concat``, norms, ``mean``, pooling)
  are those of :mod:`simulator.graph_ops`, which gives their roles and attrs.  The attrs of
  these kinds and of ``conv2d`` are parameters (unknown ones are refused); the other MAC
  kinds' attrs are free metadata, kept as given, but for ``fused``: true on any op but a
  conv2d says its output stays inside a fused kernel (replay does not round it to a storage
  format; capture sets it on what it makes of ``scaled_dot_product_attention``).  Gradients
  captured in backward are roles ``grad_output``, ``grad_input`` and ``grad_weight``.
* ``inputs_from`` is the graph: the ops whose outputs are this op's ``input`` (or ``a`` and
  ``b`` in that order), when known; empty for the model's inputs and when unknown.  A matmul
  or a binary op (roles ``input``, ``other``) with one source reads its second operand as
  captured: a constant (a parameter, or a value that depends on no recorded op).  Matmuls and
  binary ops take at most two sources, a ``concat`` one per part its ``linked`` attr names,
  other kinds one.
* ``dtype`` is the dtype the tensor was captured in; tensors are stored in it.  A tensor entry
  with ``"same_as": "<op name>"`` is not in the op's file: it holds, bit for bit, the ``output``
  of that op (one of its ``inputs_from``) in this entry's shape.  Writing stores a linked
  operand so wherever its bytes are its source's output (every linked input, as capture
  records them), which nearly halves a CNN's trace.
* ``extras`` holds tensors that belong to no op (task labels: ``labels``, whole numbers).
* ``meta`` is free metadata, but for ``output``: the name of the op whose output is the
  model's (replay scores it; without it, the last op's).
* ``file`` is ``<op name>.safetensors``, with ``~2``, ``~3``, ... appended where names would
  meet on a case-insensitive file system or the extras file, and long names shortened.

Writing goes to a temporary folder beside the target and is renamed into place, so a trace
on disk is always whole.  Loading checks the manifest and every file's header (names, shapes,
dtypes) and names the op, role and file of anything wrong; tensor data is read on access.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Union

import numpy as np

from . import graph_ops

FORMAT = "numsim-trace"
VERSION = 2                 # 2: same_as entries, the fused attr and the kinds after 1's
READS = (1, 2)
MAC_KINDS = ("linear", "conv2d", "matmul", "attention_scores")
KINDS = MAC_KINDS + graph_ops.KINDS
ROLES = {**graph_ops.ROLES,
    "linear": ("input", "weight", "bias", "output"),
    "conv2d": ("input", "weight", "bias", "output"),
    "matmul": ("a", "b", "output"),
    "attention_scores": ("a", "b", "output"),
}
GRAD_ROLES = ("grad_output", "grad_input", "grad_weight")
SOURCES = {"linear": 1, "conv2d": 1, "matmul": 2, "attention_scores": 2,   # ops linked at most
           **graph_ops.SOURCES}
REQUIRED = {**graph_ops.REQUIRED, "linear": ("input", "weight", "output"),
            "conv2d": ("input", "weight", "output"), "matmul": ("a", "b", "output"),
            "attention_scores": ("a", "b", "output")}
# The attrs that are parameters (nothing else is accepted for these kinds, so that a misspelt
# one cannot be ignored); other kinds' attrs are free metadata, kept as given.
ATTRS = {"conv2d": ("stride", "padding", "dilation", "groups"), **graph_ops.ATTRS}
DTYPES = ("float64", "float32", "float16", "bfloat16", "int64", "int32", "int8", "uint8", "bool")
_BITS = {"float64": 64, "float32": 32, "float16": 16, "bfloat16": 16, "int64": 64, "int32": 32,
         "int8": 8, "uint8": 8, "bool": 8}


class TraceError(ValueError):
    """A trace folder that cannot be read or written as asked; the message names the path."""


def linked_roles(kind: str) -> tuple[str, str]:
    """The roles ``inputs_from`` feeds, in its order: ``a``, ``b`` for matmul and
    attention_scores, else ``input``, ``other`` (a concat's parts have no roles)."""
    return ("a", "b") if kind in ("matmul", "attention_scores") else ("input", "other")


def roles_of(kind: str) -> tuple[str, ...]:
    """The tensor roles an op of ``kind`` may have (gradients included)."""
    return ROLES.get(kind, ("input", "output")) + GRAD_ROLES


@dataclass
class Op:
    """One op of a trace: its kind, tensors by role, attributes and graph inputs."""

    name: str
    kind: str
    tensors: dict[str, np.ndarray]
    attrs: dict[str, Any] = field(default_factory=dict)
    inputs_from: list[str] = field(default_factory=list)

    @property
    def is_mac(self) -> bool:
        """True for the kinds that multiply-accumulate (linear, conv2d, matmul, scores)."""
        return self.kind in MAC_KINDS

    def shape(self, role: str) -> tuple:
        """The shape of the tensor ``role``, without reading a loaded trace's data."""
        return _shape(self.tensors, role)

    def dtype(self, role: str) -> str:
        """The name of the dtype the tensor ``role`` was captured in ("float32", "bfloat16",
        "bool", ...), without reading a loaded trace's data."""
        if isinstance(self.tensors, _LazyTensors):
            return self.tensors.dtype(role)
        return np.asarray(self.tensors[role]).dtype.name

    def bits(self, role: str) -> int:
        """Bits per element of the tensor ``role`` in the dtype it was captured in (a bool's
        byte: 8), without reading a loaded trace's data."""
        if isinstance(self.tensors, _LazyTensors):
            return _BITS[self.tensors.dtype(role)]
        return 8 * np.asarray(self.tensors[role]).dtype.itemsize

    def __repr__(self) -> str:               # the tensors' shapes, not their values
        shapes = ", ".join(f"{r}={v}" for r, v in _shapes(self.tensors).items())
        return (f"Op({self.name!r}, {self.kind!r}, {shapes}, attrs={self.attrs}, "
                f"inputs_from={self.inputs_from})")


class Trace:
    """Ops in execution order plus extra tensors; tensors of a loaded trace are read lazily."""

    def __init__(self, ops: Iterable[Op], extras: Union[Mapping[str, np.ndarray], None] = None,
                 model: str = "", meta: Union[Mapping[str, Any], None] = None):
        self.ops = list(ops)
        self.extras = dict(extras or {})
        self.model = model
        self.meta = dict(meta or {})
        self.path: Union[Path, None] = None
        _validate_graph(self.ops, "trace")
        if "output" in self.meta and self.meta["output"] not in {o.name for o in self.ops}:
            raise TraceError(f"trace: meta 'output' names no op: {self.meta['output']!r}")
        if "labels" in self.extras:
            _check_labels(self.extras["labels"], "trace")

    def check_labels_fit(self) -> None:
        """Raise TraceError unless the ``labels`` (if any) give one class per row of the logits
        of the op ``meta["output"]`` names (what replay's accuracy needs; capture checks it
        where it found the op that makes the model's output; replay's task row reports a
        mismatch with the last op, its stand-in otherwise)."""
        if "labels" in self.extras and "output" in self.meta:
            logits = _shape(self.output_op.tensors, "output")
            if tuple(logits[:-1]) != np.shape(self.extras["labels"]):
                raise TraceError(f"labels of shape {np.shape(self.extras['labels'])} do not "
                                 f"match the logits of the model's output op "
                                 f"{self.output_op.name!r}, {tuple(logits)} (one label per row)")

    def op(self, name: str) -> Op:
        for o in self.ops:
            if o.name == name:
                return o
        raise KeyError(f"no op named {name!r} in the trace (ops: "
                       f"{', '.join(o.name for o in self.ops)})")

    @property
    def output_op(self) -> Op:
        """The op whose output is the model's: the one ``meta["output"]`` names (capture
        records it), else the last."""
        return self.op(self.meta["output"]) if "output" in self.meta else self.ops[-1]

    def __repr__(self) -> str:
        return f"Trace({self.model!r}, {len(self.ops)} ops, path={self.path})"


def _check_labels(labels, where: str) -> None:
    """Labels are class indices: integers, or floats that hold whole numbers."""
    labels = np.asarray(labels)
    if labels.dtype.kind in "iu":
        return
    whole = labels.dtype.kind == "f" or labels.dtype.name == "bfloat16"
    if not whole or not np.all(np.mod(labels.astype(np.float64), 1) == 0):
        raise TraceError(f"{where}: 'labels' must be class indices (whole numbers), got dtype "
                         f"{labels.dtype}" + (" with fractions" if whole else ""))


def _validate_graph(ops: list[Op], where: str) -> None:
    seen: set[str] = set()
    for o in ops:
        if (not isinstance(o.name, str) or not o.name or "/" in o.name or "\0" in o.name
                or o.name.startswith(".")):
            raise TraceError(f"{where}: op name {o.name!r} must be a non-empty string without "
                             f"'/' or NUL that does not start with '.'")
        if o.name in seen:
            raise TraceError(f"{where}: op name {o.name!r} appears twice")
        if o.kind not in KINDS:
            raise TraceError(f"{where}: op {o.name!r} has unknown kind {o.kind!r}; known: "
                             f"{', '.join(KINDS)}")
        if not isinstance(o.attrs, Mapping) or not isinstance(o.inputs_from, list):
            raise TraceError(f"{where}: op {o.name!r}: 'attrs' must be a mapping and "
                             f"'inputs_from' a list of op names")
        if not isinstance(o.attrs.get("fused", False), bool):
            raise TraceError(f"{where}: op {o.name!r} ({o.kind}): fused must be true or false, "
                             f"got {o.attrs['fused']!r}")
        unknown = sorted(set(o.attrs) - set(ATTRS[o.kind])) if o.kind in ATTRS else []
        if unknown:
            raise TraceError(f"{where}: op {o.name!r} ({o.kind}) has unknown attrs {unknown}; "
                             f"allowed: {', '.join(ATTRS[o.kind])}")
        most = SOURCES[o.kind]
        linked = o.attrs.get("linked", ())
        if most is None and o.inputs_from and (not isinstance(linked, list) or
                                               len(o.inputs_from) != len(linked)):
            raise TraceError(f"{where}: op {o.name!r} ({o.kind}) takes input from "
                             f"{len(o.inputs_from)} ops, but its attr linked names "
                             f"{linked!r}: one part per source")
        if most is not None and len(o.inputs_from) > most:
            raise TraceError(f"{where}: op {o.name!r} ({o.kind}) takes input from "
                             f"{len(o.inputs_from)} ops; a {o.kind} op links at most {most}")
        for src in o.inputs_from:
            if src not in seen:
                raise TraceError(f"{where}: op {o.name!r} takes input from {src!r}, which is not "
                                 f"an earlier op")
        allowed = roles_of(o.kind)
        for role in o.tensors:
            if role not in allowed:
                raise TraceError(f"{where}: op {o.name!r} ({o.kind}) has tensor role {role!r}; "
                                 f"allowed: {', '.join(allowed)}")
        for role in REQUIRED.get(o.kind, ("input", "output")):
            if role not in o.tensors:
                raise TraceError(f"{where}: op {o.name!r} ({o.kind}) lacks its {role!r} tensor")
        problem = _shape_problem(o)
        if problem:
            raise TraceError(f"{where}: op {o.name!r} ({o.kind}): {problem}")
        seen.add(o.name)


def _conv_out(hw: tuple, khw: tuple, attrs: dict) -> tuple:
    """(Ho, Wo) of a conv2d with ``attrs`` stride, padding and dilation (ints or pairs)."""
    from mac_models.ops import conv_output_size, pair_arg
    try:
        args = [pair_arg(attrs.get(k, d), k, lo) for k, d, lo in
                (("stride", 1, 1), ("padding", 0, 0), ("dilation", 1, 1))]
    except (TypeError, ValueError) as exc:
        raise TraceError(str(exc)) from exc
    return conv_output_size(hw, khw, *args)


def _shape(tensors, role: str) -> tuple:
    """A role's shape, without reading a loaded trace's data."""
    return tuple(tensors.shape(role) if isinstance(tensors, _LazyTensors)
                 else np.shape(tensors[role]))


def _shapes(tensors) -> dict:
    return {r: _shape(tensors, r) for r in tensors}


def _shape_problem(o: Op) -> str:
    """What is wrong with the shapes of an op's tensors, or ''."""
    shape = _shapes(o.tensors)
    out = shape.get("output")
    if o.kind == "linear":
        x, w = shape["input"], shape["weight"]
        want = x[:-1] + w[:1] if len(w) == 2 and x else None
        if len(w) != 2 or not x or x[-1] != w[1]:
            return f"input {x} and weight {w} do not make a linear layer (input (..., K), " \
                   f"weight (N, K))"
    elif o.kind == "conv2d":
        x, w = shape["input"], shape["weight"]
        groups = o.attrs.get("groups", 1)
        if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
            return f"groups must be a positive integer, got {groups!r}"
        if len(x) != 4 or len(w) != 4 or x[1] != w[1] * groups or w[0] % groups:
            return f"input {x} and weight {w} (groups {groups}) do not make a conv2d " \
                   f"(input NCHW, weight (O, C / groups, kh, kw), O a multiple of groups)"
        want = (x[0], w[0]) + _conv_out(x[2:], w[2:], o.attrs)
    elif o.kind in ("matmul", "attention_scores"):
        a, b = shape["a"], shape["b"]
        if len(a) < 2 or len(b) < 2 or a[-1] != b[-2]:
            return f"a {a} and b {b} do not multiply (a (..., M, K), b (..., K, N))"
        try:
            batch = np.broadcast_shapes(a[:-2], b[:-2])
        except ValueError:
            return f"the batch axes of a {a} and b {b} do not broadcast"
        want = tuple(batch) + (a[-2], b[-1])
    else:
        return graph_ops.shape_problem(o.kind, shape, o.attrs)
    if "bias" in shape and shape["bias"] != (shape["weight"][0],):
        return f"bias {shape['bias']} should be ({shape['weight'][0]},)"
    if out != want:
        return f"output {out} should be {want}"
    return ""


def _dtype_name(a: np.ndarray) -> str:
    name = "bfloat16" if a.dtype.name == "bfloat16" else a.dtype.name
    if name not in DTYPES:
        raise TraceError(f"tensors of dtype {a.dtype} cannot be stored; use one of "
                         f"{', '.join(DTYPES)}")
    return name


def _entry(a: np.ndarray) -> dict:
    return {"shape": list(a.shape), "dtype": _dtype_name(a)}


def umask() -> int:
    """The process's file-creation mask (reading it means setting it, so it is set back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _file_name(name: str, taken: set) -> str:
    """``<name>.safetensors`` for an op, made unique among ``taken`` (case-insensitively, for
    case-insensitive file systems: ``~2``, ``~3``, ... appended) and short enough for one
    path component; the manifest records it, so any name loads."""
    stem = name if len(name.encode()) <= 200 else name.encode()[:200].decode(errors="ignore")
    file, i = f"{stem}.safetensors", 1
    while file.casefold() in taken:
        i += 1
        file = f"{stem}~{i}.safetensors"
    taken.add(file.casefold())
    return file


def _same_as(o: Op, arrays: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]) -> dict:
    """The linked operands of ``o`` (``input``/``other`` or ``a``/``b``, in ``inputs_from``
    order) whose values are, bit for bit, their source's output (``outputs`` by op name), each
    with its source's name."""
    def bits(a):
        return a.reshape(-1).view(np.uint8)

    same = {}
    for role, src in zip(linked_roles(o.kind), o.inputs_from):
        a, out = arrays.get(role), outputs[src]
        if a is not None and out.dtype == a.dtype and out.size == a.size and \
                np.array_equal(bits(out), bits(a)):
            same[role] = src
    return same


def save_trace(trace: Trace, path: Union[str, Path], overwrite: bool = False) -> Path:
    """Write ``trace`` as a folder at ``path`` (atomically: a temporary folder renamed into
    place).  An existing trace folder is replaced only with ``overwrite=True``; any other
    existing path is refused."""
    from safetensors.numpy import save_file

    path = Path(path)
    if path.exists() and not overwrite:
        raise TraceError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
    if path.exists() and not (path / "manifest.json").is_file():
        raise TraceError(f"{path} exists and is not a trace folder (no manifest.json); "
                         f"refusing to replace it")
    if Path.cwd().resolve().is_relative_to(path.resolve()):
        raise TraceError(f"{path} is the current folder or holds it; cannot replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        manifest = {"format": FORMAT, "version": VERSION, "model": trace.model,
                    "meta": trace.meta, "ops": []}
        taken = {"manifest.json", "extras.safetensors"}
        outputs: dict[str, np.ndarray] = {}
        for o in trace.ops:
            arrays = {role: np.require(a, requirements="C") for role, a in o.tensors.items()}
            same = _same_as(o, arrays, outputs)
            file = _file_name(o.name, taken)
            save_file({r: a for r, a in arrays.items() if r not in same}, str(tmp / file))
            entries = {r: {**_entry(a), **({"same_as": same[r]} if r in same else {})}
                       for r, a in arrays.items()}
            manifest["ops"].append({"name": o.name, "kind": o.kind, "file": file,
                                    "tensors": entries, "attrs": o.attrs,
                                    "inputs_from": list(o.inputs_from)})
            outputs[o.name] = arrays["output"]
        if trace.extras:
            extras = {k: np.require(v, requirements="C") for k, v in trace.extras.items()}
            save_file(extras, str(tmp / "extras.safetensors"))
            manifest["extras"] = {"file": "extras.safetensors",
                                  "tensors": {k: _entry(v) for k, v in extras.items()}}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        mask = umask()                         # a trace is shared (Dask workers, other users):
        os.chmod(tmp, 0o777 & ~mask)           # mkdtemp makes 0700 and safetensors 0600
        for f in tmp.iterdir():
            os.chmod(f, 0o666 & ~mask)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    trace.path = path
    return path


class _LazyTensors(dict):
    """Role -> array, read from one safetensors file on first access; a ``same_as`` role from
    ``sources`` (op name -> that op's tensors), reshaped."""

    def __init__(self, file: Path, entries: Mapping[str, dict], where: str,
                 sources: Union[Mapping[str, "_LazyTensors"], None] = None):
        super().__init__()
        self._file, self._entries, self._where = file, dict(entries), where
        self._sources = sources or {}

    def _load(self) -> None:
        if dict.__len__(self) == len(self._entries):
            return
        from safetensors.numpy import load_file
        try:
            arrays = load_file(str(self._file))
        except Exception as exc:          # safetensors raises its own error types
            raise TraceError(f"{self._file}: cannot read {self._where}: {exc}") from exc
        for role, entry in self._entries.items():
            value = arrays[role] if "same_as" not in entry else \
                self._sources[entry["same_as"]]["output"].reshape(entry["shape"])
            dict.__setitem__(self, role, value)

    def __getitem__(self, role):
        if role not in self._entries:
            raise KeyError(f"{self._where} has no tensor {role!r} (has: "
                           f"{', '.join(self._entries)})")
        self._load()
        return dict.__getitem__(self, role)

    def shape(self, role: str) -> tuple:
        return tuple(self._entries[role]["shape"])

    def dtype(self, role: str) -> str:
        return self._entries[role]["dtype"]

    def get(self, role, default=None):
        return self[role] if role in self._entries else default

    def __contains__(self, role) -> bool:
        return role in self._entries

    def __iter__(self):
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self):
        return self._entries.keys()

    def items(self):
        return [(r, self[r]) for r in self._entries]

    def values(self):
        return [self[r] for r in self._entries]


def _check_header(file: Path, entries: Mapping[str, dict], where: str) -> None:
    """The file's header must hold ``entries`` with their shapes and dtypes (other tensors in
    the file are ignored)."""
    from safetensors import safe_open

    if not file.is_file():
        raise TraceError(f"{file}: missing (named by {where})")
    try:
        with safe_open(str(file), framework="numpy") as f:
            names = set(f.keys())
            for role, entry in entries.items():
                if role not in names:
                    raise TraceError(f"{file}: has no tensor {role!r} (named by {where})")
                sl = f.get_slice(role)
                shape, dtype = list(sl.get_shape()), sl.get_dtype()
                if shape != list(entry["shape"]):
                    raise TraceError(f"{file}: tensor {role!r} has shape {shape}, the manifest "
                                     f"says {entry['shape']} ({where})")
                if _ST_DTYPES.get(dtype) != entry["dtype"]:
                    raise TraceError(f"{file}: tensor {role!r} is {dtype}, the manifest says "
                                     f"{entry['dtype']} ({where})")
    except TraceError:
        raise
    except Exception as exc:              # corrupt or truncated file
        raise TraceError(f"{file}: cannot read {where}: {exc}") from exc


_ST_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
              "I64": "int64", "I32": "int32", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


def _tensor_entries(raw: Any, where: str) -> dict:
    if not isinstance(raw, dict) or not raw:
        raise TraceError(f"{where}: 'tensors' must be a non-empty object")
    for role, entry in raw.items():
        if (not isinstance(entry, dict) or not isinstance(entry.get("shape"), list)
                or not all(isinstance(s, int) and s >= 0 for s in entry["shape"])
                or entry.get("dtype") not in DTYPES):
            raise TraceError(f"{where}: tensor {role!r} needs a 'shape' (list of sizes) and a "
                             f"'dtype' (one of {', '.join(DTYPES)}), got {entry!r}")
    return raw


def _check_same_as(kind: Any, entries: Mapping[str, dict], inputs_from: list,
                   earlier: Mapping[str, Op], version: int, where: str) -> dict:
    """The tensors of the ops that ``same_as`` entries name (op name -> tensors), each checked:
    on a linked operand (``input``/``other`` or ``a``/``b``) of a version-2 trace, naming the
    op ``inputs_from`` gives for it, whose output has the entry's dtype and size."""
    sources = {}
    operands = linked_roles(kind)
    for role, e in entries.items():
        if "same_as" not in e:
            continue
        src = e["same_as"]
        if version < 2:
            raise TraceError(f"{where}: tensor {role!r} has same_as, which version {version} "
                             f"does not have")
        i = operands.index(role) if role in operands else len(inputs_from)
        if i >= len(inputs_from) or src != inputs_from[i] or src not in earlier:
            raise TraceError(f"{where}: tensor {role!r} is same_as {src!r}, but only a linked "
                             f"operand may be, naming the earlier op it takes input from")
        out = earlier[src].tensors
        if "output" not in out or out.dtype("output") != e["dtype"] or \
                math.prod(out.shape("output")) != math.prod(e["shape"]):
            raise TraceError(f"{where}: tensor {role!r} ({e['dtype']}, {e['shape']}) cannot be "
                             f"the output of {src!r}")
        sources[src] = out
    return sources


def _inside(folder: Path, name: Any, where: str) -> Path:
    """``folder / name``, refused unless it lies directly in ``folder``."""
    file = folder / str(name)
    if file.resolve().parent != folder.resolve():
        raise TraceError(f"{where}: file {name!r} must lie in the trace folder")
    return file


def load_trace(path: Union[str, Path]) -> Trace:
    """Read and validate a trace folder (see the module doc); tensors are read on access."""
    path = Path(path)
    mpath = path / "manifest.json"
    if not mpath.is_file():
        raise TraceError(f"{mpath}: missing; {path} is not a trace folder")
    try:
        manifest = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TraceError(f"{mpath}: not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise TraceError(f"{mpath}: not a numsim trace manifest ('format' must be {FORMAT!r})")
    version = manifest.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version not in READS:
        raise TraceError(f"{mpath}: trace version {manifest.get('version')!r}; this numsim "
                         f"reads versions {', '.join(map(str, READS))}")
    raw_ops = manifest.get("ops")
    if not isinstance(raw_ops, list):
        raise TraceError(f"{mpath}: 'ops' must be a list")
    ops: list[Op] = []
    earlier: dict[str, Op] = {}                 # op name -> op, for same_as entries
    for i, raw in enumerate(raw_ops):
        where = f"{mpath}: ops[{i}]"
        if not isinstance(raw, dict):
            raise TraceError(f"{where} must be an object")
        for key in ("name", "kind", "file", "tensors"):
            if key not in raw:
                raise TraceError(f"{where} lacks {key!r}")
        where = f"{mpath}: op {raw['name']!r}"
        file = _inside(path, raw["file"], where)
        entries = _tensor_entries(raw["tensors"], where)
        inputs_from = raw.get("inputs_from", [])
        attrs = raw.get("attrs", {})
        if not isinstance(inputs_from, list) or not isinstance(attrs, dict):
            raise TraceError(f"{where}: 'inputs_from' must be a list and 'attrs' an object")
        stored = {r: e for r, e in entries.items() if "same_as" not in e}
        sources = _check_same_as(raw["kind"], entries, inputs_from, earlier, version, where)
        _check_header(file, stored, f"op {raw['name']!r}")
        ops.append(Op(raw["name"], raw["kind"], _LazyTensors(file, entries, f"op {raw['name']!r}",
                                                             sources), attrs, inputs_from))
        earlier[raw["name"]] = ops[-1]
    extras = {}
    if "extras" in manifest:
        raw = manifest["extras"]
        if not isinstance(raw, dict) or "file" not in raw:
            raise TraceError(f"{mpath}: 'extras' needs a 'file' and 'tensors'")
        file = _inside(path, raw["file"], f"{mpath}: extras")
        entries = _tensor_entries(raw.get("tensors"), f"{mpath}: extras")
        if any("same_as" in e for e in entries.values()):
            raise TraceError(f"{mpath}: extras: same_as is for a linked operand of an op")
        _check_header(file, entries, "extras")
        extras = _LazyTensors(file, entries, "extras")
        if "labels" in entries:
            _check_labels(extras["labels"], f"{mpath}: extras")
    model, meta = manifest.get("model", ""), manifest.get("meta", {})
    if not isinstance(model, str) or not isinstance(meta, dict):
        raise TraceError(f"{mpath}: 'model' must be a string and 'meta' an object")
    try:
        trace = Trace(ops, None, model, meta)
    except TraceError as exc:
        raise TraceError(f"{mpath}: {exc}") from exc
    trace.extras = extras
    trace.path = path
    return trace
