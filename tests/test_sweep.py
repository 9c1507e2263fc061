"""Sweeps (simulator.sweep): TOML files, local and Dask runs, resume.

The sweeps run on a small plain-array trace saved into a temporary folder, so the user's
cache is not written; one test runs "builtin:digits" with XDG_CACHE_HOME pointed at tmp_path.
"""
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import simulator.sweep as S
from simulator import digits
from simulator.capture import from_arrays
from simulator.configs import Config
from simulator.replay import FlushWarning, replay
from simulator.sweep import SweepError, load_sweep, run_sweep
from simulator.traces import load_trace, save_trace


def _mlp_arrays(scale=1.0):
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((16, 12)) * scale).astype(np.float32)
    w1 = rng.standard_normal((8, 12)).astype(np.float32)
    w2 = rng.standard_normal((4, 8)).astype(np.float32)
    h = (x.astype(np.float64) @ w1.T).astype(np.float32)
    r = np.maximum(h, 0)
    return {
        "fc1": {"kind": "linear", "input": x, "weight": w1, "output": h},
        "relu": {"kind": "relu", "input": h, "output": r, "inputs_from": ["fc1"]},
        "fc2": {"kind": "linear", "input": r, "weight": w2, "inputs_from": ["relu"]},
    }, {"labels": rng.integers(0, 4, 16)}


@pytest.fixture(scope="module")
def trace_dir(tmp_path_factory):
    ops, extras = _mlp_arrays()
    return save_trace(from_arrays(ops, extras, model="mlp"),
                      tmp_path_factory.mktemp("sweep-trace") / "trace")


SWEEP = """
trace = "{trace}"
output = "{output}"
mode = "{mode}"

[grid]
formats = ["fp16", "fp8_e4m3"]
mac = ["fp16->fp32"]

[[configs]]
name = "int8"
weights = "int8_channel"
activations = "int8_tensor"
mac = "int8->int32"
"""


def _sweep_file(folder: Path, trace: Path, output="out", mode="propagated") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "sweep.toml"
    path.write_text(SWEEP.format(trace=trace, output=output, mode=mode))
    return path


def _cells(out: Path) -> dict:
    return {p.name: p.stat().st_mtime_ns for p in (out / "cells").iterdir()}


# --- load_sweep ------------------------------------------------------------------------------

def test_load_sweep_counts_and_relative_paths(tmp_path, monkeypatch):
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "s.toml").write_text("""
trace = "../traces/t"
output = "results"
mode = "per-op"
tech = 7
level = "sram"

[grid]
formats = ["fp16", "bf16", "fp8_e4m3"]
mac = ["fp16->fp32", {accumulator = "float", format = "fp16"}]
rounding = ["nearest_even", "stochastic"]
seed = [1]

[[configs]]
name = "int8"
weights = "int8_channel"
activations = "int8_tensor"
mac = "int8->int32"

[[configs]]
weights = "int4_g128"
activations = "int8_tensor"
mac = "int8->int32"
""")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)                  # paths follow the file, not the cwd
    sw = load_sweep(sub / "s.toml")
    assert len(sw.configs) == 3 * 2 * 2 + 2
    combos = {(c.weights, c.activations, str(c.mac), c.rounding) for c in sw.configs[:12]}
    assert len(combos) == 12
    assert {c.weights for c in sw.configs[:12]} == {"fp16", "bf16", "fp8_e4m3"}
    assert all(c.weights == c.activations for c in sw.configs[:12])
    assert {c.rounding for c in sw.configs[:12]} == {"nearest_even", "stochastic"}
    assert sw.configs[12].name == "int8" and sw.configs[12].mac == "int8->int32"
    assert sw.configs[13].weights == "int4_g128"
    assert Path(sw.trace).resolve() == (tmp_path / "traces" / "t").resolve()
    assert Path(sw.output).resolve() == (sub / "results").resolve()
    assert sw.mode == "per-op" and sw.tech == 7 and sw.level == "sram"


def test_cells_that_compute_the_same_are_refused(tmp_path):
    """Seeds do not change a nearest-even replay, and a preset equals the MAC it names: such
    cells are the same computation, refused as repeats rather than run twice."""
    for grid in ('formats = ["fp16"]\nseed = [0, 1]',
                 'formats = ["fp16"]\nmac = ["fp16->fp32", {accumulator = "float"}]'):
        (tmp_path / "s.toml").write_text(f'trace = "t"\noutput = "o"\n[grid]\n{grid}\n')
        with pytest.raises(SweepError, match="repeat"):
            load_sweep(tmp_path / "s.toml")
    # a grid's formats replace the presets' operand formats: two presets with an fp32
    # accumulator make each format's configuration twice; the message says why
    (tmp_path / "s.toml").write_text('trace = "t"\noutput = "o"\n[grid]\nformats = ["bf16", '
                                     '"fp8_e4m3"]\nmac = ["bf16->fp32", "mxfp4->fp32"]\n')
    with pytest.raises(SweepError, match=r"repeat .*: bf16\|fp32, bf16\|fp32, fp8_e4m3\|fp32, "
                                         r"fp8_e4m3\|fp32; a grid's formats replace"):
        load_sweep(tmp_path / "s.toml")
    (tmp_path / "s.toml").write_text('trace = "t"\noutput = "o"\n[grid]\nformats = ["fp16"]\n'
                                     'seed = [0, 1]\n')
    with pytest.raises(SweepError) as seeds:              # no presets in it: no such reason
        load_sweep(tmp_path / "s.toml")
    assert str(seeds.value).endswith("options): fp16|fp32, fp16|fp32")


@pytest.mark.parametrize("trace", ["nope", "afile"])
def test_a_trace_that_is_not_a_folder_is_named(tmp_path, trace):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "s.toml").write_text(f'trace = "{trace}"\noutput = "o"\n'
                                     f'[grid]\nformats = ["fp16"]\n')
    with pytest.raises(SweepError, match=rf"s.toml: trace .*{trace}' is not a folder"):
        run_sweep(tmp_path / "s.toml", workers=1, progress=False)


def test_grid_cells_with_meeting_names_are_told_apart(tmp_path):
    """Spec tables that differ only in order share a default name; each gets its key appended.
    Gradients appear in the default name."""
    (tmp_path / "s.toml").write_text('trace = "t"\noutput = "o"\n[grid]\nformats = ["fp16"]\n'
                                     'mac = [{accumulator = "float", format = "fp16"}, '
                                     '{accumulator = "float", format = "fp16", '
                                     'order = "pairwise"}]\ngradients = ["bf16"]\n')
    sw = load_sweep(tmp_path / "s.toml")
    assert [c.name for c in sw.configs] == [f"fp16|fp16,grad:bf16#{c.key()[:6]}"
                                            for c in sw.configs]
    assert sw.configs[0].key() != sw.configs[1].key()


def test_a_storage_grid_key_multiplies_the_cells_and_keeps_old_keys(tmp_path):
    """grid.storage gives one cell per storage format ("none": none, TOML having no null); a
    cell without one keeps the key it had before storage existed (the blob of the six fields),
    so old sweep folders resume."""
    import hashlib
    import json
    (tmp_path / "s.toml").write_text('trace = "t"\noutput = "o"\n[grid]\nformats = ["fp16"]\n'
                                     'storage = ["bf16", "fp8_e4m3", "none"]\n'
                                     'gradients = ["none"]\n')
    sw = load_sweep(tmp_path / "s.toml")
    assert [(c.name, c.storage) for c in sw.configs] == [
        ("fp16|fp32,store:bf16", "bf16"), ("fp16|fp32,store:fp8_e4m3", "fp8_e4m3"),
        ("fp16|fp32", None)]
    plain = Config("fp16", "fp16")
    blob = json.dumps(["fp16", "fp16", repr(plain.build_mac()), None, "nearest_even", None])
    assert plain.key() == hashlib.sha256(blob.encode()).hexdigest()[:16]
    assert [c.key() for c in sw.configs][2] == plain.key()
    assert len({c.key() for c in sw.configs}) == 3


def test_a_fusion_grid_key_multiplies_the_cells(tmp_path):
    (tmp_path / "s.toml").write_text('trace = "t"\noutput = "o"\n[grid]\nformats = ["fp16"]\n'
                                     'fusion = ["none", "epilogue"]\n')
    sw = load_sweep(tmp_path / "s.toml")
    assert [(c.name, c.fusion) for c in sw.configs] == [
        ("fp16|fp32", "none"), ("fp16|fp32,fuse:epilogue", "epilogue")]
    assert sw.configs[0].key() == Config("fp16", "fp16").key() != sw.configs[1].key()
    (tmp_path / "s.toml").write_text('trace = "t"\noutput = "o"\n[grid]\nformats = ["fp16"]\n'
                                     'fusion = ["all"]\n')
    with pytest.raises(SweepError, match="fusion must be one of"):
        load_sweep(tmp_path / "s.toml")


def test_load_sweep_weights_by_activations_and_defaults(tmp_path):
    (tmp_path / "s.toml").write_text("""
trace = "builtin:digits"
output = "o"
[grid]
weights = ["fp16", "bf16"]
activations = ["fp16", "fp8_e4m3"]
""")
    sw = load_sweep(tmp_path / "s.toml")
    assert sw.trace == "builtin:digits"
    assert sw.mode == "propagated"
    assert {(c.weights, c.activations) for c in sw.configs} == {
        ("fp16", "fp16"), ("fp16", "fp8_e4m3"), ("bf16", "fp16"), ("bf16", "fp8_e4m3")}


BAD_SWEEPS = {
    "bad-toml": ('trace = "t"\noutput = \n', ["TOML"]),
    "unknown-top-key": ('trace = "t"\noutput = "o"\ntrasce = "x"\n[grid]\nformats = ["fp16"]\n',
                        ["trasce"]),
    "unknown-grid-key": ('trace = "t"\noutput = "o"\n[grid]\nformat = ["fp16"]\n', ["format"]),
    "empty-grid-list": ('trace = "t"\noutput = "o"\n[grid]\nformats = []\n', ["grid.formats"]),
    "grid-not-list": ('trace = "t"\noutput = "o"\n[grid]\nformats = "fp16"\n', ["grid.formats"]),
    "unknown-format-grid": ('trace = "t"\noutput = "o"\n[grid]\nformats = ["fp16", "fp99"]\n',
                            ["fp99", "[grid]"]),
    "unknown-format-configs": ('trace = "t"\noutput = "o"\n[[configs]]\nweights = "fp99"\n',
                               ["fp99", "configs[0]"]),
    "unknown-config-field": ('trace = "t"\noutput = "o"\n[[configs]]\nwieghts = "fp16"\n',
                             ["wieghts", "configs[0]"]),
    "mac-mismatch": ('trace = "t"\noutput = "o"\n[grid]\nformats = ["fp16"]\n'
                     'mac = ["int8->int32"]\n', ["int8->int32", "[grid]"]),
    "duplicate-configs": ('trace = "t"\noutput = "o"\n[[configs]]\nname = "a"\n'
                          'weights = "fp16"\nactivations = "fp16"\n[[configs]]\nname = "b"\n'
                          'weights = "fp16"\nactivations = "fp16"\n', ["repeat"]),
    "duplicate-grid-and-configs": ('trace = "t"\noutput = "o"\n[grid]\nformats = ["fp16"]\n'
                                   '[[configs]]\nweights = "fp16"\nactivations = "fp16"\n',
                                   ["repeat"]),
    "names-shared": ('trace = "t"\noutput = "o"\n[[configs]]\nname = "a"\nweights = "fp16"\n'
                     'activations = "fp16"\n[[configs]]\nname = "a"\nweights = "bf16"\n'
                     'activations = "bf16"\n', ["share the names ['a']"]),
    "bad-mode": ('trace = "t"\noutput = "o"\nmode = "sideways"\n[grid]\nformats = ["fp16"]\n',
                 ["mode", "sideways"]),
    "missing-trace": ('output = "o"\n[grid]\nformats = ["fp16"]\n', ["'trace'"]),
    "missing-output": ('trace = "t"\n[grid]\nformats = ["fp16"]\n', ["'output'"]),
    "no-configs": ('trace = "t"\noutput = "o"\n', ["no configurations"]),
}


@pytest.mark.parametrize("name", sorted(BAD_SWEEPS))
def test_load_sweep_errors_name_file_and_key(tmp_path, name):
    text, words = BAD_SWEEPS[name]
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    with pytest.raises(SweepError) as info:
        load_sweep(path)
    msg = str(info.value)
    assert str(path) in msg
    for word in words:
        assert word in msg, (word, msg)


def test_load_sweep_missing_file(tmp_path):
    with pytest.raises(SweepError, match="nope.toml"):
        load_sweep(tmp_path / "nope.toml")


# --- running ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def local_run(trace_dir, tmp_path_factory):
    path = _sweep_file(tmp_path_factory.mktemp("sweep-local"), trace_dir)
    table = run_sweep(str(path), workers=1, progress=False)
    return path, load_sweep(path), table


def test_run_sweep_writes_results_and_cells(local_run):
    path, sw, table = local_run
    out = path.parent / "out"
    assert sorted(os.listdir(out)) == ["cells", "results.csv", "results.parquet"]
    keys = table["cell"].unique().tolist()               # one cell per config, in order
    assert len(keys) == len(sw.configs)
    assert sorted(os.listdir(out / "cells")) == sorted(f"{k}.parquet" for k in keys)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "results.parquet"), table)
    csv = pd.read_csv(out / "results.csv")
    assert len(csv) == len(table)
    assert list(csv.columns) == list(table.columns)
    for col in ("cell", "config", "op", "role", "mode", "weights", "activations", "mac"):
        assert csv[col].astype(str).tolist() == table[col].astype(str).tolist(), col
    for col in ("mse", "sqnr_db", "max_abs_error", "macs", "total_pj", "accuracy"):
        np.testing.assert_allclose(csv[col].to_numpy(float), table[col].to_numpy(float),
                                   rtol=1e-12, equal_nan=True, err_msg=col)
    # one cell file per config, holding exactly that config's rows
    for c, key in zip(sw.configs, keys):
        cell = pd.read_parquet(out / "cells" / f"{key}.parquet")
        part = table[table["cell"] == key].reset_index(drop=True)
        pd.testing.assert_frame_equal(cell, part, check_dtype=False)
        assert set(cell["config"]) == {c.name}


def test_run_sweep_table_matches_direct_replay(local_run, trace_dir):
    path, sw, table = local_run
    trace = load_trace(trace_dir)
    keys = table["cell"].unique().tolist()
    assert [table[table["cell"] == k]["config"].iloc[0] for k in keys] == \
        [c.name for c in sw.configs]
    for c, key in zip(sw.configs, keys):
        direct = replay(trace, c, "propagated")
        part = table[table["cell"] == key].drop(columns="cell")
        part = part.dropna(axis=1, how="all").reset_index(drop=True)
        direct = direct.dropna(axis=1, how="all")
        assert list(part["role"]) == list(direct["role"])
        for col in ("mse", "max_abs_error", "macs", "total_pj", "accuracy"):
            if col in direct:
                np.testing.assert_array_equal(part[col].to_numpy(float),
                                              direct[col].to_numpy(float), err_msg=col)
    # the sweep really ran propagated: one task row per cell
    assert (table["role"] == "task").sum() == len(sw.configs)


def test_resume_recomputes_only_missing_cell(local_run, monkeypatch):
    path, sw, table = local_run
    out = path.parent / "out"
    before = _cells(out)
    victim = f"{table['cell'].unique()[1]}.parquet"
    (out / "cells" / victim).unlink()
    assert [c.name for c in S.pending(path)] == [sw.configs[1].name]   # what the rerun will run
    calls = []
    real = S.run_cell

    def counting(trace_path, stamp, cfg, *args, **kwargs):
        calls.append(cfg.key())
        return real(trace_path, stamp, cfg, *args, **kwargs)

    monkeypatch.setattr(S, "run_cell", counting)
    again = run_sweep(path, workers=1, progress=False)
    assert calls == [sw.configs[1].key()]
    after = _cells(out)
    assert set(after) == set(before)
    for name, mtime in before.items():
        if name != victim:
            assert after[name] == mtime, name
    pd.testing.assert_frame_equal(again, table)
    # nothing missing: nothing recomputed
    calls.clear()
    pd.testing.assert_frame_equal(run_sweep(path, workers=1, progress=False), table)
    assert calls == []
    assert not [p for p in (out / "cells").iterdir() if p.name.startswith(".")]


def test_changed_mode_does_not_reuse_stale_cells(trace_dir, tmp_path):
    run_sweep(_sweep_file(tmp_path, trace_dir, mode="propagated"), workers=1, progress=False)
    table = run_sweep(_sweep_file(tmp_path, trace_dir, mode="per-op"), workers=1,
                      progress=False)
    assert set(table["mode"]) == {"per-op"}
    assert "task" not in set(table["role"])


def test_overwritten_trace_is_reread(tmp_path):
    ops, extras = _mlp_arrays()
    tdir = save_trace(from_arrays(ops, extras), tmp_path / "trace")
    first = run_sweep(_sweep_file(tmp_path / "a", tdir), workers=1, progress=False)
    ops, extras = _mlp_arrays(scale=4.0)
    save_trace(from_arrays(ops, extras), tdir, overwrite=True)
    second = run_sweep(_sweep_file(tmp_path / "b", tdir), workers=1, progress=False)
    first_in = first[(first["op"] == "fc1") & (first["role"] == "input")]["max_abs_error"]
    second_in = second[(second["op"] == "fc1") & (second["role"] == "input")]["max_abs_error"]
    assert not np.array_equal(first_in.to_numpy(), second_in.to_numpy())


def test_process_pool_and_dask_cluster_agree(trace_dir, tmp_path, local_run):
    from dask.distributed import LocalCluster

    pool = run_sweep(_sweep_file(tmp_path / "pool", trace_dir), workers=2, progress=False)
    with LocalCluster(processes=True, n_workers=2, threads_per_worker=1,
                      dashboard_address=None) as cluster:
        dask = run_sweep(_sweep_file(tmp_path / "dask", trace_dir),
                         scheduler=cluster.scheduler_address, progress=False)
    pd.testing.assert_frame_equal(pool, dask)
    pd.testing.assert_frame_equal(pool, local_run[2])
    for sub in ("pool", "dask"):
        assert len(os.listdir(tmp_path / sub / "out" / "cells")) == len(local_run[1].configs)


def test_builtin_digits_trace_goes_to_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert digits.cache_dir() == tmp_path / "cache" / "numsim"
    (tmp_path / "s.toml").write_text("""
trace = "builtin:digits"
output = "out"
mode = "per-op"
[[configs]]
weights = "fp32"
activations = "fp32"
""")
    table = run_sweep(tmp_path / "s.toml", workers=1, progress=False)
    expected = tmp_path / "cache" / "numsim" / "traces" / "digits-mlp-v1"
    assert S.builtin_trace_path() == expected
    assert (expected / "manifest.json").is_file()
    trace = load_trace(expected)
    assert [o.name for o in trace.ops] == ["fc1", "relu1", "fc2", "relu2", "fc3"]
    assert (tmp_path / "cache" / "numsim" / "digits-mlp-v1.npz").is_file()
    out = table[table["role"] == "output"]
    assert sorted(out["op"]) == ["fc1", "fc2", "fc3"]
    assert (out["mse"] == 0).all()                        # fp32 reproduces the capture


def test_a_sweep_warns_of_flushed_operands_from_its_table_run_or_read_back(tmp_path):
    """Plain int8 flushes the digits MLP's weights (most under 0.5 in magnitude: see
    test_replay) wherever the cell ran: in workers (two here), whose own warnings go nowhere the
    user sees, and on a rerun that reads the cells back; once per configuration."""
    (tmp_path / "s.toml").write_text('trace = "builtin:digits"\noutput = "o"\nmode = "per-op"\n'
                                     '[grid]\nformats = ["int8", "int8_tensor"]\n'
                                     'mac = ["int8->int32"]\n')
    for _ in range(2):
        with pytest.warns(FlushWarning) as caught:
            run_sweep(tmp_path / "s.toml", workers=2, progress=False)
        assert [str(w.message).split(":")[0] for w in caught] == ["configuration 'int8|int32'"]
