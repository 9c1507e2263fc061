"""Trace folders (simulator.traces) and plain-array capture (simulator.capture).

Files are written with safetensors directly where a test needs a broken or hand-made trace,
so the checks do not rely on save_trace to build their inputs.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

from simulator.capture import from_arrays
from simulator.traces import Op, Trace, TraceError, load_trace, save_trace

BF16 = ml_dtypes.bfloat16


def _same_array(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype
    assert a.shape == b.shape
    if a.dtype == BF16:
        a, b = a.view(np.uint16), b.view(np.uint16)
    np.testing.assert_array_equal(a, b)


def _rich_trace():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 8)).astype(np.float32)
    w = rng.standard_normal((5, 8)).astype(np.float16)
    b = rng.standard_normal(5).astype(BF16)
    y = (x @ w.astype(np.float32).T + b.astype(np.float32)).astype(np.float32)
    r = np.maximum(y, 0)
    a2 = rng.standard_normal((2, 3, 5)).astype(np.float64)
    b2 = rng.standard_normal((2, 5, 4)).astype(np.float64)
    ops = [
        Op("fc", "linear", {"input": x, "weight": w, "bias": b, "output": y,
                            "grad_output": rng.standard_normal((6, 5)).astype(BF16)},
           attrs={"note": "first", "nested": {"k": [1, 2]}}),
        Op("act", "relu", {"input": y, "output": r}, inputs_from=["fc"]),
        Op("mm", "matmul", {"a": a2, "b": b2, "output": a2 @ b2}, attrs={"transpose": False}),
    ]
    extras = {"labels": np.arange(6, dtype=np.int64), "mask": np.array([True, False, True]),
              "ids": np.array([7, -3], dtype=np.int32), "u8": np.array([0, 255], np.uint8),
              "i8": np.array([-128, 127], np.int8)}
    return Trace(ops, extras, model="toy", meta={"seed": 3, "task": "demo"})


# --- round trip ------------------------------------------------------------------------------

def test_round_trip_arrays_dtypes_and_structure(tmp_path):
    tr = _rich_trace()
    out = save_trace(tr, tmp_path / "t")
    assert out == tmp_path / "t"
    back = load_trace(out)
    assert back.model == "toy"
    assert back.meta == {"seed": 3, "task": "demo"}
    assert [o.name for o in back.ops] == ["fc", "act", "mm"]
    assert [o.kind for o in back.ops] == ["linear", "relu", "matmul"]
    assert [o.inputs_from for o in back.ops] == [[], ["fc"], []]
    assert back.ops[0].attrs == {"note": "first", "nested": {"k": [1, 2]}}
    assert back.ops[2].attrs == {"transpose": False}
    for o_in, o_out in zip(tr.ops, back.ops):
        assert set(o_out.tensors) == set(o_in.tensors)
        for role in o_in.tensors:
            _same_array(o_out.tensors[role], o_in.tensors[role])
    assert set(back.extras) == set(tr.extras)
    for k, v in tr.extras.items():
        _same_array(back.extras[k], v)
    # the dtypes named in the task, explicitly
    assert back.op("fc").tensors["input"].dtype == np.float32
    assert back.op("fc").tensors["weight"].dtype == np.float16
    assert back.op("fc").tensors["bias"].dtype == BF16
    assert back.extras["labels"].dtype == np.int64


def test_bfloat16_trace_loads_in_a_fresh_process(tmp_path):
    """safetensors reads BF16 only where ml_dtypes has registered the dtype with NumPy: a new
    process that imports only simulator.traces must read the trace (it raised 'data type
    bfloat16 not understood')."""
    save_trace(_rich_trace(), tmp_path / "t")
    code = ("import sys; from simulator.traces import load_trace; "
            "print(load_trace(sys.argv[1]).op('fc').tensors['bias'].dtype)")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "t")], capture_output=True,
                       text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "bfloat16"


def test_manifest_is_valid_json_with_format_and_version(tmp_path):
    save_trace(_rich_trace(), tmp_path / "t")
    m = json.loads((tmp_path / "t" / "manifest.json").read_text())
    assert m["format"] == "numsim-trace"
    assert m["version"] == 2                     # act's input is stored as fc's output
    assert [o["name"] for o in m["ops"]] == ["fc", "act", "mm"]
    fc = m["ops"][0]
    assert fc["tensors"]["bias"] == {"shape": [5], "dtype": "bfloat16"}
    assert fc["tensors"]["weight"] == {"shape": [5, 8], "dtype": "float16"}
    assert m["extras"]["tensors"]["labels"] == {"shape": [6], "dtype": "int64"}
    for o in m["ops"]:
        assert (tmp_path / "t" / o["file"]).is_file()


def test_loaded_trace_saves_again(tmp_path):
    """A lazily loaded trace can be written elsewhere and over itself."""
    tr = _rich_trace()
    save_trace(tr, tmp_path / "a")
    save_trace(load_trace(tmp_path / "a"), tmp_path / "b")
    save_trace(load_trace(tmp_path / "a"), tmp_path / "a", overwrite=True)
    for folder in ("a", "b"):
        back = load_trace(tmp_path / folder)
        _same_array(back.op("fc").tensors["bias"], tr.op("fc").tensors["bias"])
        _same_array(back.extras["mask"], tr.extras["mask"])


# --- atomic writes and overwrite --------------------------------------------------------------

def _small(value):
    x = np.full((2, 3), value, np.float32)
    return Trace([Op("r", "relu", {"input": x, "output": x})])


def test_save_refuses_existing_folder_and_keeps_it(tmp_path):
    save_trace(_small(1.0), tmp_path / "t")
    before = {p.name: p.read_bytes() for p in (tmp_path / "t").iterdir()}
    with pytest.raises(TraceError, match="exists"):
        save_trace(_small(2.0), tmp_path / "t")
    assert {p.name: p.read_bytes() for p in (tmp_path / "t").iterdir()} == before
    assert load_trace(tmp_path / "t").op("r").tensors["input"][0, 0] == 1.0
    assert sorted(os.listdir(tmp_path)) == ["t"]


def test_trace_files_follow_the_umask(tmp_path):
    """Every file of a trace (safetensors writes its own 0600) and the folder are created as an
    ordinary file and folder are, so Dask workers running as another user can read them."""
    old = os.umask(0o022)
    try:
        save_trace(_small(1.0), tmp_path / "t")
    finally:
        os.umask(old)
    assert (tmp_path / "t").stat().st_mode & 0o777 == 0o755
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in (tmp_path / "t").iterdir()}
    assert modes == {"manifest.json": "0o644", "r.safetensors": "0o644"}


def test_overwrite_replaces_folder(tmp_path):
    save_trace(_small(1.0), tmp_path / "t")
    (tmp_path / "t" / "stale.txt").write_text("left from the old trace")
    save_trace(_small(2.0), tmp_path / "t", overwrite=True)
    assert load_trace(tmp_path / "t").op("r").tensors["input"][0, 0] == 2.0
    assert not (tmp_path / "t" / "stale.txt").exists()
    assert sorted(os.listdir(tmp_path)) == ["t"]


def _complex_trace():
    good = np.ones((2, 2), np.float32)
    bad = np.ones((2, 2), np.complex64)
    return Trace([Op("ok", "relu", {"input": good, "output": good}),
                  Op("bad", "relu", {"input": bad, "output": bad})])


def test_failed_save_leaves_no_temporary_folder(tmp_path):
    with pytest.raises(TraceError, match="complex"):
        save_trace(_complex_trace(), tmp_path / "t")
    assert os.listdir(tmp_path) == []


def test_failed_overwrite_keeps_old_folder(tmp_path):
    save_trace(_small(1.0), tmp_path / "t")
    with pytest.raises(TraceError):
        save_trace(_complex_trace(), tmp_path / "t", overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["t"]
    assert load_trace(tmp_path / "t").op("r").tensors["input"][0, 0] == 1.0


# --- validation on load -------------------------------------------------------------------------

X = np.arange(12, dtype=np.float32).reshape(3, 4)
W = np.arange(8, dtype=np.float32).reshape(2, 4) / 8
Y = (X @ W.T).astype(np.float32)


def _write(folder: Path, ops: list, extras=None, **top):
    """A trace folder written by hand: ops = [(name, kind, {role: array}, extra manifest
    fields)], one safetensors file per op."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {"format": "numsim-trace", "version": 1, "model": "m", "meta": {}, "ops": []}
    for name, kind, tensors, more in ops:
        save_file({r: np.ascontiguousarray(a) for r, a in tensors.items()},
                  str(folder / f"{name}.safetensors"))
        entry = {"name": name, "kind": kind, "file": f"{name}.safetensors",
                 "tensors": {r: {"shape": list(a.shape), "dtype": str(a.dtype)}
                             for r, a in tensors.items()},
                 "attrs": {}, "inputs_from": []}
        entry.update(more)
        manifest["ops"].append(entry)
    if extras is not None:
        save_file(extras, str(folder / "extras.safetensors"))
        manifest["extras"] = {"file": "extras.safetensors",
                              "tensors": {k: {"shape": list(v.shape), "dtype": str(v.dtype)}
                                          for k, v in extras.items()}}
    manifest.update(top)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def _good_ops():
    return [("fc", "linear", {"input": X, "weight": W, "output": Y}, {}),
            ("act", "relu", {"input": Y, "output": np.maximum(Y, 0)}, {"inputs_from": ["fc"]})]


def _edit_manifest(folder: Path, fn):
    m = json.loads((folder / "manifest.json").read_text())
    fn(m)
    (folder / "manifest.json").write_text(json.dumps(m))


def _load_error(folder: Path) -> str:
    with pytest.raises(TraceError) as info:
        load_trace(folder)
    return str(info.value)


def test_hand_written_trace_loads(tmp_path):
    t = load_trace(_write(tmp_path / "t", _good_ops(), extras={"labels": np.arange(3)}))
    np.testing.assert_array_equal(t.op("fc").tensors["weight"], W)
    np.testing.assert_array_equal(t.extras["labels"], np.arange(3))
    assert t.op("act").inputs_from == ["fc"]


def test_corrupt_safetensors(tmp_path):
    folder = _write(tmp_path / "t", _good_ops())
    (folder / "fc.safetensors").write_bytes(b"\x00garbage, not a safetensors file" * 4)
    msg = _load_error(folder)
    assert "fc.safetensors" in msg and "'fc'" in msg


def test_truncated_safetensors(tmp_path):
    folder = _write(tmp_path / "t", _good_ops())
    f = folder / "act.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    msg = _load_error(folder)
    assert "act.safetensors" in msg and "'act'" in msg


def test_file_missing_its_last_bytes(tmp_path):
    """Cut only inside the tensor data (the header stays whole)."""
    folder = _write(tmp_path / "t", _good_ops())
    f = folder / "fc.safetensors"
    f.write_bytes(f.read_bytes()[:-4])
    msg = _load_error(folder)
    assert "fc.safetensors" in msg and "'fc'" in msg


def test_manifest_names_tensor_missing_from_file(tmp_path):
    folder = _write(tmp_path / "t", _good_ops())
    _edit_manifest(folder, lambda m: m["ops"][0]["tensors"].update(
        bias={"shape": [2], "dtype": "float32"}))
    msg = _load_error(folder)
    assert "fc.safetensors" in msg and "'bias'" in msg and "'fc'" in msg


def test_missing_file(tmp_path):
    folder = _write(tmp_path / "t", _good_ops())
    (folder / "act.safetensors").unlink()
    msg = _load_error(folder)
    assert "act.safetensors" in msg and "missing" in msg and "'act'" in msg


def test_missing_manifest(tmp_path):
    folder = _write(tmp_path / "t", _good_ops())
    (folder / "manifest.json").unlink()
    assert "manifest.json" in _load_error(folder)


def test_shape_disagrees_with_file(tmp_path):
    folder = _write(tmp_path / "t", _good_ops())
    _edit_manifest(folder, lambda m: m["ops"][0]["tensors"]["input"].update(shape=[4, 3]))
    msg = _load_error(folder)
    assert "fc.safetensors" in msg and "'input'" in msg and "shape" in msg


def test_dtype_disagrees_with_file(tmp_path):
    folder = _write(tmp_path / "t", _good_ops())
    _edit_manifest(folder, lambda m: m["ops"][0]["tensors"]["weight"].update(dtype="float16"))
    msg = _load_error(folder)
    assert "fc.safetensors" in msg and "'weight'" in msg and "float16" in msg


def test_unknown_dtype_name_in_manifest(tmp_path):
    folder = _write(tmp_path / "t", _good_ops())
    _edit_manifest(folder, lambda m: m["ops"][1]["tensors"]["input"].update(dtype="float8"))
    msg = _load_error(folder)
    assert "manifest.json" in msg and "'act'" in msg and "'input'" in msg


def test_bad_json(tmp_path):
    folder = _write(tmp_path / "t", _good_ops())
    (folder / "manifest.json").write_text('{"format": "numsim-trace", "version": 1,')
    msg = _load_error(folder)
    assert "manifest.json" in msg and "JSON" in msg


def test_a_linked_operand_equal_to_its_sources_output_is_stored_once(tmp_path):
    """act's input is fc's output bit for bit: the manifest says so and act's file leaves it
    out; it loads back as the same values in act's own shape.  An operand that differs in one
    bit (-0.0 for 0.0) or in dtype is stored."""
    from safetensors import safe_open
    y = np.array([[1.5, 0.0], [-2.0, 3.0]], np.float32)
    ops = [Op("fc", "linear", {"input": X[:2, :3], "weight": W[:2, :3],
                               "output": y}),
           Op("flat", "flatten", {"input": y, "output": y.reshape(4)}, inputs_from=["fc"]),
           Op("neg0", "relu", {"input": np.where(y == 0, -0.0, y).astype(np.float32),
                               "output": np.maximum(y, 0)}, inputs_from=["fc"]),
           Op("wide", "relu", {"input": y.astype(np.float64), "output": np.maximum(y, 0)},
              inputs_from=["fc"]),
           Op("add", "add", {"input": y.reshape(4), "other": y.reshape(1, 4),
                             "output": y.reshape(1, 4) * 2}, inputs_from=["flat", "fc"])]
    path = save_trace(Trace(ops), tmp_path / "t")
    m = json.loads((path / "manifest.json").read_text())
    tensors = {o["name"]: o["tensors"] for o in m["ops"]}
    assert m["version"] == 2
    assert tensors["flat"]["input"] == {"shape": [2, 2], "dtype": "float32", "same_as": "fc"}
    assert tensors["add"]["input"]["same_as"] == "flat" and tensors["add"]["other"][
        "same_as"] == "fc"
    assert "same_as" not in tensors["neg0"]["input"] and "same_as" not in tensors["wide"]["input"]
    with safe_open(str(path / "flat.safetensors"), framework="numpy") as f:
        assert set(f.keys()) == {"output"}
    back = load_trace(path)
    for o in ops:
        for role, a in o.tensors.items():
            _same_array(back.op(o.name).tensors[role], a)



@pytest.mark.parametrize("op, role, same_as, words", [
    (2, "input", "mm", "only a linked operand"),            # itself
    (2, "input", "act", "only a linked operand"),           # not the op it takes input from
    (2, "input", 7, "only a linked operand"),
    (2, "output", "fc", "only a linked operand"),           # a role that is not an operand
    (0, "weight", "fc", "only a linked operand"),
    (3, "input", "act", "only a linked operand"),           # the source of 'other', not 'input'
    (1, "input", "fc", "version 1 does not have")])
def test_a_bad_same_as_is_refused(tmp_path, op, role, same_as, words):
    folder = _write(tmp_path / "t", _good_ops() + [
        ("mm", "relu", {"input": Y, "output": Y}, {"inputs_from": ["fc"]}),
        ("sum", "add", {"input": Y, "other": np.maximum(Y, 0), "output": Y + np.maximum(Y, 0)},
         {"inputs_from": ["fc", "act"]})], version=1 if words.startswith("version") else 2)

    def alias(m):
        m["ops"][op]["tensors"][role]["same_as"] = same_as
    _edit_manifest(folder, alias)
    assert words in _load_error(folder)


def test_a_same_as_of_another_dtype_or_size_or_in_the_extras_is_refused(tmp_path):
    folder = _write(tmp_path / "t", _good_ops(), version=2)

    def alias(m):
        m["ops"][1]["tensors"]["input"] = {"shape": [2], "dtype": "float32", "same_as": "fc"}
    _edit_manifest(folder, alias)
    assert "cannot be the output of 'fc'" in _load_error(folder)
    folder = _write(tmp_path / "x", _good_ops(), extras={"labels": np.arange(3)}, version=2)

    def extra(m):
        m["extras"]["tensors"]["labels"]["same_as"] = "fc"
    _edit_manifest(folder, extra)
    assert "extras: same_as is for a linked operand" in _load_error(folder)


def test_wrong_format(tmp_path):
    folder = _write(tmp_path / "t", _good_ops(), format="other-trace")
    msg = _load_error(folder)
    assert "manifest.json" in msg and "numsim-trace" in msg


def test_wrong_version(tmp_path):
    folder = _write(tmp_path / "t", _good_ops(), version=3)
    msg = _load_error(folder)
    assert "manifest.json" in msg and "version" in msg


def test_unknown_op_kind(tmp_path):
    ops = _good_ops()
    ops[1] = ("act", "sigmoidish", ops[1][2], ops[1][3])
    msg = _load_error(_write(tmp_path / "t", ops))
    assert "manifest.json" in msg and "'act'" in msg and "sigmoidish" in msg


@pytest.mark.parametrize("source", ["act", "nowhere"])
def test_inputs_from_later_or_unknown_op(tmp_path, source):
    ops = _good_ops()
    ops[0] = ("fc", "linear", ops[0][2], {"inputs_from": [source]})
    msg = _load_error(_write(tmp_path / "t", ops))
    assert "manifest.json" in msg and "'fc'" in msg and repr(source) in msg


def test_duplicate_op_names(tmp_path):
    folder = _write(tmp_path / "t", _good_ops())
    _edit_manifest(folder, lambda m: m["ops"].append(dict(m["ops"][1], inputs_from=[])))
    msg = _load_error(folder)
    assert "manifest.json" in msg and "'act'" in msg and "twice" in msg


def test_linear_input_weight_mismatch(tmp_path):
    ops = [("fc", "linear", {"input": X, "weight": np.ones((2, 5), np.float32),
                             "output": Y}, {})]
    msg = _load_error(_write(tmp_path / "t", ops))
    assert "manifest.json" in msg and "'fc'" in msg and "(3, 4)" in msg and "(2, 5)" in msg


def test_linear_output_shape_mismatch(tmp_path):
    ops = [("fc", "linear", {"input": X, "weight": W, "output": np.ones((3, 3), np.float32)},
            {})]
    msg = _load_error(_write(tmp_path / "t", ops))
    assert "manifest.json" in msg and "'fc'" in msg and "output" in msg


def test_matmul_output_shape_mismatch(tmp_path):
    a, b = np.ones((2, 3), np.float32), np.ones((3, 4), np.float32)
    ops = [("mm", "matmul", {"a": a, "b": b, "output": np.ones((2, 5), np.float32)}, {})]
    msg = _load_error(_write(tmp_path / "t", ops))
    assert "'mm'" in msg and "output" in msg


def test_missing_required_role(tmp_path):
    ops = [("fc", "linear", {"input": X, "output": Y}, {})]
    msg = _load_error(_write(tmp_path / "t", ops))
    assert "'fc'" in msg and "'weight'" in msg


def test_unknown_role(tmp_path):
    ops = [("act", "relu", {"input": Y, "output": Y, "weight": W}, {})]
    msg = _load_error(_write(tmp_path / "t", ops))
    assert "'act'" in msg and "'weight'" in msg


@pytest.mark.parametrize("where", ["../x.safetensors", "ABSOLUTE"])
def test_op_file_escaping_the_folder(tmp_path, where):
    folder = _write(tmp_path / "t", _good_ops())
    save_file({"input": Y, "output": np.maximum(Y, 0)}, str(tmp_path / "x.safetensors"))
    target = str(tmp_path / "x.safetensors") if where == "ABSOLUTE" else where
    _edit_manifest(folder, lambda m: m["ops"][1].update(file=target))
    msg = _load_error(folder)
    assert "'act'" in msg and "x.safetensors" in msg and "trace folder" in msg


def test_extras_file_escaping_the_folder(tmp_path):
    folder = _write(tmp_path / "t", _good_ops(), extras={"labels": np.arange(3)})
    save_file({"labels": np.arange(3)}, str(tmp_path / "x.safetensors"))
    _edit_manifest(folder, lambda m: m["extras"].update(file="../x.safetensors"))
    with pytest.raises(TraceError, match="x.safetensors"):
        load_trace(folder)


def test_extras_header_checked(tmp_path):
    folder = _write(tmp_path / "t", _good_ops(), extras={"labels": np.arange(3)})
    _edit_manifest(folder, lambda m: m["extras"]["tensors"]["labels"].update(shape=[4]))
    msg = _load_error(folder)
    assert "extras.safetensors" in msg and "'labels'" in msg


def test_conv2d_output_spatial_shape_mismatch():
    x = np.ones((1, 2, 5, 5), np.float32)
    w = np.ones((4, 2, 3, 3), np.float32)
    with pytest.raises(TraceError, match="output"):
        Trace([Op("c", "conv2d", {"input": x, "weight": w,
                                  "output": np.zeros((1, 4, 7, 7), np.float32)})])


def test_conv2d_group_mismatch():
    x = np.ones((1, 4, 5, 5), np.float32)
    w = np.ones((6, 4, 3, 3), np.float32)           # needs C = 4 * groups
    with pytest.raises(TraceError, match="'c'"):
        Trace([Op("c", "conv2d", {"input": x, "weight": w,
                                  "output": np.zeros((1, 6, 3, 3), np.float32)},
                  attrs={"groups": 2})])


# --- from_arrays ---------------------------------------------------------------------------

def test_from_arrays_linear_exact_output():
    # integer-valued operands: the exact result is representable, so compare with integers
    rng = np.random.default_rng(3)
    xi = rng.integers(-50, 50, size=(2, 3, 6))
    wi = rng.integers(-50, 50, size=(4, 6))
    bi = rng.integers(-1000, 1000, size=4)
    want = np.einsum("bsk,nk->bsn", xi.astype(object), wi.astype(object)) + bi.astype(object)
    tr = from_arrays({"fc": {"kind": "linear", "input": xi.astype(np.float32),
                             "weight": wi.astype(np.float16), "bias": bi.astype(np.float32)}})
    out = tr.op("fc").tensors["output"]
    assert out.dtype == np.float64
    assert out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, want.astype(np.float64))
    assert tr.model == "arrays"


def test_from_arrays_linear_output_is_float64_not_float32():
    """Values whose float32 product would round: the output must keep float64 precision."""
    x = np.array([[1.0 + 2.0 ** -20, 1.0]], np.float32)
    w = np.array([[1.0 + 2.0 ** -20, -1.0]], np.float32)
    out = from_arrays({"fc": {"kind": "linear", "input": x, "weight": w}}).op("fc").tensors
    # (1 + 2^-20)^2 - 1 = 2^-19 + 2^-40, exact in float64
    assert out["output"][0, 0] == 2.0 ** -19 + 2.0 ** -40


def test_from_arrays_matmul_exact_output():
    rng = np.random.default_rng(4)
    a = rng.integers(-20, 20, size=(2, 3, 5))
    b = rng.integers(-20, 20, size=(5, 4))
    tr = from_arrays({"mm": {"kind": "matmul", "a": a.astype(np.float32),
                             "b": b.astype(np.float32)}},
                     extras={"labels": np.arange(3)}, model="mine")
    out = tr.op("mm").tensors["output"]
    want = np.einsum("bmk,kn->bmn", a.astype(object), b.astype(object)).astype(np.float64)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, want)
    assert tr.model == "mine"
    np.testing.assert_array_equal(tr.extras["labels"], np.arange(3))


def test_from_arrays_keeps_given_output_attrs_and_graph():
    y = np.ones((3, 2), np.float32)
    tr = from_arrays({"fc": {"kind": "linear", "input": X, "weight": W, "output": y,
                             "attrs": {"k": 1}},
                      "act": {"kind": "relu", "input": y, "output": y, "inputs_from": ["fc"]}})
    np.testing.assert_array_equal(tr.op("fc").tensors["output"], y)
    assert tr.op("fc").tensors["output"].dtype == np.float32
    assert tr.op("act").inputs_from == ["fc"] and tr.op("fc").attrs == {"k": 1}
    # the ops between the MACs take only the attrs replay honours (softmax's dim is not one)
    for kind, attrs in (("relu", {"k": 1}), ("softmax", {"dim": 0}), ("add", {"alpha": 2})):
        other = {"other": y} if kind == "add" else {}
        with pytest.raises(TraceError, match="unknown attrs"):
            from_arrays({"op": {"kind": kind, "input": y, "output": y, "attrs": attrs, **other}})
    with pytest.raises(TraceError, match="links at most 1"):
        from_arrays({"fc": {"kind": "linear", "input": X, "weight": W, "output": y},
                     "act": {"kind": "relu", "input": y, "output": y,
                             "inputs_from": ["fc", "fc"]}})


@pytest.mark.parametrize("spec, words", [
    ({"kind": "linear", "input": np.ones((2, 3)), "weight": np.ones((4, 5))}, ["linear"]),
    ({"kind": "linear", "input": np.ones((2, 3)), "weight": np.ones((4, 3)),
      "bias": np.ones(5)}, ["linear"]),
    ({"kind": "linear", "input": np.ones((2, 3))}, ["weight"]),
    ({"kind": "matmul", "a": np.ones((2, 3)), "b": np.ones((4, 5))}, ["matmul"]),
    ({"kind": "conv2d", "input": np.ones((1, 2, 4, 4)), "weight": np.ones((3, 2, 3, 3))},
     ["output"]),
    ({"kind": "relu", "input": np.ones(3, np.complex64), "output": np.ones(3)}, ["complex"]),
    ({"kind": "linear", "input": np.ones((2, 3)), "weight": np.ones((4, 3)),
      "output": np.ones((2, 5))}, ["output"]),
    ({"kind": "nonsense", "input": np.ones(3), "output": np.ones(3)}, ["nonsense"]),
    ({"input": np.ones(3)}, ["kind"]),
], ids=["linear-K", "linear-bias", "linear-no-weight", "matmul-K", "conv-no-output",
        "complex", "linear-output", "unknown-kind", "no-kind"])
def test_from_arrays_bad_shapes_name_the_op(spec, words):
    with pytest.raises(TraceError) as info:
        from_arrays({"badop": spec})
    msg = str(info.value)
    assert "'badop'" in msg
    for word in words:
        assert word in msg


def test_from_arrays_accepts_bfloat16():
    x = np.ones((2, 3), BF16)
    w = np.ones((4, 3), BF16)
    tr = from_arrays({"fc": {"kind": "linear", "input": x, "weight": w}})
    np.testing.assert_array_equal(tr.op("fc").tensors["output"], np.full((2, 4), 3.0))


def test_from_arrays_round_trip(tmp_path):
    rng = np.random.default_rng(8)
    tr = from_arrays({"fc": {"kind": "linear", "input": rng.standard_normal((3, 4)),
                             "weight": rng.standard_normal((2, 4)).astype(np.float32)}})
    back = load_trace(save_trace(tr, tmp_path / "t"))
    _same_array(back.op("fc").tensors["output"], tr.op("fc").tensors["output"])
    _same_array(back.op("fc").tensors["weight"], tr.op("fc").tensors["weight"])


# --- names, shapes and values that a save or load once mishandled ------------------------------

def test_op_names_that_meet_the_extras_file_or_differ_only_in_case(tmp_path):
    """An op named 'extras' kept its own file apart from the extras file (it was overwritten by
    it), and 'FC'/'fc' get two files (one on a case-insensitive file system otherwise)."""
    ops = {n: {"kind": "linear", "input": X * (i + 1), "weight": W}
           for i, n in enumerate(["extras", "FC", "fc", "Extras"])}
    tr = from_arrays(ops, extras={"labels": np.arange(3)})
    back = load_trace(save_trace(tr, tmp_path / "t"))
    files = sorted(os.listdir(tmp_path / "t"))
    assert len({f.casefold() for f in files}) == len(files) == 6
    for i, o in enumerate(back.ops):
        _same_array(o.tensors["input"], X * (i + 1))
    np.testing.assert_array_equal(back.extras["labels"], np.arange(3))


def test_zero_dimensional_tensors_keep_their_shape(tmp_path):
    x, w = np.arange(4.0), np.ones((3, 4))
    tr = from_arrays({"fc": {"kind": "linear", "input": x, "weight": w}},
                     extras={"labels": np.asarray(1)})
    back = load_trace(save_trace(tr, tmp_path / "t"))
    assert back.extras["labels"].shape == () and back.extras["labels"] == 1
    assert back.op("fc").tensors["output"].shape == (3,)


def test_long_op_names_save_and_nul_is_refused(tmp_path):
    name = "block." * 60 + "fc"                     # 362 characters: too long for one file name
    tr = from_arrays({name: {"kind": "linear", "input": X, "weight": W}})
    assert load_trace(save_trace(tr, tmp_path / "t")).ops[0].name == name
    with pytest.raises(TraceError, match="NUL"):
        from_arrays({"f\0c": {"kind": "linear", "input": X, "weight": W}})


@pytest.mark.parametrize("spec, words", [
    ({"kind": "relu", "input": np.ones((3, 4)), "output": np.ones(5)}, ["shape"]),
    ({"kind": "softmax", "input": np.ones((3, 4)), "output": np.ones((4, 3))}, ["shape"]),
    ({"kind": "flatten", "input": np.ones((2, 3, 4)), "output": np.ones((2, 11))}, ["24"]),
    ({"kind": "linear", "input": X, "weight": W, "inputs_from": "fc1"}, ["inputs_from"]),
    ({"kind": "linear", "input": X, "weight": W, "attrs": [1]}, ["attrs"]),
    ({"kind": "linear", "input": X.astype(np.int16), "weight": W}, ["int16"]),
    ({"kind": "linear", "input": X.astype(np.uint32), "weight": W}, ["uint32"]),
    ({"kind": "conv2d", "input": np.ones((1, 2, 5, 5)), "weight": np.ones((4, 2, 3, 3)),
      "output": np.ones((1, 4, 3, 3)), "attrs": {"strides": [2, 2]}}, ["strides"]),
    ({"kind": "conv2d", "input": np.ones((1, 2, 5, 5)), "weight": np.ones((3, 1, 3, 3)),
      "output": np.ones((1, 3, 3, 3)), "attrs": {"groups": 2}}, ["groups"]),
    ({"kind": "gelu", "input": np.ones(3), "output": np.ones(3), "attrs": {"approx": "tanh"}},
     ["approx"]),
])
def test_from_arrays_refuses_what_replay_would_misread(spec, words):
    """Each of these was accepted and failed later (in replay or at save), or was ignored."""
    with pytest.raises(TraceError) as info:
        from_arrays({"badop": spec})
    for word in ["'badop'", *words]:
        assert word in str(info.value)


def test_labels_must_be_whole_numbers(tmp_path):
    """Fractional labels gave an accuracy of 0 silently; floats holding whole numbers (older
    traces) still load, and a flatten from dim 0 is a flatten."""
    fc = {"fc": {"kind": "linear", "input": X, "weight": W}}
    with pytest.raises(TraceError, match="labels"):
        from_arrays(fc, extras={"labels": np.array([1.0, 0.0, 1.7])})
    folder = _write(tmp_path / "t", _good_ops(), extras={"labels": np.array([1.0, 0.0, 1.5])})
    assert "labels" in _load_error(folder)
    folder = _write(tmp_path / "u", _good_ops(), extras={"labels": np.array([1.0, 0.0, 1.0])})
    assert load_trace(folder).extras["labels"].tolist() == [1.0, 0.0, 1.0]
    from_arrays({"f": {"kind": "flatten", "input": np.ones((2, 3, 4)), "output": np.ones(24)}})


@pytest.mark.parametrize("top", [{"version": True}, {"version": 1.0}, {"meta": [1]},
                                 {"meta": "x"}, {"model": None}])
def test_manifest_top_level_types(tmp_path, top):
    msg = _load_error(_write(tmp_path / "t", _good_ops(), **top))
    assert "manifest.json" in msg


def test_overwrite_refuses_what_is_not_a_trace(tmp_path, monkeypatch):
    tr = from_arrays({"fc": {"kind": "linear", "input": X, "weight": W}})
    other = tmp_path / "photos"
    other.mkdir()
    (other / "keep.jpg").write_bytes(b"x")
    with pytest.raises(TraceError, match="not a trace folder"):
        save_trace(tr, other, overwrite=True)
    assert (other / "keep.jpg").is_file()
    save_trace(tr, tmp_path / "t")
    monkeypatch.chdir(tmp_path / "t")
    with pytest.raises(TraceError, match="current folder"):
        save_trace(tr, ".", overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["photos", "t"]


def test_an_ops_repr_shows_shapes_not_values(tmp_path):
    x = Op("x", "relu", {"input": np.ones((3, 4)), "output": np.ones((3, 4))})
    op = Op("fc", "linear", {"input": np.ones((3, 4)), "weight": np.ones((2, 4)),
                             "output": np.ones((3, 2))}, inputs_from=["x"])
    assert repr(op) == ("Op('fc', 'linear', input=(3, 4), weight=(2, 4), output=(3, 2), "
                        "attrs={}, inputs_from=['x'])")
    loaded = load_trace(save_trace(Trace([x, op]), tmp_path / "t")).ops[1]
    assert repr(loaded) == repr(op)                 # read from the headers, not the data
