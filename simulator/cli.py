"""The ``numsim`` command line, the front door to the simulator."""

from __future__ import annotations

import argparse
import sys
from importlib import metadata
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def _version() -> str:
    """Installed distribution version, or a placeholder when running from an uninstalled tree."""
    try:
        return metadata.version("numsim")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _formats_table() -> "pd.DataFrame":
    """Table of the named formats; ``formats`` is imported here so ``--help`` stays fast."""
    import formats

    return formats.table()


def _cmd_formats(args: argparse.Namespace) -> int:
    """Print the named-format table, or write it as CSV with ``--csv``."""
    table = _formats_table()
    if args.csv is None:
        print(table.to_string(index=False))
        return 0
    if args.csv == "-":
        table.to_csv(sys.stdout, index=False)
        return 0
    try:
        table.to_csv(args.csv, index=False)
    except OSError as exc:
        print(f"numsim formats: cannot write {args.csv}: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {len(table)} formats to {args.csv}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    """The main job on the built-in example: the digits model's trace replayed (propagated)
    through the standard configurations; prints accuracy, error and cost per configuration."""
    from .digits import trace
    from .replay import replay
    from .standard import standard_configs

    print("numsim demo: the built-in digits MLP (360 test images) through the standard "
          "configurations", file=sys.stderr)
    df = replay(trace(), standard_configs(), "propagated", progress=True)
    task = df[df.role == "task"].set_index("config")
    logits = df[(df.role == "output") & (df.op == df.op[df.kind == "linear"].iloc[-1])]
    table = task[["accuracy", "total_pj"]].copy()
    table["logits_sqnr_db"] = logits.set_index("config").sqnr_db
    table["energy_uj"] = table.pop("total_pj") / 1e6
    table["area_um2_per_mac"] = df[df.role == "output"].groupby("config").area_um2.max()
    print(table.round({"accuracy": 4, "logits_sqnr_db": 1, "energy_uj": 2,
                       "area_um2_per_mac": 0}).to_string())
    print("(energy: compute + DRAM traffic for the 360 images at 45 nm; the full report "
          "arrives with the reports issue)", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with all subcommands."""
    parser = argparse.ArgumentParser(
        prog="numsim",
        description="Bit-exact simulator of ML number formats and MAC hardware.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p_formats = sub.add_parser(
        "formats",
        help="list the named number formats and their properties",
        description="List the named number formats and their properties.",
    )
    p_formats.add_argument(
        "--csv", metavar="PATH", default=None,
        help="write the table as CSV to PATH ('-' for standard output) instead of printing it",
    )
    p_formats.set_defaults(func=_cmd_formats)

    p_demo = sub.add_parser(
        "demo",
        help="run the main job on the built-in example",
        description="Replay the built-in digits model through the standard configurations and "
                    "print accuracy, error and cost per configuration.",
    )
    p_demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``numsim`` command; returns the process exit code."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
