"""What each ``numsim`` subcommand does (the parser is in :mod:`simulator.cli`).

Every command returns an exit code; tables go to standard output (as text, or ``--json`` /
``--csv``), progress and notes to standard error.  Heavy imports happen inside the commands so
that ``numsim --help`` stays fast.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd


def _json_value(v):
    """A table cell as JSON: numpy scalars as Python numbers (full precision), NaN and missing
    as null, infinities (an exact SQNR, say) as "inf" / "-inf"."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float):
        if np.isnan(v):
            return None
        if np.isinf(v):
            return "inf" if v > 0 else "-inf"
    if v is pd.NA or v is pd.NaT:
        return None
    return v


def emit(table: pd.DataFrame, args: argparse.Namespace, index: bool = False) -> None:
    """Print ``table`` as text (floats to 6 significant digits), or as JSON records (see
    :func:`_json_value`) or CSV (to a path, or ``-`` for stdout), both at full precision."""
    if getattr(args, "json", False):
        data = table.reset_index() if index else table
        records = [{k: _json_value(v) for k, v in row.items()}
                   for row in data.to_dict(orient="records")]
        print(json.dumps(records, indent=1))
    elif getattr(args, "csv", None):
        if args.csv == "-":
            table.to_csv(sys.stdout, index=index)
        else:
            table.to_csv(args.csv, index=index)
            print(f"wrote {len(table)} rows to {args.csv}", file=sys.stderr)
    else:
        print(table.to_string(index=index, float_format=lambda v: f"{v:.6g}"))


def cmd_formats(args: argparse.Namespace) -> int:
    from reports.tables import property_table
    emit(property_table(args.names or None), args)
    return 0


def _read_tensors(path: Path) -> dict:
    """The tensors of a .npy or .safetensors file, by name, each of real numbers (integers,
    booleans or floats, bfloat16 included); errors name the file."""
    from formats.scalar import is_ml_dtype
    if path.suffix not in (".npy", ".safetensors"):
        raise ValueError(f"{path}: give a .npy or .safetensors file")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix == ".npy":
        with open(path, "rb") as f:
            if f.read(6) != b"\x93NUMPY":
                raise ValueError(f"{path}: not a NumPy .npy file (no .npy header)")
    try:
        if path.suffix == ".npy":
            tensors = {path.stem: np.load(path, allow_pickle=False)}
        else:
            from safetensors.numpy import load_file
            tensors = load_file(str(path))
    except Exception as exc:              # numpy and safetensors raise their own types
        raise ValueError(f"{path}: cannot read: {exc}") from exc
    for name, x in tensors.items():
        if x.dtype.kind not in "biuf" and not is_ml_dtype(x.dtype):       # bfloat16
            raise ValueError(f"{path}: tensor {name!r} is {x.dtype}, not real numbers")
    return tensors


def _quantize_destination(src: Path, tensors: dict, args: argparse.Namespace) -> Path:
    """Where ``numsim quantize`` writes: --output, or INPUT's name with .FORMAT added; checked
    before any work (suffix, folder, one tensor per .npy, no overwrite without --overwrite,
    never the input itself, nor a --csv table over either file)."""
    dest = Path(args.output) if args.output else \
        src.with_name(f"{src.stem}.{args.format}{src.suffix}")
    if dest.suffix not in (".npy", ".safetensors"):
        raise ValueError(f"--output {dest}: give a .npy or .safetensors file")
    if not dest.parent.is_dir():
        raise FileNotFoundError(f"--output {dest}: no such folder {dest.parent}")
    if dest.is_dir():
        raise ValueError(f"--output {dest} is a folder; give a file name")
    if dest.suffix == ".npy" and len(tensors) != 1:
        raise ValueError(f"{dest}: a .npy file holds one tensor; {src} has {len(tensors)}")
    if dest.exists():
        if dest.samefile(src):                  # hard links included
            raise ValueError(f"--output {dest} is the input file; write elsewhere")
        if not args.overwrite:
            raise FileExistsError(f"{dest} exists; give --overwrite to replace it")
    csv = getattr(args, "csv", None)
    if csv not in (None, "-"):
        table = Path(csv)
        if table.resolve() == dest.resolve() or (table.exists() and table.samefile(src)):
            raise ValueError(f"--csv {csv} is the input or output tensor file; write the "
                             f"statistics elsewhere")
    return dest


def cmd_quantize(args: argparse.Namespace) -> int:
    import formats
    from reports.tables import quantized_with_errors

    src = Path(args.input)
    tensors = _read_tensors(src)
    fmt = formats.get(args.format)
    dest = _quantize_destination(src, tensors, args)
    out, rows = {}, []
    for name, x in tensors.items():
        x = x.astype(np.uint8) if x.dtype.kind == "b" else x   # integers are read exactly
        q, row = quantized_with_errors(x, fmt, args.rounding, args.seed)
        out[name] = q.astype(np.float32 if args.float32 else np.float64)
        rows.append({"tensor": name, "shape": "x".join(map(str, x.shape)), **row})
    if dest.suffix == ".npy":
        np.save(dest, next(iter(out.values())))
    else:
        from safetensors.numpy import save_file
        save_file(out, str(dest))
    print(f"wrote {len(out)} quantized tensor(s) to {dest}", file=sys.stderr)
    emit(pd.DataFrame(rows), args)
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    from reports.tables import DEFAULT_FORMATS, DISTRIBUTIONS, error_table, standard_data

    data = None
    if args.input:
        data = _read_tensors(Path(args.input))
    else:
        unknown = set(args.distributions or []) - set(DISTRIBUTIONS)
        if unknown:
            raise ValueError(f"unknown distributions {sorted(unknown)}; known: "
                             f"{', '.join(DISTRIBUTIONS)}")
        data = standard_data(args.rows, args.seed)
        if args.distributions:
            data = {k: v for k, v in data.items() if k in args.distributions}
    emit(error_table(args.formats or DEFAULT_FORMATS, data), args)
    return 0


def cmd_capture(args: argparse.Namespace) -> int:
    from .traces import save_trace
    if args.model == "digits":
        from .digits import trace
        t = trace()
    else:
        from .minilm import SENTENCES, capture_minilm
        t = capture_minilm(args.sentences or SENTENCES)
    path = save_trace(t, args.output, overwrite=args.overwrite)
    print(f"captured {len(t.ops)} ops of {t.model} into {path}", file=sys.stderr)
    return 0


def _configs(args: argparse.Namespace) -> list:
    from .configs import Config
    from .standard import standard_configs
    configs = [Config(p[0], p[1], p[2] if len(p) == 3 else None) for p in args.config or []]
    if args.standard or not configs:
        configs = standard_configs() + configs
    if args.storage and args.storage != "none":
        configs = [replace(c, storage=args.storage, name=f"{c.name},store:{args.storage}")
                   for c in configs]
    if args.fusion != "none":
        configs = [replace(c, fusion=args.fusion, name=f"{c.name},fuse:{args.fusion}")
                   for c in configs]
    return configs


def _emit_summary(results: pd.DataFrame, args: argparse.Namespace) -> None:
    """Print the summary table; name on standard error the configurations that could not run
    every op (their rows carry an ``error``; their totals cover only the ops that ran)."""
    from reports.report import summarize
    if results.empty:
        raise ValueError("the traces have no ops (capture recorded none): nothing was replayed")
    summary = summarize(results)
    counts = [c for c in ("macs", "overflows", "saturations", "failed_ops") if c in summary]
    emit(summary.astype({c: "Int64" for c in counts}), args, index=True)     # counts as integers
    if "error" in summary and summary["error"].notna().any():
        failed = list(summary.index[summary["error"].notna()])
        print(f"numsim {args.command}: {len(failed)} configuration(s) could not run every op "
              f"(see the error column; their totals cover only the ops that ran): "
              f"{', '.join(failed)}", file=sys.stderr)


def cmd_replay(args: argparse.Namespace) -> int:
    from .replay import replay
    from .sweep import BUILTIN, builtin_trace_path
    from .traces import load_trace
    trace = load_trace(builtin_trace_path() if args.trace == BUILTIN else args.trace)
    if not trace.ops:
        raise ValueError(f"{args.trace}: the trace has no ops (capture recorded none): nothing "
                         f"to replay")
    results = replay(trace, _configs(args), args.mode, tech=args.tech, level=args.level,
                     progress=True)
    if args.output:
        out = Path(args.output)
        (results.to_parquet if out.suffix == ".parquet" else results.to_csv)(out, index=False)
        print(f"wrote {len(results)} rows to {out}", file=sys.stderr)
    _emit_summary(results, args)
    return 0


def _say_done(sweep, command: str) -> None:
    """Say on standard error how many of ``sweep``'s cells a rerun reads back from disk (the
    progress bar, on a terminal only, starts there)."""
    from .sweep import pending
    left, total = len(pending(sweep)), len(sweep.configs)
    if left < total:
        print(f"numsim {command}: {total - left} of {total} cells already done in "
              f"{sweep.output / 'cells'}; running {left}", file=sys.stderr)


def cmd_sweep(args: argparse.Namespace) -> int:
    from .sweep import load_sweep, run_sweep
    sweep = load_sweep(args.file)
    _say_done(sweep, "sweep")
    results = run_sweep(sweep, workers=args.workers, scheduler=args.scheduler)
    print(f"results in {sweep.output / 'results.parquet'} and {sweep.output / 'results.csv'}",
          file=sys.stderr)
    _emit_summary(results, args)
    return 0


def _read_results(path: Path) -> pd.DataFrame:
    """A replay or sweep table from .parquet or .csv; errors name the file."""
    if path.suffix not in (".parquet", ".csv"):
        raise ValueError(f"{path}: give a results table (.parquet or .csv)")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        results = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except Exception as exc:              # pandas and pyarrow raise their own types
        raise ValueError(f"{path}: cannot read: {exc}") from exc
    missing = {"config", "op", "role", "sqnr_db", "macs"} - set(results.columns)
    if missing:
        raise ValueError(f"{path}: not a replay table (missing columns {sorted(missing)})")
    return results


def _breakdown_k(results: pd.DataFrame) -> int:
    """The dot length the report's cost breakdowns share per-output work by: the replayed MAC
    ops' products per output (over one configuration's ops), 64 where the table has none."""
    out = results[(results["role"] == "output") & results["macs"].notna()] \
        if "macs" in results else results.iloc[:0]
    out = out[out["config"] == out["config"].iloc[0]] if len(out) else out
    outputs = out["numel"].sum() if len(out) else 0
    return max(round(out["macs"].sum() / outputs), 1) if outputs else 64


def _cost_note(tech, k: int) -> str:
    return (f"{tech or 45:g} nm, per-output work shared by K = {k} (the trace's MACs per MAC "
            f"output, a mean over its layers)")


def _costs(results: pd.DataFrame) -> tuple[dict, str]:
    """(MacCost per configuration whose MAC the table can rebuild (presets, spec tables, the
    default), the note saying how they were priced).  Configurations run with a MAC object
    are left out of the breakdown and named in the note."""
    import mac_models as mm

    from .configs import Config
    costs, skipped, k = {}, [], _breakdown_k(results)
    first = results.drop_duplicates("config")
    tech = first["tech_nm"].iloc[0] if "tech_nm" in first else None
    for _, r in first.iterrows():
        mac = r.get("mac")
        if isinstance(mac, str) and mac.startswith("MAC:"):
            skipped.append(str(r["config"]))
            continue
        mac = None if mac == "fp32acc" or not isinstance(mac, str) else \
            (json.loads(mac) if mac.startswith("{") else mac)
        cfg = Config(r["weights"], r["activations"], mac)
        costs[r["config"]] = mm.cost(cfg.build_mac(), tech=tech, k=k)
    note = _cost_note(tech, k)
    if skipped:
        note += f"; not rebuilt from the table: {', '.join(skipped)}"
    return costs, note


def cmd_report(args: argparse.Namespace) -> int:
    from reports.report import write_report
    results = _read_results(Path(args.results))
    costs, note = _costs(results)
    path = write_report(results, args.output, costs=costs, cost_note=note, svg=args.svg,
                        meta={"title": args.title, "results": str(args.results)},
                        accuracy_drop=args.accuracy_drop / 100, min_sqnr_db=args.min_sqnr)
    print(f"report written to {path}", file=sys.stderr)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job: capture the built-in model, sweep the standard configurations, report."""
    import mac_models as mm
    from reports.plots import histogram
    from reports.report import write_report
    from reports.tables import DEFAULT_FORMATS, error_table, standard_data

    from . import digits
    from .standard import standard_configs
    from .sweep import Sweep, run_sweep
    from .traces import save_trace

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    print(f"numsim demo: capturing the built-in digits MLP into {out / 'trace'}",
          file=sys.stderr)
    trace = digits.trace()
    save_trace(trace, out / "trace", overwrite=True)
    configs = standard_configs()
    print(f"numsim demo: replaying it through {len(configs)} configurations",
          file=sys.stderr)
    sweep = Sweep(str(out / "trace"), configs, out / "sweep")
    _say_done(sweep, "demo")
    results = run_sweep(sweep, workers=args.workers)
    captured = {f"{op.name}.{role}": op.tensors[role] for op in trace.ops
                if op.kind == "linear" for role in ("input", "weight")}
    etable = error_table(DEFAULT_FORMATS, {**standard_data(16), **captured})
    k = _breakdown_k(results)
    costs = {c.name: mm.cost(c.build_mac(), k=k) for c in configs}
    print("numsim demo: writing the report", file=sys.stderr)
    path = write_report(results, out, costs=costs, error_table=etable,
                        cost_note=_cost_note(None, k),
                        presets=["int8->int32", "int8->int16", "fp16->fp16", "bf16->fp32",
                                 "fp8_e4m3->fp32_h100", "fp8_e4m3->fp32_h100_nopromote"],
                        meta={"title": "numsim demo: the digits MLP on 20 configurations",
                              "model": f"{digits.MODEL} v{digits.VERSION}, 360 test images"},
                        figures={"fc2_weights_in_fp8_e4m3":
                                 histogram(trace.op("fc2").tensors["weight"], "fp8_e4m3")})
    _emit_summary(results, args)
    print(f"numsim demo: report written to {path}", file=sys.stderr)
    return 0
