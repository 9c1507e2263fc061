"""The numsim command line, run as a user runs it: ``python -m simulator.cli`` in a subprocess,
in a scratch folder.

Expected values come from outside the command: numpy's and ml_dtypes' casts, format facts,
tensors read back from the files written, and the report rule re-applied by hand.  The demo
runs once per module (plus one rerun, for resuming); the replay, capture and sweep runs are
module fixtures too, shared by the tests that read their outputs.
"""
import csv
import io
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import load_file, save_file

import formats
from reports.report import recommend, summarize
from simulator.standard import standard_configs
from simulator.traces import Trace, load_trace, save_trace

SUBCOMMANDS = ["formats", "quantize", "table", "capture", "replay", "sweep", "report", "demo"]
FP16_CFG = "fp16:fp16:fp16->fp32"
INT8_CFG = "int8_channel:int8_tensor:int8->int32"
FP16_NAME, INT8_NAME = "fp16|fp32", "w:int8_channel,a:int8_tensor|int32"
PNG = b"\x89PNG\r\n\x1a\n"


def _numsim(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "simulator.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=timeout)


def _ok(r: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert r.returncode == 0, f"exit {r.returncode}\nstdout:\n{r.stdout[-3000:]}\n" \
                              f"stderr:\n{r.stderr[-3000:]}"
    return r


def _input_error(r: subprocess.CompletedProcess, command: str, *needles: str) -> None:
    """Exit 1, one 'numsim COMMAND: error: ...' message on stderr naming ``needles``, nothing
    on stdout."""
    assert r.returncode == 1, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    assert f"numsim {command}: error:" in r.stderr, r.stderr
    for n in needles:
        assert n in r.stderr, (n, r.stderr)
    assert r.stdout == ""
    assert "Traceback" not in r.stderr


def _stats(x, q):
    x = np.asarray(x, float).ravel()
    q = np.asarray(q, float).ravel()
    e = q - x
    noise = float(np.sum(e * e))
    return {"mse": noise / x.size,
            "sqnr_db": math.inf if noise == 0 else 10 * math.log10(np.sum(x * x) / noise),
            "max_abs_error": float(np.max(np.abs(e)))}


def _close(got: dict, want: dict) -> None:
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-9), (k, got[k], v)


# --- help, version and usage errors -----------------------------------------------------------

def test_top_level_help_and_version(tmp_path):
    r = _ok(_numsim("--help", cwd=tmp_path))
    for sub in SUBCOMMANDS:
        assert sub in r.stdout, sub
    v = _ok(_numsim("--version", cwd=tmp_path))
    assert v.stdout.startswith("numsim ")


def test_every_subcommand_help(tmp_path):
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(4) as pool:                         # 8 short processes
        runs = dict(zip(SUBCOMMANDS, pool.map(lambda sub: _numsim(sub, "--help", cwd=tmp_path),
                                              SUBCOMMANDS)))
    for sub, r in runs.items():
        _ok(r)
        assert r.stdout.startswith(f"usage: numsim {sub}"), (sub, r.stdout[:200])
        assert r.stderr == "", (sub, r.stderr)
    assert list(tmp_path.iterdir()) == []                       # --help writes nothing


def test_cli_rounding_choices_are_the_library_modes():
    from formats.rounding import MODES
    from simulator.cli import ROUNDINGS
    assert ROUNDINGS == tuple(MODES)


@pytest.mark.parametrize("args,needle", [
    (["no-such-command"], "invalid choice"),
    ([], "required"),
    (["quantize", "x.npy"], "--format"),
    (["replay", "builtin:digits", "--mode", "sideways"], "invalid choice"),
    (["formats", "--json", "--csv", "-"], "not allowed with"),
    (["replay", "builtin:digits", "--config", "fp16"], "WEIGHTS:ACTIVATIONS[:MAC_PRESET]"),
    (["replay", "builtin:digits", "--config", "fp16:"], "WEIGHTS:ACTIVATIONS[:MAC_PRESET]"),
    (["replay", "builtin:digits", "--config", "fp16:fp16:fp16-"], "quote the argument"),
    (["replay", "builtin:digits", "--output", "x.xlsx"], ".csv or .parquet"),
    (["replay", "builtin:digits", "--storage"], "expected one argument"),
    (["replay", "builtin:digits", "--fusion", "all"], "invalid choice"),
    (["table", "--rows", "0"], "--rows: 0 is below the least allowed, 1"),
    (["quantize", "x.npy", "--format", "fp16", "--rounding", "sideways"], "invalid choice"),
    (["table", "--seed", "-1"], "--seed: -1 is below"),
    (["table", "--rows", "many"], "'many' is not an integer"),
    (["table", "--input", "x.npy", "--distributions", "gaussian"], "not allowed with"),
    (["sweep", "s.toml", "--workers", "0"], "--workers: 0 is below"),
    (["demo", "--workers", "-3"], "--workers: -3 is below"),
    (["report", "r.csv", "--min-sqnr", "nan"], "--min-sqnr: 'nan' is not finite"),
    (["report", "r.csv", "--accuracy-drop", "lots"], "'lots' is not a number"),
    (["report", "r.csv", "--accuracy-drop", "-1"], "'-1' is negative"),
])
def test_usage_errors_exit_2(args, needle, tmp_path):
    r = _numsim(*args, cwd=tmp_path)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "usage: numsim" in r.stderr and needle in r.stderr, r.stderr
    assert r.stdout == ""


# --- formats --------------------------------------------------------------------------------

def test_formats_text_lists_every_format(tmp_path):
    r = _ok(_numsim("formats", cwd=tmp_path))
    rows = {line.split()[0]: line.split() for line in r.stdout.splitlines()[1:]}
    assert set(rows) == set(formats.names() + formats.scaled_names())
    assert float(rows["fp16"][3]) == 65504.0          # format family bits max ...
    assert float(rows["fp8_e4m3"][3]) == 448.0
    assert rows["fp16"][2] == "16" and rows["mxfp4"][2] == "4.25"   # 6 significant digits
    f32 = np.finfo(np.float32)                        # range_db = 20 log10(max / min_positive)
    db = 20 * math.log10(float(f32.max) / float(f32.smallest_subnormal))
    assert rows["fp32"][-1] == f"{db:.6g}"


def test_formats_json(tmp_path):
    r = _ok(_numsim("formats", "--json", cwd=tmp_path))
    records = {rec["format"]: rec for rec in json.loads(r.stdout)}
    assert len(records) == len(formats.names()) + len(formats.scaled_names())
    fp16 = records["fp16"]
    assert fp16["max"] == 65504.0 and fp16["epsilon"] == 2.0 ** -10
    assert fp16["min_positive"] == 2.0 ** -24
    assert fp16["bits"] == 16 and fp16["family"] == "float" and fp16["n_values"] == 63487
    assert records["mxfp4"]["bits"] == 4.25 and records["nvfp4"]["bits"] == 4.5
    assert records["int8"]["max"] == 127


def test_json_keeps_float_precision(tmp_path):
    """--json must print floats so that they read back as the same numbers (as --csv does):
    fp16's smallest subnormal is exactly 2^-24, its smallest normal 2^-14, fp32's epsilon
    2^-23."""
    r = _ok(_numsim("formats", "fp16", "fp32", "--json", cwd=tmp_path))
    fp16, fp32 = json.loads(r.stdout)
    assert fp16["min_positive"] == 2.0 ** -24, fp16["min_positive"]
    assert fp16["min_normal"] == 2.0 ** -14, fp16["min_normal"]
    assert fp32["epsilon"] == 2.0 ** -23, fp32["epsilon"]


def test_formats_named_csv_to_stdout_and_file(tmp_path):
    r = _ok(_numsim("formats", "fp16", "nvfp4", "fp8_e4m3", "--csv", "-", cwd=tmp_path))
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [row["format"] for row in rows] == ["fp16", "nvfp4", "fp8_e4m3"]
    assert float(rows[2]["max"]) == 448.0 and float(rows[0]["max"]) == 65504.0
    f = _ok(_numsim("formats", "bf16", "--csv", "props.csv", cwd=tmp_path))
    assert f.stdout == "" and "props.csv" in f.stderr
    back = pd.read_csv(tmp_path / "props.csv")
    assert list(back["format"]) == ["bf16"] and back["max"][0] == (2 - 2 ** -7) * 2.0 ** 127


def test_formats_unknown_name_exit_1(tmp_path):
    _input_error(_numsim("formats", "fp16", "nosuch", cwd=tmp_path), "formats", "nosuch")


# --- quantize -------------------------------------------------------------------------------

def test_quantize_npy_scalar_format(tmp_path):
    x = np.random.default_rng(0).standard_normal((5, 40)) * 20
    np.save(tmp_path / "x.npy", x)
    r = _ok(_numsim("quantize", "x.npy", "--format", "fp8_e4m3", cwd=tmp_path))
    out = tmp_path / "x.fp8_e4m3.npy"                          # default output name
    assert "x.fp8_e4m3.npy" in r.stderr
    q = np.load(out)
    assert q.dtype == np.float64 and q.shape == x.shape
    np.testing.assert_array_equal(q, formats.get("fp8_e4m3").quantize(x))
    np.testing.assert_array_equal(q, x.astype(ml_dtypes.float8_e4m3fn).astype(np.float64))
    assert "x" in r.stdout.split() and "sqnr_db" in r.stdout


def test_quantize_reads_integers_exactly_and_saturates_inf(tmp_path):
    """As formats' quantize: int64 beyond 2**53 is rounded once (2**60 + 2**36 + 1 -> fp32's
    2**60 + 2**37, not 2**60 through float64), and +-Inf saturates into int8."""
    np.save(tmp_path / "big.npy", np.array([2**60 + 2**36 + 1, 3], dtype=np.int64))
    _ok(_numsim("quantize", "big.npy", "--format", "fp32", cwd=tmp_path))
    assert np.load(tmp_path / "big.fp32.npy").tolist() == [2.0**60 + 2.0**37, 3.0]
    np.save(tmp_path / "inf.npy", np.array([1.0, np.inf, -np.inf, 1e6]))
    _ok(_numsim("quantize", "inf.npy", "--format", "int8", cwd=tmp_path))
    assert np.load(tmp_path / "inf.int8.npy").tolist() == [1.0, 127.0, -128.0, 127.0]


def test_quantize_npy_float32_output_and_json_stats(tmp_path):
    x = np.random.default_rng(1).standard_normal((2, 3, 64))
    x = np.sign(x) * (0.1 + np.abs(x))                      # nothing else near 0 or 448
    x[0, 0, :4] = [1000.0, -500.0, 2.0 ** -12, 448.0]       # 2 beyond 448, 1 flushes to 0
    np.save(tmp_path / "t.npy", x)
    r = _ok(_numsim("quantize", "t.npy", "--format", "fp8_e4m3", "--output", "q.npy",
                    "--float32", "--json", cwd=tmp_path))
    q = np.load(tmp_path / "q.npy")
    assert q.dtype == np.float32 and q.shape == x.shape
    rec, = json.loads(r.stdout)
    assert rec["tensor"] == "t" and rec["shape"] == "2x3x64" and rec["bits"] == 8
    assert rec["saturated_share"] == pytest.approx(2 / x.size)
    assert rec["flushed_share"] == pytest.approx(1 / x.size)
    inside = np.abs(x) <= 448
    want = x[inside].astype(ml_dtypes.float8_e4m3fn).astype(np.float64)
    np.testing.assert_array_equal(q[inside].astype(np.float64), want)


def test_quantize_npy_scaled_format(tmp_path):
    x = np.random.default_rng(2).standard_normal((3, 4, 64)) * 5
    np.save(tmp_path / "w.npy", x)
    r = _ok(_numsim("quantize", "w.npy", "--format", "mxfp4", "--json", cwd=tmp_path))
    q = np.load(tmp_path / "w.mxfp4.npy")
    assert q.shape == x.shape
    f = formats.get("mxfp4")
    x2 = x.reshape(-1, 64)
    np.testing.assert_array_equal(q.reshape(-1, 64), f.decode(f.encode(x2, axis=1)))
    # every block of 32 shares one power-of-two scale: q / scale lies on the E2M1 grid
    blocks, qb = x2.reshape(-1, 32), q.reshape(-1, 32)
    scale = 2.0 ** (np.floor(np.log2(np.max(np.abs(blocks), axis=1, keepdims=True))) - 2)
    grid = {0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0}
    assert set(np.unique(np.abs(qb / scale))) <= grid
    rec, = json.loads(r.stdout)
    assert rec["bits"] == 4.25
    _close(rec, _stats(x, q))


def test_quantize_safetensors_two_tensors(tmp_path):
    rng = np.random.default_rng(3)
    tensors = {"layer.weight": rng.standard_normal((8, 16)).astype(np.float32),
               "layer.bias": (rng.standard_normal(16) * 1e-3).astype(np.float32)}
    save_file(tensors, str(tmp_path / "m.safetensors"))
    r = _ok(_numsim("quantize", "m.safetensors", "--format", "fp16", "--json", cwd=tmp_path))
    out = load_file(str(tmp_path / "m.fp16.safetensors"))
    assert set(out) == set(tensors)
    recs = {rec["tensor"]: rec for rec in json.loads(r.stdout)}
    assert set(recs) == set(tensors)
    assert recs["layer.weight"]["shape"] == "8x16" and recs["layer.bias"]["shape"] == "16"
    for name, x in tensors.items():
        want = x.astype(np.float64).astype(np.float16).astype(np.float64)
        assert out[name].dtype == np.float64 and out[name].shape == x.shape
        np.testing.assert_array_equal(out[name], want)
        _close(recs[name], _stats(x, want))


def test_quantize_bfloat16_safetensors(tmp_path):
    """A BF16 checkpoint (safetensors reads BF16 only once ml_dtypes is imported) quantizes as
    its float64 values do."""
    w = np.random.default_rng(6).standard_normal((8, 16)).astype(ml_dtypes.bfloat16)
    save_file({"w": w}, str(tmp_path / "bf.safetensors"))
    _ok(_numsim("quantize", "bf.safetensors", "--format", "fp8_e4m3", cwd=tmp_path))
    out = load_file(str(tmp_path / "bf.fp8_e4m3.safetensors"))["w"]
    np.testing.assert_array_equal(out, w.astype(np.float64).astype(ml_dtypes.float8_e4m3fn)
                                  .astype(np.float64))


def test_quantize_stochastic_rounding_scalar(tmp_path):
    x = np.random.default_rng(4).uniform(-3, 3, size=(1, 400))
    np.save(tmp_path / "s.npy", x)
    _ok(_numsim("quantize", "s.npy", "--format", "fp8_e4m3", "--rounding", "stochastic",
                "--seed", "7", cwd=tmp_path))
    q = np.load(tmp_path / "s.fp8_e4m3.npy")[0]
    grid = np.arange(256, dtype=np.uint8).view(ml_dtypes.float8_e4m3fn).astype(np.float64)
    grid = np.unique(grid[np.isfinite(grid)])
    lo = grid[np.searchsorted(grid, x[0], side="right") - 1]    # neighbours in the format
    hi = grid[np.searchsorted(grid, x[0], side="left")]
    assert ((q == lo) | (q == hi)).all()
    nearest = x[0].astype(ml_dtypes.float8_e4m3fn).astype(np.float64)
    assert (q != nearest).any()                  # not simply round to nearest


def test_quantize_missing_file(tmp_path):
    _input_error(_numsim("quantize", "nothere.npy", "--format", "fp16", cwd=tmp_path),
                 "quantize", "nothere.npy")


def test_quantize_unknown_format(tmp_path):
    np.save(tmp_path / "x.npy", np.ones(4))
    _input_error(_numsim("quantize", "x.npy", "--format", "fp17", cwd=tmp_path),
                 "quantize", "fp17")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]


def test_quantize_keeps_existing_output_unless_overwrite(tmp_path):
    """An existing output is refused before any work (exit 1, file untouched); --overwrite
    replaces it; the input itself is never written over, --overwrite or not."""
    x = np.array([0.3, -1.7, 1000.0])
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "x.fp16.npy", np.zeros(2))
    _input_error(_numsim("quantize", "x.npy", "--format", "fp16", cwd=tmp_path),
                 "quantize", "x.fp16.npy", "--overwrite")
    assert np.load(tmp_path / "x.fp16.npy").tolist() == [0.0, 0.0]
    _ok(_numsim("quantize", "x.npy", "--format", "fp16", "--overwrite", cwd=tmp_path))
    assert np.load(tmp_path / "x.fp16.npy").tolist() == x.astype(np.float16).tolist()
    os.link(tmp_path / "x.npy", tmp_path / "hard.npy")
    for out in ("x.npy", "./x.npy", "hard.npy"):
        _input_error(_numsim("quantize", "x.npy", "--format", "fp16", "--output", out,
                             "--overwrite", cwd=tmp_path), "quantize", "input file")
    for csv in ("x.npy", "hard.npy", "x.fp16.npy"):          # the statistics table neither
        _input_error(_numsim("quantize", "x.npy", "--format", "fp16", "--overwrite", "--csv",
                             csv, cwd=tmp_path), "quantize", "--csv")
    assert np.load(tmp_path / "x.npy").tolist() == x.tolist()
    assert np.load(tmp_path / "x.fp16.npy").tolist() == x.astype(np.float16).tolist()


def test_quantize_output_checked_before_work(tmp_path):
    """A bad --output suffix or folder, or two tensors for one .npy, fail with nothing
    written."""
    save_file({"a": np.ones(3), "b": np.zeros(2)}, str(tmp_path / "m.safetensors"))
    (tmp_path / "d.npy").mkdir()
    cases = [(["--output", "q.txt"], "q.txt"), (["--output", "no/q.npy"], "no such folder"),
             (["--output", "q.npy"], "one tensor"), (["--output", "d.npy"], "is a folder")]
    for extra, needle in cases:
        _input_error(_numsim("quantize", "m.safetensors", "--format", "fp16", *extra,
                             cwd=tmp_path), "quantize", needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npy", "m.safetensors"]


def test_quantize_txt_input(tmp_path):
    (tmp_path / "x.txt").write_text("1 2 3\n")
    _input_error(_numsim("quantize", "x.txt", "--format", "fp16", cwd=tmp_path),
                 "quantize", "x.txt")


def test_quantize_stochastic_with_scaled_format(tmp_path):
    """The elements of a scaled format round stochastically, as the Python API's
    ``quantize(x, rounding="stochastic", seed=...)`` does (groups along each row)."""
    x = np.random.default_rng(5).standard_normal((4, 64))
    np.save(tmp_path / "x.npy", x)
    fmt = formats.get("mxfp4")
    for seed in ("3", "4"):
        _ok(_numsim("quantize", "x.npy", "--format", "mxfp4", "--rounding", "stochastic",
                    "--seed", seed, "--overwrite", cwd=tmp_path))
        q = np.load(tmp_path / "x.mxfp4.npy")
        assert np.array_equal(q, fmt.quantize(x, rounding="stochastic", seed=int(seed)))
    assert not np.array_equal(q, fmt.quantize(x))


def test_quantize_refuses_complex_and_non_npy_content(tmp_path):
    np.save(tmp_path / "c.npy", np.ones(4, complex))
    _input_error(_numsim("quantize", "c.npy", "--format", "fp16", cwd=tmp_path),
                 "quantize", "c.npy", "complex128, not real numbers")
    (tmp_path / "t.npy").write_text("1 2 3\n")
    _input_error(_numsim("quantize", "t.npy", "--format", "fp16", cwd=tmp_path),
                 "quantize", "t.npy", "not a NumPy .npy file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npy", "t.npy"]


def test_csv_into_a_missing_folder_fails_before_any_work(tmp_path):
    np.save(tmp_path / "x.npy", np.ones(4))
    _input_error(_numsim("quantize", "x.npy", "--format", "fp16", "--csv", "no/x.csv",
                         cwd=tmp_path), "quantize", "no/x.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]


def test_quantize_two_tensors_into_npy(tmp_path):
    save_file({"a": np.ones(3, np.float32), "b": np.zeros(3, np.float32)},
              str(tmp_path / "two.safetensors"))
    _input_error(_numsim("quantize", "two.safetensors", "--format", "fp16", "--output",
                         "one.npy", cwd=tmp_path), "quantize", "one.npy")
    assert not (tmp_path / "one.npy").exists()


# --- table ----------------------------------------------------------------------------------

def test_table_standard_distribution_json(tmp_path):
    from reports.tables import standard_data
    r = _ok(_numsim("table", "--formats", "fp16", "fp8_e4m3", "--distributions", "gaussian",
                    "--json", cwd=tmp_path))
    recs = json.loads(r.stdout)
    assert [(x["data"], x["format"]) for x in recs] == [("gaussian", "fp16"),
                                                        ("gaussian", "fp8_e4m3")]
    assert recs[0]["sqnr_db"] > recs[1]["sqnr_db"]
    g = standard_data(64, 0)["gaussian"]          # --rows 64 --seed 0 are the defaults
    _close(recs[0], _stats(g, g.astype(np.float16).astype(float)))
    _close(recs[1], _stats(g, g.astype(ml_dtypes.float8_e4m3fn).astype(float)))


def test_table_input_npy_and_safetensors(tmp_path):
    x = np.random.default_rng(5).standard_normal((16, 128))
    np.save(tmp_path / "acts.npy", x)
    r = _ok(_numsim("table", "--input", "acts.npy", "--formats", "bf16", "int8_tensor",
                    "--csv", "-", cwd=tmp_path))
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [(row["data"], row["format"]) for row in rows] == [("acts", "bf16"),
                                                              ("acts", "int8_tensor")]
    _close({k: float(v) for k, v in rows[0].items() if k in ("mse", "sqnr_db")},
           {k: v for k, v in _stats(x, x.astype(ml_dtypes.bfloat16).astype(float)).items()
            if k in ("mse", "sqnr_db")})
    save_file({"a": x.astype(np.float32), "b": (2 * x).astype(np.float32)},
              str(tmp_path / "t.safetensors"))
    r2 = _ok(_numsim("table", "--input", "t.safetensors", "--formats", "fp16", "--json",
                     cwd=tmp_path))
    assert sorted(rec["data"] for rec in json.loads(r2.stdout)) == ["a", "b"]


def test_table_unknown_distribution(tmp_path):
    _input_error(_numsim("table", "--distributions", "gaussian", "cauchy", cwd=tmp_path),
                 "table", "cauchy")


def test_table_missing_input(tmp_path):
    _input_error(_numsim("table", "--input", "missing.npy", cwd=tmp_path), "table",
                 "missing.npy")


# --- capture --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def captured(work):
    r = _numsim("capture", "--model", "digits", "--output", "trace", cwd=work)
    return r, work / "trace"


def test_capture_digits(captured):
    r, path = captured
    _ok(r)
    assert str(path.name) in r.stderr
    t = load_trace(path)
    assert [(o.name, o.kind) for o in t.ops] == [("fc1", "linear"), ("relu1", "relu"),
                                                 ("fc2", "linear"), ("relu2", "relu"),
                                                 ("fc3", "linear")]
    # the digits MLP: 64 -> 64 -> 32 -> 10 on 360 test images of 8 x 8 pixels
    assert t.op("fc1").tensors["input"].shape == (360, 64)
    assert [t.op(n).tensors["weight"].shape for n in ("fc1", "fc2", "fc3")] == \
        [(64, 64), (32, 64), (10, 32)]
    labels = np.asarray(t.extras["labels"])
    assert labels.shape == (360,) and set(np.unique(labels)) == set(range(10))


def test_capture_onto_existing_folder(captured, work):
    _ok(captured[0])
    manifest = captured[1] / "manifest.json"
    before = manifest.read_bytes(), manifest.stat().st_mtime_ns
    _input_error(_numsim("capture", "--model", "digits", "--output", "trace", cwd=work),
                 "capture", "trace", "--overwrite")
    assert (manifest.read_bytes(), manifest.stat().st_mtime_ns) == before


# --- replay ---------------------------------------------------------------------------------

def test_replay_warnings_are_one_line_named_for_the_command(tmp_path):
    r = _ok(_numsim("replay", "builtin:digits", "--config", "int8:int8:int8->int32", "--mode",
                    "per-op", cwd=tmp_path))
    assert "numsim replay: warning: configuration 'int8|int32': most non-zero elements of " \
        "fc1's weight" in r.stderr and "Warning" not in r.stderr


def test_replay_of_an_empty_trace_says_so(tmp_path):
    save_trace(Trace([]), tmp_path / "empty")
    _input_error(_numsim("replay", "empty", "--config", "fp32:fp32", cwd=tmp_path), "replay",
                 "empty: the trace has no ops")


def _reference_accuracy(trace_dir):
    t = load_trace(trace_dir)
    logits = np.asarray(t.op("fc3").tensors["output"])
    return float(np.mean(np.argmax(logits, axis=1) == np.asarray(t.extras["labels"])))


@pytest.fixture(scope="module")
def replayed(work):
    r = _numsim("replay", "builtin:digits", "--config", FP16_CFG, "--config", INT8_CFG,
                "--json", "--output", "results.parquet", cwd=work)
    return r, work / "results.parquet"


def test_replay_builtin_json_and_parquet(replayed, captured):
    r, out = replayed
    _ok(r)
    recs = json.loads(r.stdout)
    assert [rec["config"] for rec in recs] == [FP16_NAME, INT8_NAME]
    reference = _reference_accuracy(captured[1])
    for rec in recs:
        assert 0.9 <= rec["accuracy"] <= 1
        assert rec["reference_accuracy"] == reference
        assert rec["total_pj"] > 0
        assert rec["macs"] == 360 * 6464 and rec["overflows"] == 0    # counts as integers
        assert all(type(rec[c]) is int for c in ("macs", "overflows", "saturations"))
    table = pd.read_parquet(out)
    assert list(dict.fromkeys(table["config"])) == [FP16_NAME, INT8_NAME]
    task = table[table["role"] == "task"].set_index("config")
    for rec in recs:
        assert task.loc[rec["config"], "accuracy"] == rec["accuracy"]
        out = table[(table["config"] == rec["config"]) & (table["role"] == "output")]
        assert list(out.loc[out["macs"].notna(), "op"]) == ["fc1", "fc2", "fc3"]
        assert rec["total_pj"] == pytest.approx(out["total_pj"].sum(), rel=1e-12)  # relus too
        between = out.loc[out["macs"].isna(), "total_pj"].sum()
        assert rec["between_pj"] == pytest.approx(between, rel=1e-12) and between > 0
    assert "wrote" in r.stderr and "results.parquet" in r.stderr


def test_replay_captured_folder_matches_builtin(replayed, captured, work):
    _ok(captured[0])
    r = _ok(_numsim("replay", "trace", "--config", FP16_CFG, "--config", INT8_CFG, "--json",
                    cwd=work))
    mine = {rec["config"]: rec for rec in json.loads(r.stdout)}
    theirs = {rec["config"]: rec for rec in json.loads(_ok(replayed[0]).stdout)}
    assert set(mine) == set(theirs)
    for name in mine:
        assert mine[name]["accuracy"] == theirs[name]["accuracy"], name
        assert mine[name]["mean_output_sqnr_db"] == pytest.approx(
            theirs[name]["mean_output_sqnr_db"], rel=1e-12), name


@pytest.fixture(scope="module")
def per_op_csv(captured, work):
    r = _numsim("replay", "trace", "--config", "fp32:fp32", "--mode", "per-op", "--output",
                "perop.csv", "--csv", "-", cwd=work)
    return r, work / "perop.csv"


def test_replay_fp32_per_op_is_exact_csv(per_op_csv, captured):
    _ok(captured[0])
    r, out = per_op_csv
    _ok(r)
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert len(rows) == 1 and "accuracy" not in rows[0]       # per-op: no task row
    assert float(rows[0]["mean_output_sqnr_db"]) == math.inf    # the trace is fp32-exact
    table = pd.read_csv(out)
    assert set(table["mode"]) == {"per-op"} and not (table["role"] == "task").any()
    assert (table[table["role"] == "output"]["mse"] == 0).all()


def test_replay_unknown_format_in_config(tmp_path):
    _input_error(_numsim("replay", "builtin:digits", "--config", "fp99:fp16", cwd=tmp_path),
                 "replay", "fp99")


def test_replay_names_a_configuration_that_could_not_run_every_op(tmp_path):
    """e8m0 holds no negative weights: the config runs its first op, then fails; exit 0 with the
    results, and standard error names it."""
    r = _ok(_numsim("replay", "builtin:digits", "--config", "e8m0:fp4_e2m1", "--config",
                    FP16_CFG, "--json", cwd=tmp_path))
    rows = {row["config"]: row for row in json.loads(r.stdout)}
    failed = [name for name, row in rows.items() if row["error"]]
    assert failed == ["w:e8m0,a:fp4_e2m1|fp32"], rows
    assert "1 configuration(s) could not run every op" in r.stderr and failed[0] in r.stderr


def test_replay_storage_rounds_every_output_to_its_format(tmp_path):
    """--storage fp16 on the fp32-exact digits trace, per-op: each MAC output is the captured
    one rounded by numpy's float16 cast, and the configuration says so in its name."""
    from simulator import digits
    r = _ok(_numsim("replay", "builtin:digits", "--config", "fp32:fp32", "--storage", "fp16",
                    "--mode", "per-op", "--output", "t.parquet", "--json", cwd=tmp_path))
    assert [row["config"] for row in json.loads(r.stdout)] == ["fp32|fp32,store:fp16"]
    table = pd.read_parquet(tmp_path / "t.parquet")
    out = table[table.role == "output"].set_index("op")
    assert set(table.storage) == {"fp16"} and len(out) == 3
    for op in (o for o in digits.trace().ops if o.is_mac):      # per-op: the MACs only
        y = np.asarray(op.tensors["output"], np.float64)
        err = y.astype(np.float16).astype(np.float64) - y
        assert out.loc[op.name, "max_abs_error"] == np.max(np.abs(err))
        assert out.loc[op.name, "mse"] == pytest.approx(np.mean(err ** 2), rel=1e-12)


def test_replay_fusion_names_the_configurations_and_saves_traffic(tmp_path):
    rows = {}
    for fusion in ("none", "epilogue"):
        r = _ok(_numsim("replay", "builtin:digits", "--config", "fp32:fp32", "--fusion", fusion,
                        "--json", cwd=tmp_path))
        rows[fusion] = json.loads(r.stdout)[0]
    assert rows["none"]["config"] == "fp32|fp32"
    assert rows["epilogue"]["config"] == "fp32|fp32,fuse:epilogue"
    assert rows["epilogue"]["memory_pj"] < rows["none"]["memory_pj"]


def test_replay_missing_trace_folder(tmp_path):
    _input_error(_numsim("replay", "no_trace_here", "--config", FP16_CFG, cwd=tmp_path),
                 "replay", "no_trace_here")


# --- sweep ----------------------------------------------------------------------------------

SWEEP = """\
trace = "builtin:digits"
mode = "propagated"
output = "sw"

[grid]
formats = ["fp16"]
mac = ["fp16->fp32"]

[[configs]]
name = "int8"
weights = "int8_channel"
activations = "int8_tensor"
mac = "int8->int32"
"""


def _cells(folder: Path) -> dict:
    return {p.name: p.stat().st_mtime_ns for p in (folder / "cells").iterdir()}


def test_sweep_runs_and_resumes(replayed, tmp_path):
    (tmp_path / "s.toml").write_text(SWEEP)
    r = _ok(_numsim("sweep", "s.toml", "--workers", "1", "--json", cwd=tmp_path))
    recs = json.loads(r.stdout)
    assert [rec["config"] for rec in recs] == [FP16_NAME, "int8"]
    out = tmp_path / "sw"
    table = pd.read_parquet(out / "results.parquet")
    assert len(pd.read_csv(out / "results.csv")) == len(table)
    assert list(dict.fromkeys(table["config"])) == [FP16_NAME, "int8"]
    cells = _cells(out)
    assert len(cells) == 2
    # the same configurations through `replay` score the same
    rep = {rec["config"]: rec for rec in json.loads(_ok(replayed[0]).stdout)}
    assert recs[0]["accuracy"] == rep[FP16_NAME]["accuracy"]
    assert recs[1]["accuracy"] == rep[INT8_NAME]["accuracy"]
    # a rerun reuses both cells (nothing recomputed, nothing rewritten), and with nothing to
    # compute it needs no cluster: the scheduler named (where none listens) is not contacted
    again = _ok(_numsim("sweep", "s.toml", "--scheduler", "tcp://127.0.0.1:1", "--json",
                        cwd=tmp_path))
    assert _cells(out) == cells
    assert json.loads(again.stdout) == recs
    assert re.search(r"numsim sweep: 2 of 2 cells already done in \S*sw.cells; running 0\n",
                     again.stderr)
    assert "already done" not in r.stderr


@pytest.mark.parametrize("text,needle", [
    ('trace = "builtin:digits"\noutput = \n', "s.toml"),                   # not TOML
    (SWEEP.replace('["fp16"]', '["fp17"]'), "fp17"),                       # unknown format
])
def test_sweep_bad_file(text, needle, tmp_path):
    (tmp_path / "s.toml").write_text(text)
    _input_error(_numsim("sweep", "s.toml", "--workers", "1", cwd=tmp_path), "sweep", needle)
    assert not (tmp_path / "sw").exists()


# --- report ---------------------------------------------------------------------------------

def _recommendation(html_text: str) -> str:
    import html as _html
    m = re.search(r"<b>Recommendation: (.*?)</b>", html_text)
    assert m, html_text[:500]
    return _html.unescape(m.group(1))


def _by_rule(summary: pd.DataFrame) -> str:
    best = summary["accuracy"].max()
    pool = [n for n in summary.index if summary.loc[n, "accuracy"] >= best - 0.01]
    return min(pool, key=lambda n: (summary.loc[n, "total_pj"],
                                    summary.loc[n, "area_um2_per_mac"]))


def _data_uri_pngs(html_text: str) -> list:
    srcs = re.findall(r'<img [^>]*src="([^"]*)"', html_text)
    assert srcs
    import base64
    for s in srcs:
        assert s.startswith("data:image/png;base64,")
        assert base64.b64decode(s.split(",", 1)[1])[:8] == PNG
    return srcs


def test_report_on_replay_parquet(replayed, work):
    _ok(replayed[0])
    r = _ok(_numsim("report", "results.parquet", "--output", "rep", "--title", "My <report>",
                    "--svg", cwd=work))
    rep = work / "rep"
    text = (rep / "index.html").read_text(encoding="utf-8")
    assert "<title>My &lt;report&gt;</title>" in text
    assert text.count("<table") == text.count("</table>") >= 3     # with the cost breakdown
    _data_uri_pngs(text)
    summary = summarize(pd.read_parquet(replayed[1]))
    assert _recommendation(text) == recommend(summary)[0] == _by_rule(summary)
    for name in ("pareto_energy", "pareto_area", "layer_heatmap"):
        assert (rep / "figures" / f"{name}.png").read_bytes()[:8] == PNG
        assert (rep / "figures" / f"{name}.svg").is_file()
    assert len(pd.read_csv(rep / "results.csv")) == len(pd.read_parquet(replayed[1]))
    assert (rep / "report.md").is_file() and "index.html" in r.stderr
    # the breakdown shares per-output work by the trace's products per output: the digits
    # MLP's 64x64, 64x32 and 32x10 layers, (4096 + 2048 + 320) / (64 + 32 + 10) = 61
    assert "K = 61 (the trace's MACs per MAC output, a mean over its layers)" in \
        (rep / "report.md").read_text()


def test_report_tolerances_change_the_recommendation(tmp_path):
    """Per-op, SQNR ranks: within 1 dB of the best only fp16 qualifies; with an SQNR floor
    below int8's, the cheaper int8 run is recommended, and the rule says so."""
    _ok(_numsim("replay", "builtin:digits", "--config", FP16_CFG, "--config", INT8_CFG,
                "--mode", "per-op", "--output", "r.parquet", cwd=tmp_path))
    summary = summarize(pd.read_parquet(tmp_path / "r.parquet"))
    sqnr = summary["mean_output_sqnr_db"]
    assert sqnr[FP16_NAME] > sqnr[INT8_NAME] + 1
    assert summary.loc[INT8_NAME, "total_pj"] < summary.loc[FP16_NAME, "total_pj"]
    for options, pick in (([], FP16_NAME), (["--min-sqnr", f"{sqnr[INT8_NAME] - 1:.1f}"],
                                            INT8_NAME)):
        _ok(_numsim("report", "r.parquet", "--output", "rep", *options, cwd=tmp_path))
        text = (tmp_path / "rep" / "index.html").read_text(encoding="utf-8")
        assert _recommendation(text) == pick
    assert f"SQNR of {sqnr[INT8_NAME] - 1:.1f} dB or more" in text


def test_report_on_per_op_csv(per_op_csv, work):
    _ok(per_op_csv[0])
    _ok(_numsim("report", "perop.csv", "--output", "rep_csv", cwd=work))
    text = (work / "rep_csv" / "index.html").read_text(encoding="utf-8")
    assert _recommendation(text) == "fp32|fp32"
    assert "dB" in text
    assert not list((work / "rep_csv" / "figures").glob("*.svg"))


def test_report_missing_results(tmp_path):
    _input_error(_numsim("report", "gone.parquet", cwd=tmp_path), "report", "gone.parquet")


def test_report_on_files_that_are_not_tables(tmp_path):
    (tmp_path / "notes.md").write_text("# notes\n")
    _input_error(_numsim("report", "notes.md", cwd=tmp_path), "report", "notes.md",
                 ".parquet or .csv")
    (tmp_path / "ragged.csv").write_text("a,b\n1,2\n1,2,3,4\n")
    _input_error(_numsim("report", "ragged.csv", cwd=tmp_path), "report", "ragged.csv",
                 "cannot read")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.md", "ragged.csv"]
    assert not (tmp_path / "numsim-report").exists()


def test_report_on_a_csv_that_is_not_a_replay_table(tmp_path):
    (tmp_path / "other.csv").write_text("a,b\n1,2\n3,4\n")
    _input_error(_numsim("report", "other.csv", "--output", "r", cwd=tmp_path), "report",
                 "other.csv", "not a replay table")
    assert not (tmp_path / "r").exists()


# --- demo (once per module; the rerun last) -------------------------------------------------

@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("demo")
    r = _numsim("demo", "--output", "out", cwd=cwd)
    return r, cwd / "out"


def test_demo_writes_everything(demo):
    r, out = demo
    _ok(r)
    for rel in ("index.html", "report.md", "results.csv", "sweep/results.parquet",
                "sweep/results.csv", "trace/manifest.json"):
        assert (out / rel).is_file(), rel
    figs = {p.stem for p in (out / "figures").glob("*.png")}
    assert {"pareto_energy", "pareto_area", "layer_heatmap", "sqnr_vs_bits",
            "accumulation_error"} <= figs
    for p in (out / "figures").glob("*.png"):
        assert p.read_bytes()[:8] == PNG, p
    md = (out / "report.md").read_text(encoding="utf-8")
    refs = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(refs) == len(figs)
    for ref in refs:
        assert (out / ref).is_file(), ref
    sweep = pd.read_parquet(out / "sweep" / "results.parquet")
    assert len(pd.read_csv(out / "results.csv")) == len(sweep)
    assert len(pd.read_csv(out / "sweep" / "results.csv")) == len(sweep)
    t = load_trace(out / "trace")
    assert [o.name for o in t.ops] == ["fc1", "relu1", "fc2", "relu2", "fc3"]
    assert len(list((out / "sweep" / "cells").glob("*.parquet"))) == 20


def test_demo_prints_every_standard_configuration(demo):
    r, _ = demo
    _ok(r)
    lines = r.stdout.splitlines()
    names = [c.name for c in standard_configs()]
    assert len(names) == 20
    for name in names:
        assert any(line.startswith(name + " ") for line in lines), name
    fp32 = next(line for line in lines if line.startswith("fp32 "))
    assert " inf " in fp32 + " "                # fp32 replay of the fp32 trace is exact


def test_demo_report_recommendation(demo):
    r, out = demo
    _ok(r)
    text = (out / "index.html").read_text(encoding="utf-8")
    assert text.count("<table") == text.count("</table>")
    _data_uri_pngs(text)
    summary = summarize(pd.read_parquet(out / "sweep" / "results.parquet"))
    assert list(summary.index) == [c.name for c in standard_configs()]
    named = _recommendation(text)
    assert named == recommend(summary)[0] == _by_rule(summary)
    assert f"**Recommendation: {named}**" in (out / "report.md").read_text(encoding="utf-8")


def test_demo_files_have_ordinary_permissions(demo):
    """The sweep's tables are written like every other output file (mode 0666 less the
    umask), so that others who may read the report folder may read the results too."""
    _ok(demo[0])
    out = demo[1]
    ordinary = (out / "index.html").stat().st_mode & 0o777
    for rel in ("sweep/results.parquet", "sweep/results.csv"):
        assert (out / rel).stat().st_mode & 0o777 == ordinary, (rel, oct(ordinary))


@pytest.fixture(scope="module")
def demo_rerun(demo):
    r, out = demo
    _ok(r)
    before = _cells(out / "sweep")
    again = _numsim("demo", "--output", "out", "--json", cwd=out.parent)
    return again, before, _cells(out / "sweep")


def test_demo_rerun_works(demo_rerun, demo):
    again, _, _ = demo_rerun
    _ok(again)
    recs = json.loads(again.stdout)
    assert [rec["config"] for rec in recs] == [c.name for c in standard_configs()]
    summary = summarize(pd.read_parquet(demo[1] / "sweep" / "results.parquet"))
    for rec in recs:
        assert rec["accuracy"] == summary.loc[rec["config"], "accuracy"], rec["config"]
    assert (demo[1] / "index.html").is_file()
    fp32 = recs[0]
    assert fp32["config"] == "fp32" and fp32["mean_output_sqnr_db"] == "inf"   # JSON has no inf


def test_demo_rerun_resumes_the_sweep(demo_rerun):
    """Rerunning the demo into the same folder reuses the 20 sweep cells already written (the
    trace it captures is the same): no new cell files, none rewritten."""
    again, before, after = demo_rerun
    _ok(again)
    assert "numsim demo: 20 of 20 cells already done" in again.stderr
    assert len(before) == 20
    assert after == before, (f"{len(set(after) - set(before))} new cell files; "
                             f"{sum(after.get(k) != v for k, v in before.items())} of the "
                             f"old ones rewritten or gone")
