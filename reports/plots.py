"""The report's plots (matplotlib, drawn off-screen).  Each function returns a Figure; call
:func:`save` to write it as PNG (and SVG on request).

* :func:`sqnr_vs_bits`: SQNR against bits per element, one line per family (an error table).
* :func:`pareto`: error against a cost (energy per MAC, MAC area), the Pareto front drawn
  through the configurations no other beats on both; every point is named, or past
  ``MAX_NAMED_POINTS`` points only the front's (at most that many of them, evenly spread).
* :func:`layer_heatmap`: per-layer SQNR of each configuration's outputs (or of those named).
* :func:`histogram`: a tensor's values with the format's representable values overlaid.
* :func:`accumulator_error`: relative error of dot products against their length K for MAC
  presets (random normal operands, the exact sum of the quantized operands' products as the
  reference).
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Sequence, Union

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.text import Text  # noqa: E402

import formats  # noqa: E402

import mac_models as mm  # noqa: E402

from .tables import quantize_2d  # noqa: E402


def save(fig, path: Path, svg: bool = False) -> list[Path]:
    """Write ``fig`` as ``path`` (.png) and, with ``svg``, beside it as .svg; closes it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    out = [path]
    if svg:
        fig.savefig(path.with_suffix(".svg"), bbox_inches="tight")
        out.append(path.with_suffix(".svg"))
    plt.close(fig)
    return out


def sqnr_vs_bits(table: pd.DataFrame, data: str = "gaussian") -> plt.Figure:
    """SQNR (dB) against bits per element on one data set of an error table."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    rows = table[table["data"] == data]
    for fam, group in rows.groupby("family"):
        g = group.sort_values("bits")
        ax.plot(g["bits"], g["sqnr_db"], marker="o", label=fam)
        for _, r in g.iterrows():
            ax.annotate(r["format"], (r["bits"], r["sqnr_db"]), fontsize=6,
                        xytext=(3, 2), textcoords="offset points")
    ax.set_xlabel("bits per element (scale overhead included)")
    ax.set_ylabel("SQNR (dB)")
    ax.set_title(f"Quantization SQNR on {data} data")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def pareto_front(cost: np.ndarray, error: np.ndarray) -> np.ndarray:
    """Mask of the points no other point beats (no worse on both, better on one); points with
    a NaN or infinite cost or error (failed configurations, outputs that overflowed) are never
    on the front and beat nothing."""
    cost, error = np.asarray(cost, float), np.asarray(error, float)
    valid = np.isfinite(cost) & np.isfinite(error)
    keep = valid.copy()
    for i in np.flatnonzero(valid):
        others = valid & (cost <= cost[i]) & (error <= error[i]) & \
            ((cost < cost[i]) | (error < error[i]))
        keep[i] = not others.any()
    return keep


def _text_box(ann, renderer):
    """Where an annotation's text lies on the canvas, without its line to the point."""
    ann.update_positions(renderer)
    return Text.get_window_extent(ann, renderer)


MAX_NAMED_POINTS = 40      # more points than this: a Pareto plot names only its front


def _label_points(ax: plt.Axes, d: pd.DataFrame, x: str, y: str, keep: Sequence = (),
                  fontsize: float = 6) -> int:
    """Name each point beside it; a label that would overlap one already placed or leave the
    axes vertically moves down or up by whole lines (nearest free place first, a thin line back
    to its point), so crowded plots stay readable.  The points in ``keep`` (a Pareto front) are
    named first; a label of another point with no free place within 20 lines is left out, one of
    theirs stays beside its point.  Returns how many labels were left out."""
    ax.autoscale_view()
    renderer = ax.figure.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    placed = []
    left_out = 0
    order = d.assign(_other=~d.index.isin(list(keep))).sort_values(["_other", y],
                                                                  ascending=[True, False])
    for name, r in order.iterrows():
        ann = ax.annotate(str(name), (r[x], r[y]), fontsize=fontsize, xytext=(3, 2),
                          textcoords="offset points", zorder=4,
                          arrowprops=dict(arrowstyle="-", lw=0.3, color="0.6",
                                          shrinkA=0, shrinkB=2))
        first = box = _text_box(ann, renderer)
        line = box.height * 72 / ax.figure.dpi                  # points
        for step in range(1, 41):
            if frame.y0 <= box.y0 and box.y1 <= frame.y1 and not any(map(box.overlaps, placed)):
                break
            ann.xyann = (3, 2 + line * ((step + 1) // 2) * (-1) ** step)
            box = _text_box(ann, renderer)
        else:                                   # no free place within 20 lines
            if name not in keep:
                ann.remove()
                left_out += 1
                continue
            ann.xyann, box = (3, 2), first      # a front point's name stays beside it
        placed.append(box)
    return left_out


def pareto(summary: pd.DataFrame, x: str, y: str, xlabel: str, ylabel: str,
           logy: bool = True) -> plt.Figure:
    """``y`` (an error) against ``x`` (a cost), one point per configuration, front marked and
    named (names of other points that would crowd are left out; the legend says how many)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    d = summary[np.isfinite(summary[x].astype(float)) & np.isfinite(summary[y].astype(float))]
    front = pareto_front(d[x], d[y])
    ax.scatter(d[x], d[y], c=np.where(front, "tab:red", "tab:gray"), s=18, zorder=3)
    f = d[front].sort_values(x)
    step = -(-len(f) // MAX_NAMED_POINTS)           # a front of hundreds: every step-th named
    front_line, = ax.plot(f[x], f[y], color="tab:red", lw=1)
    if logy and (d[y] > 0).all():
        ax.set_yscale("log")
    shown = f.iloc[::step] if len(d) > MAX_NAMED_POINTS else d
    named = len(shown) - _label_points(ax, shown, x, y, keep=f.index)
    label = "Pareto front"
    if len(d) > MAX_NAMED_POINTS:
        label += f" (named{'' if step == 1 else f', one in {step}'}; {len(d)} points in all)"
    elif named < len(d):
        label += f" ({named} of {len(d)} points named, the others would crowd: see the tables)"
    front_line.set_label(label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


MAX_HEATMAP_ROWS = 40      # more configurations than this: the report's heatmap shows a few


def layer_heatmap(results: pd.DataFrame, configs: Union[Sequence[str], None] = None
                  ) -> plt.Figure:
    """SQNR (dB) of every MAC op's output, configurations by ops: every configuration, or only
    ``configs`` (in the results' order; the title then says how many of how many)."""
    out = results[(results["role"] == "output") & results["macs"].notna()]
    grid = out.pivot_table(index="config", columns="op", values="sqnr_db", sort=False)
    title = "Per-layer output SQNR"
    if configs is not None:
        total = len(grid)
        grid = grid[grid.index.isin(list(configs))]
        title += f" ({len(grid)} of {total} configurations)"
    shown = grid.replace([np.inf], np.nan)
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * grid.shape[1], 1.0 + 0.28 * grid.shape[0]))
    im = ax.imshow(shown.to_numpy(float), aspect="auto", cmap="viridis")
    ax.set_xticks(range(grid.shape[1]), grid.columns, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(grid.shape[0]), grid.index, fontsize=7)
    for (i, j), v in np.ndenumerate(grid.to_numpy(float)):
        ax.text(j, i, "exact" if np.isinf(v) else f"{v:.0f}", ha="center", va="center",
                fontsize=6, color="white")
    fig.colorbar(im, ax=ax, label="output SQNR (dB)")
    ax.set_title(title)
    return fig


def histogram(x: np.ndarray, fmt: str, bins: int = 200) -> plt.Figure:
    """Histogram of ``x`` with ``fmt``'s representable values over the data's range overlaid
    (every value of a scalar format of at most 16 bits; for wider or scaled formats, whose grid
    depends on the block scales, the values the quantized tensor takes)."""
    x = np.asarray(x, dtype=np.float64).reshape(1, -1) if np.ndim(x) < 2 else \
        np.asarray(x, dtype=np.float64).reshape(-1, np.shape(x)[-1])
    f = formats.get(fmt)
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    finite = x[np.isfinite(x)]
    ax.hist(finite, bins=bins, color="tab:blue", alpha=0.6, label="values")
    if isinstance(f, formats.ScaledFormat) or f.bits > 16:
        q, _ = quantize_2d(x, fmt)
        grid, what = np.unique(q[np.isfinite(q)]), "values taken"
    else:
        v = f.values()
        grid, what = v[(v >= finite.min()) & (v <= finite.max())], "representable values"
    for value in grid:
        ax.axvline(value, color="tab:red", lw=0.3, alpha=0.5)
    ax.plot([], [], color="tab:red", lw=1, label=f"{fmt}: {grid.size} {what} in range")
    ax.set_yscale("log")
    ax.set_xlabel("value")
    ax.set_ylabel("count")
    ax.legend(fontsize=7)
    return fig


def _exact_dot(a: np.ndarray, b: np.ndarray) -> float:
    """The exact dot product of two float64 vectors, rounded once to float64."""
    return float(sum((Fraction(float(p)) * Fraction(float(q)) for p, q in zip(a, b)),
                     Fraction(0)))


def accumulator_error(presets: Sequence[str], ks: Sequence[int] = (16, 64, 256, 1024, 4096),
                      trials: int = 8, seed: int = 0) -> plt.Figure:
    """Median relative error of ``trials`` dot products of length K through each preset."""
    rng = np.random.default_rng(seed)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name in presets:
        mac = mm.preset(name)
        errs = []
        for k in ks:
            rel = []
            for _ in range(trials):
                a, b = rng.standard_normal(k), rng.standard_normal(k)
                if name.startswith("int"):
                    a, b = np.rint(np.clip(a * 30, -127, 127)), np.rint(np.clip(b * 30, -127, 127))
                got = float(mm.dot(a, b, mac).values)
                qa = mm.ops.quantized_operand(a[None, :], mac.a_format, 1)[0][0]
                qb = mm.ops.quantized_operand(b[:, None], mac.b_format, 0)[0][:, 0]
                ref = _exact_dot(qa, qb)
                rel.append(abs(got - ref) / abs(ref) if ref else 0.0)
            errs.append(max(float(np.median(rel)), 1e-18))
        ax.plot(ks, errs, marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("dot length K")
    ax.set_ylabel("median relative error vs exact sum (1e-18 = exact)")
    ax.set_title("Accumulation error against K (operands already in the preset's formats)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    return fig


__all__ = ["save", "sqnr_vs_bits", "pareto", "pareto_front", "layer_heatmap", "histogram",
           "accumulator_error"]
