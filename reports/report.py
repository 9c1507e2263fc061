"""The hardware-design report: one self-contained HTML file (plots embedded, sortable tables)
and a Markdown twin, from a replay table.

``write_report(results, out_dir, ...)`` writes ``index.html``, ``report.md``, ``figures/`` (PNG;
SVG too with ``svg=True``) and ``results.csv``.  Sections: summary with the recommendation and
the Pareto-optimal configurations, per-configuration summary table, per-layer tables and
heatmap (past ``plots.MAX_HEATMAP_ROWS`` configurations, only the recommendation's and the
energy-error front's rows), cost breakdowns, the format error table (when given), and method
notes (conventions, seeds, package versions).

Recommendation rule (stated in the report): among the configurations whose task accuracy is
within one point of the best (without labels, or where the captured logits get no label right,
so that accuracy ranks nothing: whose model output SQNR, in a propagated replay, or else mean
output SQNR, is within 1 dB of the best), the one with the least energy for the replayed run
(``total_pj``: every configuration replays the same inputs), then the smallest MAC area.  The
tolerances are :func:`recommend`'s arguments: ``accuracy_drop`` (points), and ``min_sqnr_db``,
an SQNR floor in place of "within 1 dB of the best", which fp32 alone meets in most replays.
"""
from __future__ import annotations

import base64
import datetime
import html
import io
import math
import platform
from importlib import metadata
from pathlib import Path
from typing import Mapping, Union

import numpy as np
import pandas as pd

from mac_models import memory

from . import plots

_SORT_JS = """
document.querySelectorAll('table.sortable th').forEach(function (th, col) {
  th.addEventListener('click', function () {
    var body = th.closest('table').tBodies[0];
    var rows = Array.from(body.rows);
    var dir = th.dataset.dir === 'asc' ? -1 : 1;
    th.dataset.dir = dir === 1 ? 'asc' : 'desc';
    rows.sort(function (a, b) {
      var x = a.cells[col].dataset.v || a.cells[col].textContent;
      var y = b.cells[col].dataset.v || b.cells[col].textContent;
      var nx = parseFloat(x), ny = parseFloat(y);
      if (!isNaN(nx) && !isNaN(ny)) { return dir * (nx - ny); }
      return dir * x.localeCompare(y);
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""

_CSS = """
body { font-family: sans-serif; max-width: 1300px; margin: 2em auto; color: #222; }
.wide { overflow-x: auto; }
table { border-collapse: collapse; font-size: 12px; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: right; }
th { background: #eee; cursor: pointer; }
td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; }
.note { color: #555; font-size: 13px; }
"""


def _mean_sqnr(v: pd.Series) -> float:
    """Mean SQNR over the ops whose output is not exact (+inf when every one is exact; -inf
    when one holds an overflow or a NaN the reference has not: see simulator.metrics)."""
    v = v.to_numpy(float)
    v = v[~np.isnan(v)]
    inexact = v[v != np.inf]
    if inexact.size:
        return float(np.mean(inexact))
    return math.inf if v.size else math.nan


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration: accuracy (propagated replays with labels), mean output SQNR
    over MAC ops whose output is not exact (+inf when all are), the model's output SQNR
    (``model_sqnr_db``, propagated replays: the model's output op's, every error before it
    propagated),
    energy per run (pJ: compute,
    memory, total, over the MACs and, in propagated replays, the ops between them; of which
    ``between_pj`` the ops between the MACs, NaN in per-op replays, which do not run them, and
    ``quantize_pj`` the quantizing, NaN for tables replay wrote before it priced that),
    energy per MAC (total_pj / macs), MACs, MAC area (µm², the largest over ops)
    and overflow / saturation counts; in the table's configuration order.
    Where some op failed: ``failed_ops`` counts them, ``error`` holds the first message, the
    energies and MACs cover only the ops that ran, and the mean SQNR is NaN (it would rank an
    incomplete run; the accuracy is NaN already), which keeps it off the Pareto fronts."""
    modes = set(results["mode"].dropna()) if "mode" in results else set()
    if len(modes) > 1:
        raise ValueError(f"the results mix replay modes {sorted(modes)}; summarize one at a time")
    order = list(dict.fromkeys(results["config"]))
    outputs = results[results["role"] == "output"]
    mac = outputs["macs"].notna()
    priced = outputs[outputs["total_pj"].notna()]          # the ops that ran
    g, every = outputs[mac].groupby("config", sort=False), priced.groupby("config", sort=False)
    between = priced[priced["macs"].isna()].groupby("config", sort=False)["total_pj"].sum()
    s = pd.DataFrame({
        "mean_output_sqnr_db": g["sqnr_db"].apply(_mean_sqnr),
        "compute_pj": every["compute_pj"].sum(), "memory_pj": every["memory_pj"].sum(),
        "total_pj": every["total_pj"].sum(),
        "between_pj": between.reindex(every.size().index, fill_value=0.0)
        if modes == {"propagated"} else math.nan,
        "quantize_pj": every["quantize_pj"].sum() if "quantize_pj" in priced else math.nan,
        "macs": g["macs"].sum(), "area_um2_per_mac": g["area_um2"].max(),
        "overflows": g["overflows"].sum(), "saturations": g["saturations"].sum()})
    s = s.reindex(order)                     # configurations whose every op failed included
    s.index.name = "config"
    s.insert(s.columns.get_loc("macs"), "pj_per_mac", s["total_pj"] / s["macs"])
    task = results[results["role"] == "task"].set_index("config")
    if len(task) and "sqnr_db" in task:
        s.insert(1, "model_sqnr_db", task["sqnr_db"])
    for i, column in enumerate(("accuracy", "reference_accuracy")):
        if column in task:
            s.insert(i, column, task[column])
    if "error" in results:
        bad = results.dropna(subset=["error"])
        failed = bad[bad["role"] == "output"].groupby("config").size()
        s["failed_ops"] = failed.reindex(s.index, fill_value=0)
        s.loc[s["failed_ops"] > 0, "mean_output_sqnr_db"] = math.nan   # not the whole run
        s["error"] = bad.groupby("config")["error"].first()
    return s


def recommend(summary: pd.DataFrame, accuracy_drop: float = 0.01,
              min_sqnr_db: Union[float, None] = None) -> tuple[str, str]:
    """(configuration, the rule applied) — see the module doc.  ``accuracy_drop``: how far
    below the best accuracy a candidate may be (a fraction: 0.01 is one point);
    ``min_sqnr_db``: where SQNR ranks, the least a candidate's may be (None: 1 dB below the
    best)."""
    if not accuracy_drop >= 0:
        raise ValueError(f"accuracy_drop must be a fraction of 0 or more, got {accuracy_drop!r}")
    ok = summary[summary["error"].isna()] if "error" in summary else summary
    if "accuracy" in ok:
        ok = ok[ok["accuracy"].notna()]
    if not len(ok):
        return "none", "every configuration failed: nothing to recommend"
    blind = "accuracy" in ok and "reference_accuracy" in ok and \
        not (ok["reference_accuracy"] > 0).any()
    if "accuracy" in ok and not blind:
        best = ok["accuracy"].max()
        pool = ok[ok["accuracy"] >= best - accuracy_drop]
        points = "one point" if accuracy_drop == 0.01 else f"{100 * accuracy_drop:g} points"
        rule = (f"within {points} of the best accuracy ({best:.2%}), the least energy for "
                f"the run (total_pj), then the smallest MAC area")
    else:
        column = _sqnr_column(ok)
        best = ok[column].max()
        what = "model output SQNR" if column == "model_sqnr_db" else "mean output SQNR"
        if min_sqnr_db is None:
            pool = ok[ok[column] >= best - 1.0]
            within = f"within 1 dB of the best {what} ({best:.1f} dB)"
        else:
            pool = ok[ok[column] >= min_sqnr_db]
            within = f"a {what} of {min_sqnr_db:g} dB or more (the best: {best:.1f} dB)"
            if not len(pool):
                return "none", f"no configuration reaches {within}"
        rule = f"{within}, the least energy for the run (total_pj), then the smallest MAC area"
        if blind:
            rule = ("the captured logits get no label right (reference accuracy 0 %), so "
                    "accuracy ranks nothing: " + rule)
    pick = pool.sort_values(["total_pj", "area_um2_per_mac"]).index[0]
    return str(pick), rule


def _sqnr_column(summary: pd.DataFrame) -> str:
    """The SQNR that ranks configurations where accuracy does not: the model's output's
    (propagated replays), else the mean over the MAC ops' outputs (per-op replays)."""
    if "model_sqnr_db" in summary and summary["model_sqnr_db"].notna().any():
        return "model_sqnr_db"
    return "mean_output_sqnr_db"


def _heatmap_configs(summary: pd.DataFrame, front: pd.Index, pick: str
                     ) -> Union[list, None]:
    """Past ``plots.MAX_HEATMAP_ROWS`` configurations, the heatmap's rows: the recommendation
    and the energy-error Pareto front, evenly thinned in energy order; None (every
    configuration) below that."""
    if len(summary) <= plots.MAX_HEATMAP_ROWS:
        return None
    ordered = summary.loc[front].sort_values("pj_per_mac").index
    step = max(1, -(-len(ordered) // (plots.MAX_HEATMAP_ROWS - 1)))
    return [pick, *ordered[::step]]


def _heatmap_note(summary: pd.DataFrame) -> str:
    """The report's words on which rows the heatmap shows (empty when it shows them all)."""
    if len(summary) <= plots.MAX_HEATMAP_ROWS:
        return ""
    return (f"With {len(summary)} configurations, the heatmap shows only the recommendation and "
            f"the energy-error Pareto front (at most {plots.MAX_HEATMAP_ROWS} rows, evenly "
            f"spread in energy); the table above has them all.")


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _number_text(v: float) -> str:
    """A table's number as both reports show it: 4 significant digits, an infinite SQNR as
    "exact", NaN (not applicable) as nothing."""
    return "" if math.isnan(v) else ("exact" if math.isinf(v) and v > 0 else f"{v:.4g}")


def _table_html(df: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in [df.index.name or ""] +
                   list(df.columns))
    rows = []
    for idx, r in df.iterrows():
        cells = [f"<td>{html.escape(str(idx))}</td>"]
        for v in r:
            if isinstance(v, (float, np.floating)):
                cells.append(f'<td data-v="{v}">{_number_text(v)}</td>')
            else:
                cells.append(f"<td>{html.escape('' if v is None else str(v))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="wide"><table class="sortable"><thead><tr>{head}</tr></thead><tbody>'
            f'{"".join(rows)}</tbody></table></div>')


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("numsim", "numpy", "numba", "pandas", "matplotlib"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def write_report(results: pd.DataFrame, out_dir: Union[str, Path], *,
                 costs: Union[Mapping[str, object], None] = None,
                 error_table: Union[pd.DataFrame, None] = None,
                 presets: Union[list, None] = None, meta: Union[Mapping, None] = None,
                 figures: Union[Mapping[str, object], None] = None,
                 cost_note: str = "45 nm", svg: bool = False, accuracy_drop: float = 0.01,
                 min_sqnr_db: Union[float, None] = None) -> Path:
    """Write the report for ``results`` (a replay table) into ``out_dir``; returns the HTML
    path.  ``costs`` maps configuration names to :class:`mac_models.MacCost` for the cost
    breakdowns; ``error_table`` is a :func:`reports.tables.error_table`; ``presets`` are MAC
    presets for the accumulation-error plot; ``meta`` adds method notes (title, model, ...);
    ``figures`` adds more matplotlib figures by name (a tensor's histogram, say);
    ``cost_note`` says at which node and dot length ``costs`` were priced; ``accuracy_drop``
    and ``min_sqnr_db`` go to :func:`recommend`."""
    out = Path(out_dir)
    figdir = out / "figures"
    figdir.mkdir(parents=True, exist_ok=True)
    meta = dict(meta or {})
    summary = summarize(results)
    pick, rule = recommend(summary, accuracy_drop, min_sqnr_db)
    err = "accuracy" in summary and summary["accuracy"].notna().any()
    summary["error_metric"] = (1 - summary["accuracy"]) if err else \
        10 ** (-summary[_sqnr_column(summary)] / 10)
    front_e = summary.index[plots.pareto_front(summary["pj_per_mac"], summary["error_metric"])]
    front_a = summary.index[plots.pareto_front(summary["area_um2_per_mac"],
                                               summary["error_metric"])]
    model = _sqnr_column(summary) == "model_sqnr_db"
    ylabel = "task error (1 - accuracy)" if err else \
        f"relative {'model ' if model else ''}output noise (10^(-SQNR/10))"
    named = dict(figures or {})
    figures = {
        "pareto_energy": plots.pareto(summary, "pj_per_mac", "error_metric",
                                      "energy per MAC, memory traffic included (pJ)", ylabel),
        "pareto_area": plots.pareto(summary, "area_um2_per_mac", "error_metric",
                                    "MAC unit area (µm²)", ylabel),
        "layer_heatmap": plots.layer_heatmap(results, _heatmap_configs(summary, front_e, pick)),
    }
    if error_table is not None and len(error_table):
        data = "gaussian" if (error_table["data"] == "gaussian").any() else \
            error_table["data"].iloc[0]
        figures["sqnr_vs_bits"] = plots.sqnr_vs_bits(error_table, data)
    if presets:
        figures["accumulation_error"] = plots.accumulator_error(presets)
    figures.update(named)
    listing = figdir / ".numsim-figures"       # the figures an earlier report here wrote
    for name in listing.read_text().split() if listing.is_file() else []:
        for suffix in (".png", ".svg"):
            (figdir / f"{Path(name).name}{suffix}").unlink(missing_ok=True)
    embedded = {}
    for name, fig in figures.items():
        embedded[name] = base64.b64encode(_png(fig)).decode()
        plots.save(fig, figdir / f"{name}.png", svg=svg)
    listing.write_text("\n".join(figures) + "\n")
    results.to_csv(out / "results.csv", index=False)
    _write_html(out / "index.html", summary, results, pick, rule, front_e, front_a, embedded,
                costs, error_table, meta, cost_note)
    _write_markdown(out / "report.md", summary, results, pick, rule, front_e, front_a,
                    list(figures), costs, error_table, meta, cost_note)
    return out / "index.html"


def _layer_table(results: pd.DataFrame) -> pd.DataFrame:
    out = results[(results["role"] == "output") & results["macs"].notna()]
    return out.pivot_table(index="config", columns="op", values="sqnr_db", sort=False)


def _breakdowns(costs: Mapping[str, object]) -> pd.DataFrame:
    """Energy (pJ/MAC) per part group for each configuration (group = text before ':')."""
    rows = {}
    for name, c in costs.items():
        b = c.breakdown()
        b["group"] = b["component"].str.split(":").str[0]
        rows[name] = b.groupby("group", sort=False)["energy_pj"].sum()
    return pd.DataFrame(rows).T.fillna(0.0)


_COLUMNS = {
    "accuracy": "share of the labels the replayed logits get right",
    "reference_accuracy": "the same for the captured logits",
    "mean_output_sqnr_db": "the MAC ops' output SQNR against the captured outputs, in dB, "
                           "averaged over the ops not exact ('exact': all are; -inf: an "
                           "output overflowed or turned NaN)",
    "model_sqnr_db": "the model's output SQNR against the captured output, in dB (the op the "
                     "trace names as the model's output, else the last), every error before it "
                     "propagated (propagated replays)",
    "compute_pj": "arithmetic energy of the whole replayed run, in pJ: the MACs and, in "
                  "propagated replays, the vector work between them",
    "memory_pj": "energy of the run's memory traffic, in pJ",
    "total_pj": "compute_pj + memory_pj",
    "between_pj": "the part of total_pj spent on the ops between the MACs (their arithmetic "
                  "and traffic; not priced in per-op replays, which do not run them)",
    "quantize_pj": "the part of compute_pj spent quantizing: each tensor into the format it "
                   "is stored in, each MAC's activations into the activation format where they "
                   "are not stored in it (weights are quantized offline)",
    "pj_per_mac": "total_pj / macs",
    "macs": "multiply-accumulates in the run",
    "area_um2_per_mac": "area of one MAC unit in µm² (the largest over the ops)",
    "overflows": "register overflows in the run (integer wraps, float overflows)",
    "saturations": "register results clamped to the format's range",
    "failed_ops": "ops that could not run (their energy is left out; see error)",
}


def _configurations(results: pd.DataFrame) -> pd.DataFrame:
    """What each configuration runs: weight and activation formats, the accumulator as built
    (with its promotion interval; tables written before that column name the MAC preset or spec
    instead, whose operand formats the configuration replaces), the rounding, the storage format
    of the values between the MACs where a configuration has one, and the fusion where one
    fuses."""
    optional = {"storage": lambda v: v.notna(), "fusion": lambda v: v.fillna("none") != "none"}
    mac = "accumulator" if "accumulator" in results else "mac"
    columns = [c for c in ("config", "weights", "activations", mac, "rounding", "storage",
                           "fusion")
               if c in results and (c not in optional or optional[c](results[c]).any())]
    return results.drop_duplicates("config")[columns].set_index("config")


def _column_notes(summary: pd.DataFrame) -> list[str]:
    return [f"{c}: {_COLUMNS[c]}" for c in summary.columns if c in _COLUMNS]


def _memory_notes(results: pd.DataFrame) -> list[str]:
    """What the traffic was priced at (memory level, pJ per bit, node), and what the values
    between the MACs were kept in where no configuration names a storage format."""
    notes = []
    if "level" in results and "tech_nm" in results:
        for (level, node), _ in results.groupby(["level", "tech_nm"]):
            e = memory.pj_per_bit(level, tech=node)
            notes.append(f"memory level {level} at {node:g} nm: {e:.4g} pJ per bit moved"
                         + (" (DRAM does not scale with the node)" if level == "dram" else
                            f" ({memory.DEFAULT_KB[level]:g} KB)"))
    if "storage" in results and results["storage"].isna().any():
        notes.append("configurations without a storage format keep the values between the "
                     "MACs in fp32: a tensor moves in the activation format where MACs alone "
                     "read it (they quantize it to that format anyway), else in fp32")
    return notes


def _notes(results: pd.DataFrame, meta: Mapping) -> list[str]:
    seeds = sorted(set(results["seed"].dropna().astype(int))) if "seed" in results else []
    modes = sorted(set(results["mode"].dropna())) if "mode" in results else []
    notes = [f"{k}: {v}" for k, v in meta.items() if k != "title"]
    notes += [
        f"replay mode: {', '.join(modes)}; seeds: {seeds}",
        "operands are rounded to nearest even into their formats unless a configuration says "
        "otherwise; each output's products are summed in K order by the MAC's accumulator, "
        "exactly as that design does (products exact unless the MAC rounds them; aligned, "
        "Kulisch and quire adders as modelled in mac_models).",
        "energy and area: proxies calibrated to Horowitz (ISSCC 2014, 45 nm, 0.9 V), node "
        "scaling from Stillmaker & Baas (2017); memory traffic: each op reads each of its "
        "tensors once and writes its output once (perfect reuse inside an op), activations in "
        "the storage format (without one, as below), weights in the weight format, "
        "other parameters as captured, except what a fused kernel or, with fusion 'epilogue', "
        "a MAC's epilogue keeps on chip; the ops between the MACs are priced in propagated "
        "replays, as fp32 vector steps; wires, control and leakage are not modelled.",
        *_memory_notes(results),
        "versions: " + ", ".join(f"{k} {v}" for k, v in _versions().items()),
        f"generated {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
    ]
    return notes


def _write_html(path, summary, results, pick, rule, front_e, front_a, figs, costs, etable,
                meta, cost_note) -> None:
    title = html.escape(meta.get("title", "numsim hardware-design report"))
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title>"
             f"<style>{_CSS}</style></head><body><h1>{title}</h1>",
             "<h2>Summary</h2>",
             f"<p><b>Recommendation: {html.escape(pick)}</b> — rule: {html.escape(rule)}.</p>",
             f"<p>Pareto-optimal in energy and error: {html.escape(', '.join(front_e))}.<br>"
             f"Pareto-optimal in MAC area and error: {html.escape(', '.join(front_a))}.</p>",
             _table_html(summary.drop(columns=["error_metric"]))]
    for name in ("pareto_energy", "pareto_area"):
        parts.append(f'<img alt="{name}" src="data:image/png;base64,{figs[name]}">')
    parts += ["<h2>Per-layer output SQNR (dB)</h2>", _table_html(_layer_table(results)),
              f"<p>{_heatmap_note(summary)}</p>",
              f'<img alt="layer_heatmap" src="data:image/png;base64,{figs["layer_heatmap"]}">']
    if costs:
        parts += [f"<h2>Cost breakdown (MAC arithmetic only, pJ per MAC, "
                  f"{html.escape(cost_note)})</h2>",
                  _table_html(_breakdowns(costs))]
    if etable is not None and len(etable):
        parts += ["<h2>Format error table</h2>",
                  _table_html(etable.set_index("format"))]
    for name in figs:
        if name not in ("pareto_energy", "pareto_area", "layer_heatmap"):
            parts.append(f"<h3>{html.escape(name.replace('_', ' '))}</h3>"
                         f'<img alt="{name}" src="data:image/png;base64,{figs[name]}">')
    parts += ["<h2>Configurations</h2>", _table_html(_configurations(results)),
              "<h2>Columns</h2><ul class='note'>"] + \
        [f"<li>{html.escape(n)}</li>" for n in _column_notes(summary)] + \
        ["</ul><h2>Method notes</h2><ul class='note'>"] + \
        [f"<li>{html.escape(n)}</li>" for n in _notes(results, meta)] + \
        [f"</ul><script>{_SORT_JS}</script></body></html>"]
    path.write_text("\n".join(parts), encoding="utf-8")


def _md_table(df: pd.DataFrame) -> str:
    """``df`` as a Markdown table: floats as in the HTML, and ``|`` in any cell or label (the
    default config names hold one) escaped so that it does not split the cell."""
    def cell(v):
        if isinstance(v, (float, np.floating)):
            return _number_text(v)
        return v.replace("|", "\\|") if isinstance(v, str) else v
    return df.map(cell).rename(index=cell, columns=cell).to_markdown()


def _write_markdown(path, summary, results, pick, rule, front_e, front_a, fig_names, costs,
                    etable, meta, cost_note) -> None:
    lines = [f"# {meta.get('title', 'numsim hardware-design report')}", "", "## Summary", "",
             f"**Recommendation: {pick}** (rule: {rule}).", "",
             f"Pareto-optimal in energy and error: {', '.join(front_e)}.", "",
             f"Pareto-optimal in MAC area and error: {', '.join(front_a)}.", "",
             _md_table(summary.drop(columns=["error_metric"])), ""]
    lines += [f"![{n}](figures/{n}.png)" for n in ("pareto_energy", "pareto_area")]
    lines += ["", "## Per-layer output SQNR (dB)", "", _md_table(_layer_table(results)), "",
              _heatmap_note(summary), "",
              "![layer_heatmap](figures/layer_heatmap.png)", ""]
    if costs:
        lines += [f"## Cost breakdown (MAC arithmetic only, pJ per MAC, {cost_note})", "",
                  _md_table(_breakdowns(costs)), ""]
    if etable is not None and len(etable):
        lines += ["## Format error table", "", _md_table(etable.set_index("format")), ""]
    lines += [f"![{n}](figures/{n}.png)" for n in fig_names
              if n not in ("pareto_energy", "pareto_area", "layer_heatmap")]
    lines += ["", "## Configurations", "", _md_table(_configurations(results)), "",
              "## Columns", ""] + [f"- {n}" for n in _column_notes(summary)]
    lines += ["", "## Method notes", ""] + [f"- {n}" for n in _notes(results, meta)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
