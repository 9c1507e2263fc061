"""Sweeps: many configurations over one trace, in parallel, resumable.

A sweep file (TOML)::

    trace = "builtin:digits"        # required: this, or a trace folder (relative to this file)
    mode = "propagated"             # or "per-op"
    output = "sweep-results"        # required: results folder (relative to this file)
    tech = 7                        # optional: node in nm for the cost model (45 default)
    level = "dram"                  # optional: memory level of the tensors

    [grid]                          # every combination of the lists given
    formats = ["fp16", "fp8_e4m3"]  # weights = activations = each of these ...
    weights = ["int8_channel"]      # ... and/or weights x activations
    activations = ["int8_tensor"]
    mac = ["fp16->fp32"]            # presets or spec tables (see simulator.configs)
    rounding = ["nearest_even"]
    seed = [0]
    storage = ["none", "bf16"]      # the values between the MACs ("none", or leave the key
                                    # out: as computed; see simulator.replay)
    fusion = ["none", "epilogue"]   # epilogue: a MAC applies the elementwise ops and batch
                                    # norms that alone read its output (simulator.configs)

    [[configs]]                     # extra cells, one table each (Config's fields)
    name = "int8"
    weights = "int8_channel"
    activations = "int8_tensor"
    mac = "int8->int32"

Results tell configurations apart by name: grid cells whose default names meet but that compute
different things (MAC spec tables that differ only in order, chunks, ...) get ``#<6 hex digits of
their key>`` appended, and explicit cells must carry distinct names.

Each cell (configuration) is replayed on its own and written to
``<output>/cells/<key>.parquet`` (temporary file + rename), the key hashing the configuration,
the trace's content stamp, the mode, node and memory level, and the version of replay's results;
a rerun skips the cells whose file exists, so an interrupted sweep resumes where it stopped and
nothing already written is lost, while a changed trace, option or replay computes its cells
afresh.
The sweep's table (its cells, in order) is then written atomically to ``<output>/results.parquet``
and ``results.csv``.  Cells run in local worker processes (``workers``; 1 runs them here), or on
a Dask distributed cluster given its scheduler address (the trace must then be readable at the
same path by every worker; each Dask task runs its kernels on one thread).  The default is one
worker per core, each running its kernels on cores / workers threads; numsim's kernels already
use every core, so on a small machine a short sweep runs faster with ``workers=1``
(benchmarks/RESULTS.md).
"""
from __future__ import annotations

import hashlib
import itertools
import os
import sys
import tempfile
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Union

import pandas as pd

from mac_models.memory import pj_per_bit
from mac_models.technology import technology

from .configs import Config, repeats
from .replay import MODES, RESULTS, FlushWarning, replay, warn_flushed
from .traces import load_trace, save_trace, umask

if sys.version_info >= (3, 11):
    import tomllib
else:                                            # pragma: no cover - Python 3.10
    import tomli as tomllib

BUILTIN = "builtin:digits"
GRID_KEYS = ("formats", "weights", "activations", "mac", "rounding", "seed", "gradients",
             "storage", "fusion")
TOP_KEYS = ("trace", "mode", "output", "tech", "level", "grid", "configs")


class SweepError(ValueError):
    """A sweep file or run that cannot go ahead; the message names the file and key."""


@dataclass
class Sweep:
    """A trace, a mode, the cells and where results go."""

    trace: str
    configs: list[Config]
    output: Path
    mode: str = "propagated"
    tech: Union[float, None] = None
    level: str = "dram"
    source: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise SweepError(f"{self.source or 'sweep'}: mode must be one of "
                             f"{', '.join(MODES)}, got {self.mode!r}")
        if not self.configs:
            raise SweepError(f"{self.source or 'sweep'}: no configurations ([grid] or "
                             f"[[configs]])")
        try:
            technology(self.tech)
            pj_per_bit(self.level)
        except (TypeError, ValueError) as exc:
            raise SweepError(f"{self.source or 'sweep'}: 'tech' or 'level': {exc}") from exc
        keys = [c.key() for c in self.configs]
        dup = set(repeats(keys))
        if dup:
            same = [c for c, k in zip(self.configs, keys) if k in dup]
            shown = ", ".join(c.name for c in same[:6]) + (
                f" and {len(same) - 6} more" if len(same) > 6 else "")
            why = ""
            if len({(k, c.as_dict()["mac"]) for c, k in zip(self.configs, keys)
                    if k in dup}) > len(dup):      # one computation under two MAC specs
                why = ("; a grid's formats replace a MAC preset's operand formats, so presets "
                       "with one accumulator (bf16->fp32 and mxfp4->fp32: an fp32 register) "
                       "give the same configurations: list one, or pair formats with MACs in "
                       "[[configs]] tables")
            raise SweepError(f"{self.source or 'sweep'}: configurations repeat (the same formats, "
                             f"MAC as built and options): {shown}{why}")
        repeated = repeats([c.name for c in self.configs])
        if repeated:
            raise SweepError(f"{self.source or 'sweep'}: different configurations share the "
                             f"names {repeated}; give each a distinct name")
        self.output = Path(self.output)


def _config(raw: dict, where: str) -> Config:
    # "none" stands for None, which TOML cannot write
    raw = {k: None if k in ("storage", "gradients") and v == "none" else v for k, v in raw.items()}
    try:
        return Config(**raw)
    except TypeError as exc:
        raise SweepError(f"{where}: {exc}") from exc
    except ValueError as exc:
        raise SweepError(f"{where}: {exc}") from exc


def _grid(grid: Any, where: str) -> list[Config]:
    if not isinstance(grid, dict):
        raise SweepError(f"{where}: [grid] must be a table")
    unknown = set(grid) - set(GRID_KEYS)
    if unknown:
        raise SweepError(f"{where}: unknown [grid] keys {sorted(unknown)}; known: "
                         f"{', '.join(GRID_KEYS)}")
    for k, v in grid.items():
        if not isinstance(v, list) or not v:
            raise SweepError(f"{where}: grid.{k} must be a non-empty list")
    pairs = [(f, f) for f in grid.get("formats", [])]
    if "weights" in grid or "activations" in grid:
        pairs += list(itertools.product(grid.get("weights", ["fp32"]),
                                        grid.get("activations", ["fp32"])))
    if not pairs:
        raise SweepError(f"{where}: [grid] needs formats, or weights and activations")
    out = []
    for (w, a), mac, rnd, seed, grad, store, fuse in itertools.product(
            pairs, grid.get("mac", [None]), grid.get("rounding", ["nearest_even"]),
            grid.get("seed", [0]), grid.get("gradients", [None]), grid.get("storage", [None]),
            grid.get("fusion", ["none"])):
        out.append(_config({"weights": w, "activations": a, "mac": mac, "rounding": rnd,
                            "seed": seed, "gradients": grad, "storage": store, "fusion": fuse},
                           f"{where}: [grid] cell weights={w}, activations={a}, mac={mac}"))
    # cells whose default names meet (MAC spec tables differing in order, chunks, ...) but
    # that compute different things get their key appended; equal ones are refused later
    keys = [c.key() for c in out]
    by_name = {}
    for c, k in zip(out, keys):
        by_name.setdefault(c.name, set()).add(k)
    return [replace(c, name=f"{c.name}#{k[:6]}") if len(by_name[c.name]) > 1 else c
            for c, k in zip(out, keys)]


def load_sweep(path: Union[str, Path]) -> Sweep:
    """Read and validate a sweep file (see the module doc)."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise SweepError(f"{path}: cannot read: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SweepError(f"{path}: not valid TOML: {exc}") from exc
    unknown = set(raw) - set(TOP_KEYS)
    if unknown:
        raise SweepError(f"{path}: unknown keys {sorted(unknown)}; known: {', '.join(TOP_KEYS)}")
    for key in ("trace", "output"):
        if not isinstance(raw.get(key), str):
            raise SweepError(f"{path}: '{key}' is required, as a string")
    base = path.parent
    trace = raw["trace"] if raw["trace"] == BUILTIN else str(base / raw["trace"])
    configs = _grid(raw["grid"], str(path)) if "grid" in raw else []
    extra = raw.get("configs", [])
    if not isinstance(extra, list):
        raise SweepError(f"{path}: 'configs' must be an array of tables ([[configs]])")
    configs += [_config(c, f"{path}: configs[{i}]") for i, c in enumerate(extra)]
    return Sweep(trace, configs, base / raw["output"], raw.get("mode", "propagated"),
                 raw.get("tech"), raw.get("level", "dram"), str(path))


def builtin_trace_path() -> Path:
    """The built-in digits trace, saved once into numsim's cache folder."""
    from . import digits

    path = digits.cache_dir() / f"traces/{digits.MODEL}-v{digits.VERSION}"
    if not (path / "manifest.json").is_file():
        save_trace(digits.trace(), path, overwrite=True)
    return path


def _trace_path(trace: str) -> str:
    return str(builtin_trace_path()) if trace == BUILTIN else trace


def _trace_stamp(path: str) -> str:
    """A hash of the trace folder's content (every file's name and bytes): a trace rewritten
    with the same tensors keeps its stamp, any change gives a new one.  Hashed once per process
    while no file's inode, size or modification time changes (save_trace writes new files)."""
    stats = ((f.name, f.stat()) for f in sorted(Path(path).iterdir()) if f.is_file())
    return _content_hash(str(path), tuple((name, st.st_ino, st.st_size, st.st_mtime_ns)
                                          for name, st in stats))


@lru_cache(maxsize=8)
def _content_hash(path: str, files: tuple) -> str:
    """The stamp of the trace folder ``path`` holding ``files`` (name, inode, size, mtime)."""
    h = hashlib.sha256()
    for name, *_ in files:
        h.update(name.encode() + b"\0")
        with open(Path(path) / name, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


@lru_cache(maxsize=4)
def _cached_trace(path: str, stamp: str):
    """The trace at ``path`` whose content hashes to ``stamp`` (read once per process; a
    changed trace has another stamp and is read again)."""
    return load_trace(path)


def cell_key(cfg: Config, stamp: str, mode: str, tech: Union[float, None], level: str) -> str:
    """A cell's file name: the config's key with the trace's stamp, mode, node and level and
    replay's :data:`~simulator.replay.RESULTS` (a rerun with any of them changed computes the
    cell afresh)."""
    blob = f"{cfg.key()}|{stamp}|{mode}|{tech}|{level}|results{RESULTS}"
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _write_atomic(df: pd.DataFrame, path: Path, kind: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        if kind == "parquet":
            df.to_parquet(tmp, index=False)
        else:
            df.to_csv(tmp, index=False)
        os.chmod(tmp, 0o666 & ~umask())            # mkstemp makes 0600; results are shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run_cell(trace_path: str, stamp: str, cfg: Config, key: str, mode: str,
             tech: Union[float, None], level: str, cells_dir: str,
             threads: Union[int, None] = None) -> str:
    """Replay one configuration and write its cell file ``<key>.parquet``; returns the key.
    (Runs here, in a worker process or on a Dask worker.)"""
    if threads:
        import numba
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    with warnings.catch_warnings():              # run_sweep warns for the whole table
        warnings.simplefilter("ignore", FlushWarning)
        df = replay(_cached_trace(trace_path, stamp), [cfg], mode, tech=tech, level=level)
    df.insert(0, "cell", key)
    _write_atomic(df, Path(cells_dir) / f"{key}.parquet", "parquet")
    return key


def _plan(sweep: Sweep) -> tuple[str, str, dict, list]:
    """(the trace's folder, its stamp, {config key: cell file name}, the configurations whose
    cells are not on disk yet); the trace is read here, so that a bad one fails before any
    work."""
    trace_path = _trace_path(sweep.trace)
    if not Path(trace_path).is_dir():
        raise SweepError(f"{sweep.source or 'sweep'}: trace {trace_path!r} is not a folder (give "
                         f"a trace folder, relative to the sweep file, or {BUILTIN})")
    stamp = _trace_stamp(trace_path)
    _cached_trace(trace_path, stamp)
    keys = {c.key(): cell_key(c, stamp, sweep.mode, sweep.tech, sweep.level)
            for c in sweep.configs}
    todo = [c for c in sweep.configs
            if not (sweep.output / "cells" / f"{keys[c.key()]}.parquet").is_file()]
    return trace_path, stamp, keys, todo


def pending(sweep: Union[Sweep, str, Path]) -> list[Config]:
    """The configurations of ``sweep`` whose cells are not on disk yet: those
    :func:`run_sweep` will run (the others it reads back)."""
    return _plan(sweep if isinstance(sweep, Sweep) else load_sweep(sweep))[3]


def run_sweep(sweep: Union[Sweep, str, Path], *, workers: Union[int, None] = None,
              scheduler: Union[str, Any, None] = None, progress: bool = True) -> pd.DataFrame:
    """Run every cell not yet on disk, then write and return the sweep's table.
    ``scheduler``: a Dask scheduler address (or a ``dask.distributed.Client``) to run on; not
    contacted when every cell is already done.  ``progress``: a bar on standard error, where
    that is a terminal."""
    if not isinstance(sweep, Sweep):
        sweep = load_sweep(sweep)
    trace_path, stamp, keys, todo = _plan(sweep)
    cells = sweep.output / "cells"
    cells.mkdir(parents=True, exist_ok=True)
    from tqdm.auto import tqdm

    bar = tqdm(total=len(sweep.configs), initial=len(sweep.configs) - len(todo), desc="sweep",
               unit="cell", disable=None if progress else True)   # None: off where not a terminal
    args = (sweep.mode, sweep.tech, sweep.level, str(cells))
    if scheduler is not None and todo:             # nothing to do: no cluster needed
        _run_dask(scheduler, trace_path, stamp, [(c, keys[c.key()]) for c in todo], args, bar)
    else:
        cpus = os.cpu_count() or 1
        n = workers or cpus
        if n == 1 or len(todo) <= 1:
            for cfg in todo:
                run_cell(trace_path, stamp, cfg, keys[cfg.key()], *args)
                bar.update(1)
        else:
            threads = max(1, cpus // n)
            with ProcessPoolExecutor(min(n, len(todo)), mp_context=_worker_context()) as pool:
                futures = {pool.submit(run_cell, trace_path, stamp, c, keys[c.key()], *args,
                                       threads): c for c in todo}
                try:
                    for fut in as_completed(futures):
                        _finish(fut, futures[fut])
                        bar.update(1)
                except KeyboardInterrupt:       # queued cells must not start (the pool's exit
                    pool.shutdown(cancel_futures=True)     # would run them all); waits only for
                    raise                                  # the running ones
    bar.close()
    table = pd.concat([_cell_table(cells / f"{keys[c.key()]}.parquet", c)
                       for c in sweep.configs], ignore_index=True)
    _write_atomic(table, sweep.output / "results.parquet", "parquet")
    _write_atomic(table, sweep.output / "results.csv", "csv")
    warn_flushed(table)                          # the cells' replays, wherever they ran
    return table


def _cell_table(path: Path, cfg: Config) -> pd.DataFrame:
    """A cell's rows labelled with the configuration as this sweep names it (a cell computed
    under another name or seed, for the same computation, is reused)."""
    df = pd.read_parquet(path)
    for column, value in cfg.as_dict().items():
        df[column] = value
    return df


def _worker_context():
    """Worker processes forked from a server that imported numsim once (a plain fork could
    inherit Numba's worker threads mid-flight; spawn would import numsim in every worker)."""
    import multiprocessing as mp

    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["simulator.replay"])
    return ctx


def _finish(fut, cfg: Config) -> None:
    exc = fut.exception()
    if isinstance(exc, KeyboardInterrupt):      # Ctrl-C reached the worker before this process
        raise KeyboardInterrupt
    if exc is not None:
        raise SweepError(f"cell {cfg.name!r} failed: {type(exc).__name__}: {exc} (the cells "
                         f"already written stay; rerun to resume)") from exc


def _run_dask(scheduler, trace_path: str, stamp: str, todo: list, args: tuple, bar) -> None:
    from dask.distributed import Client
    from dask.distributed import as_completed as dask_completed

    client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
    try:
        futures = [client.submit(run_cell, trace_path, stamp, cfg, key, *args, 1, pure=False)
                   for cfg, key in todo]
        cfg_of = {fut.key: cfg for fut, (cfg, _) in zip(futures, todo)}
        for fut in dask_completed(futures):
            _finish(fut, cfg_of[fut.key])
            bar.update(1)
    finally:
        if not isinstance(scheduler, Client):
            client.close()
