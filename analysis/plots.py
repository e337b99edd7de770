"""Figures of a study, PNG and SVG, drawn with matplotlib's object API on the Agg canvas (no pyplot state).

Each function returns (files written, notes); a figure whose axis is missing from the grid (one pairing ratio,
no info metrics, ...) is skipped with a note, never an error. Every figure that shows an information quantity
names its estimator and the sample size logged as ``info/n_samples``.
"""

from __future__ import annotations

import math
import os
import re

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from analysis.aggregate import CI_METHODS, t_interval
from analysis.collect import short_name

P_KEY, N_KEY = "regime.pairing_ratio", "regime.train_size"
SLOTS_KEY, TAUM_KEY = "model.memory_slots", "model.tau_m"
VARIANT_KEYS = ("model.variant", "variant")
VARIANT_COLORS = {"unimodal": "#7f7f7f", "paired_only": "#ff7f0e", "bma": "#1f77b4"}
OTHER_COLORS = ["#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
MAX_FIGURES = 6  # per kind, when other keys vary and would multiply the figures
MAX_REGIMES = 12  # lines per information figure
MAX_PANELS = 16

PRETTY_INFO = {
    "I_zv_zs": "I(Z_v; Z_s)",
    "I_S_Sprime": "I(S; S')",
    "I_V_Vprime": "I(V; V')",
    "I_fv_fsmem": "I(f_v; f_s,mem)",
    "I_fs_fvmem": "I(f_s; f_v,mem)",
    "H_Wv": "H(W_v)",
    "H_Ws": "H(W_s)",
    "H_Mv": "H(M_v)",
    "H_Ms": "H(M_s)",
}
PLANE_X = ("I_zv_zs",)
PLANE_Y = ("I_S_Sprime", "I_fv_fsmem")
# The information plane shows only quantities that are finite by definition at the model's scale (docs/
# information.md, section 4e): noise-regularised MIs (sigma in the name) and lower bounds with a ceiling (InfoNCE
# <= log N, SMILE <= its clip), in this order of preference. A Gaussian MI or KSG of a near-deterministic map
# (I(S; S') ~ 65 nats from 300 samples) is a monitor, drawn over epochs (info_epochs) but never on the plane,
# unless asked for explicitly (--info-plane I_zv_zs/gaussian I_S_Sprime/gaussian).
PLANE_ESTIMATORS = ("gauss_noise_*", "infonce_cos", "infonce", "infonce_bound", "smile")
COUNT_METRICS = ("info/n_samples", "info/n_estimates", "info/n_flagged")


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._]+", "-", str(text)).strip("-")


def variant_colors(variants) -> dict[str, str]:
    out, extra = {}, iter(OTHER_COLORS * 10)
    for v in variants:
        out[v] = VARIANT_COLORS.get(v) or next(extra)
    return out


def save(fig: Figure, plots_dir: str, name: str, formats: tuple[str, ...] = ("png", "svg"), dpi: int = 150) -> list[str]:
    """``name``.png (``dpi``) and ``name``.svg under plots_dir (those in ``formats``); returns the paths."""
    FigureCanvasAgg(fig)
    os.makedirs(plots_dir, exist_ok=True)
    paths = []
    # SVG keeps its text as text (editable in a paper's figure, searchable), without a timestamp
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "bma-study"}):
        for ext, kwargs in (("png", {"dpi": dpi}), ("svg", {"metadata": {"Date": None}})):
            if ext not in formats:
                continue
            path = os.path.join(plots_dir, f"{name}.{ext}")
            fig.savefig(path, bbox_inches="tight", **kwargs)
            paths.append(path)
    return paths


def _describe_fixed(values: dict) -> str:
    return ", ".join(f"{short_name(k)} = {_fmt(v)}" for k, v in values.items())


def _fmt(v) -> str:
    if isinstance(v, (float, np.floating)):
        return "none" if math.isnan(v) else f"{v:g}"
    return str(v)


def _combos(table: pd.DataFrame, others: list[str]) -> list[dict]:
    """Distinct combinations of ``others`` in table, the most populated first."""
    if not others:
        return [{}]
    sizes = table.groupby(others, dropna=False).size().sort_values(ascending=False, kind="stable")
    out = []
    for key in sizes.index:
        key = key if isinstance(key, tuple) else (key,)
        out.append(dict(zip(others, key)))
    return out


def _varying(combo: dict, combos: list[dict]) -> dict:
    """The entries of ``combo`` whose key takes more than one value over ``combos``."""
    return {k: v for k, v in combo.items() if len({_fmt(c[k]) for c in combos}) > 1} or combo


def _select(table: pd.DataFrame, fixed: dict) -> pd.DataFrame:
    mask = np.ones(len(table), dtype=bool)
    for k, v in fixed.items():
        mask &= table[k].isna().to_numpy() if (isinstance(v, float) and math.isnan(v)) else (table[k] == v).to_numpy()
    return table[mask]


def _pct(p: float) -> str:
    return f"{100 * p:g} %"


# -- accuracy vs pairing ratio -----------------------------------------------------------------------------------


def accuracy_vs_pairing(summary: pd.DataFrame, keys: list[str], metric: str, plots_dir: str, ci: str = CI_METHODS[0]):
    """Panels per train size; x = pairing ratio; a line per variant with its 95 % CI band."""
    notes: list[str] = []
    col = f"{metric}_mean"
    s = summary[summary["n_seeds"] > 0]
    if col not in s or s[col].isna().all():
        return [], [f"plot accuracy vs pairing ratio skipped: no values of {metric}"]
    s = s[s[col].notna()]
    if s[P_KEY].nunique() < 2:
        return [], [f"plot accuracy vs pairing ratio skipped for {metric}: one pairing ratio only "
                    f"({_pct(s[P_KEY].iloc[0])})"]
    others = [k for k in keys if k not in (P_KEY, N_KEY, *VARIANT_KEYS)]
    combos = _combos(s, others)
    thin = [c for c in combos if _select(s, c)[P_KEY].nunique() < 2]
    if thin:
        notes.append(f"plot accuracy vs pairing ratio for {metric}: {len(thin)} setting(s) with one pairing ratio "
                     f"skipped ({'; '.join(_describe_fixed(_varying(c, combos)) for c in thin)})")
        combos = [c for c in combos if c not in thin]
    if len(combos) > MAX_FIGURES:
        notes.append(f"plot accuracy vs pairing ratio for {metric}: {len(combos)} combinations of "
                     f"{', '.join(map(short_name, others))}; drawing the {MAX_FIGURES} most populated")
        combos = combos[:MAX_FIGURES]
    colors = variant_colors(sorted(s["variant"].unique()))
    bounded = any(part in metric for part in ("acc/", "assoc/", "retrieval/"))
    files = []
    for fixed in combos:
        sub = _select(s, fixed)
        ns = sorted(sub[N_KEY].unique())
        fig = Figure(figsize=(3.6 * len(ns) + 0.8, 3.6), layout="constrained")
        axes = fig.subplots(1, len(ns), sharey=True, squeeze=False)[0]
        ps = sorted(sub[P_KEY].unique())
        log_x = ps[-1] / ps[0] >= 4
        for ax, n in zip(axes, ns):
            for variant, color in colors.items():
                d = sub[(sub[N_KEY] == n) & (sub["variant"] == variant)].sort_values(P_KEY)
                if d.empty:
                    continue
                x = 100 * d[P_KEY].to_numpy()
                ax.plot(x, d[col], marker="o", color=color, label=variant)
                low, high = d[f"{metric}_ci95_low"], d[f"{metric}_ci95_high"]
                if bounded:  # a proportion: draw the band inside [0, 1]; the tables keep the t-interval as is
                    low, high = low.clip(0, 1), high.clip(0, 1)
                ax.fill_between(x, low, high, color=color, alpha=0.18, linewidth=0)
                single = d["n_seeds"] == 1
                if single.any():
                    ax.plot(x[single.to_numpy()], d[col][single], linestyle="none", marker="o", markersize=9,
                            markerfacecolor="white", markeredgecolor=color)
            if log_x:
                ax.set_xscale("log")
            ax.set_xticks([100 * p for p in ps], [f"{100 * p:g}" for p in ps])
            ax.minorticks_off()
            ax.set_title(f"N = {int(n)} per modality", fontsize=10)
            ax.set_xlabel("pairing ratio (% of N paired)")
            ax.grid(alpha=0.3)
        axes[0].set_ylabel(metric)
        axes[-1].legend(fontsize=8, loc="best")
        lo, hi = int(sub["n_seeds"].min()), int(sub["n_seeds"].max())
        n_range = f"{lo}" if lo == hi else f"{lo}–{hi}"
        ci_word = "t" if ci == "t" else "bootstrap"
        title = f"{metric} vs pairing ratio: mean over seeds (n = {n_range}), band = 95 % {ci_word}-CI"
        if bounded:
            title += " (drawn within [0, 1])"
        if (sub["n_seeds"] == 1).any():
            title += "; hollow = n=1, no CI"
        if fixed:
            title += f"\n{_describe_fixed(fixed)}"
        fig.suptitle(title, fontsize=10)
        name = f"acc_vs_pairing__{slug(metric)}"
        if len(combos) > 1:
            name += "__" + slug("_".join(f"{short_name(k)}{_fmt(v)}" for k, v in _varying(fixed, combos).items()))
        files += save(fig, plots_dir, name)
    return files, notes


# -- heatmap over (memory_slots, tau_m) ---------------------------------------------------------------------------


def heatmap_slots_tau(summary: pd.DataFrame, keys: list[str], metric: str, variant: str, plots_dir: str):
    """Mean of ``metric`` over (memory_slots x tau_m), one panel per (train size, pairing ratio)."""
    col = f"{metric}_mean"
    s = summary[(summary["n_seeds"] > 0) & (summary["variant"] == variant)]
    if s.empty or col not in s or s[col].isna().all():
        return [], [f"heatmap skipped: no finished trial of variant {variant!r} with {metric}"]
    if s[SLOTS_KEY].nunique() < 2 and s[TAUM_KEY].nunique() < 2:
        return [], [f"heatmap skipped: the grid has one memory_slots ({_fmt(s[SLOTS_KEY].iloc[0])}) and one tau_m "
                    f"({_fmt(s[TAUM_KEY].iloc[0])})"]
    notes = []
    others = [k for k in keys if k not in (P_KEY, N_KEY, SLOTS_KEY, TAUM_KEY, *VARIANT_KEYS)]
    combos = _combos(s, others)
    if len(combos) > 1:
        notes.append(f"heatmap: {len(combos)} combinations of {', '.join(map(short_name, others))}; drawn at "
                     f"{_describe_fixed(_varying(combos[0], combos))}")
    s = _select(s, combos[0])
    ps, ns = sorted(s[P_KEY].unique()), sorted(s[N_KEY].unique())
    if len(ps) * len(ns) > MAX_PANELS:
        keep_p = ps if len(ps) <= 4 else [ps[i] for i in np.linspace(0, len(ps) - 1, 4).round().astype(int)]
        keep_n = ns if len(ns) <= 4 else [ns[i] for i in np.linspace(0, len(ns) - 1, 4).round().astype(int)]
        notes.append(f"heatmap: {len(ps)} x {len(ns)} (pairing ratio x train size) panels; drawing {len(keep_p)} x "
                     f"{len(keep_n)}")
        ps, ns = keep_p, keep_n
    slots, taus = sorted(s[SLOTS_KEY].unique()), sorted(s[TAUM_KEY].unique())
    fig = Figure(figsize=((1.1 * len(slots) + 1.3) * len(ps) + 0.6, 0.9 * len(taus) * len(ns) + 1.6),
                 layout="constrained")
    axes = fig.subplots(len(ns), len(ps), squeeze=False)
    for r, n in enumerate(ns):
        for c, p in enumerate(ps):
            ax = axes[r][c]
            grid = np.full((len(taus), len(slots)), np.nan)
            counts = np.zeros_like(grid, dtype=int)
            d = s[(s[P_KEY] == p) & (s[N_KEY] == n)]
            for _, row in d.iterrows():
                i, j = taus.index(row[TAUM_KEY]), slots.index(row[SLOTS_KEY])
                grid[i, j], counts[i, j] = row[col], row["n_seeds"]
            # one colour scale per panel: the question is which (n, tau_m) wins within a regime
            vmin, vmax = (np.nanmin(grid), np.nanmax(grid)) if np.isfinite(grid).any() else (0.0, 1.0)
            if vmax - vmin < 1e-12:
                vmin, vmax = vmin - 1e-3, vmax + 1e-3
            image = ax.imshow(np.ma.masked_invalid(grid), origin="lower", cmap="viridis", vmin=vmin, vmax=vmax,
                              aspect="auto")
            ax.set_facecolor("#dddddd")
            mid = (vmin + vmax) / 2
            for i in range(len(taus)):
                for j in range(len(slots)):
                    if not np.isnan(grid[i, j]):
                        ax.text(j, i, f"{grid[i, j]:.3f}\nn={counts[i, j]}", ha="center", va="center", fontsize=7,
                                color="white" if grid[i, j] < mid else "black")
            ax.set_xticks(range(len(slots)), [_fmt(v) for v in slots])
            ax.set_yticks(range(len(taus)), [_fmt(v) for v in taus])
            ax.set_title(f"p = {_pct(p)}, N = {int(n)}", fontsize=9)
            if np.isfinite(grid).sum() > 1:
                fig.colorbar(image, ax=ax, fraction=0.08, pad=0.03)
            if r == len(ns) - 1:
                ax.set_xlabel("memory slots n")
            if c == 0:
                ax.set_ylabel("tau_m")
    title = (f"{metric}, variant {variant}: mean over seeds per (memory slots, tau_m)\n"
             "colour scale per panel; grey = not run")
    if others:
        title += f"\n{_describe_fixed(combos[0])}"
    fig.suptitle(title, fontsize=10)
    return save(fig, plots_dir, f"heatmap__{slug(metric)}__{slug(variant)}"), notes


# -- information quantities ---------------------------------------------------------------------------------------


def parse_info(metric: str) -> tuple[str, str] | None:
    """``info/I_zv_zs/infonce`` -> ("I_zv_zs", "infonce"); None for the counts (info/n_samples, info/n_flagged,
    info/n_estimates), the flag codes (info/flag/...) and non-info metrics."""
    parts = metric.split("/")
    if parts[0] != "info" or metric in COUNT_METRICS or len(parts) < 2 or parts[1] == "flag":
        return None
    return parts[1], "/".join(parts[2:]) or "unspecified"


def plane_rank(estimator: str) -> int | None:
    """Position of ``estimator`` in PLANE_ESTIMATORS (patterns), None if it is not a plane quantity."""
    import fnmatch

    for i, pattern in enumerate(PLANE_ESTIMATORS):
        if fnmatch.fnmatchcase(estimator, pattern):
            return i
    return None


def info_label(quantity: str, estimator: str) -> str:
    return f"{PRETTY_INFO.get(quantity, quantity)} [{estimator}]"


def _sample_size_text(hist: pd.DataFrame, run_ids) -> str:
    vals = hist[(hist["metric"] == "info/n_samples") & hist["run_id"].isin(run_ids)]["value"].dropna()
    if vals.empty:
        return "sample size not logged (no info/n_samples)"
    lo, hi = int(vals.min()), int(vals.max())
    return f"n = {lo} held-out samples per estimate" if lo == hi else f"n = {lo}–{hi} held-out samples per estimate"


def _regimes(used: pd.DataFrame, keys: list[str], notes: list[str], what: str) -> list[tuple[str, pd.Series, dict]]:
    """(label, run ids, line style) per cell of one variant.

    Every cell when they fit on one figure, else the (p, N) grid at the most common setting of the other keys.
    """
    cell = [k for k in keys if k not in VARIANT_KEYS]
    others = [k for k in cell if k not in (P_KEY, N_KEY)]
    n_cells = len(_combos(used, cell))
    # every cell when they fit on one figure; else the (p, N) grid at the most common setting of the other keys
    combos = [{}] if n_cells <= MAX_REGIMES else _combos(used, others)
    if len(combos) > 1:
        notes.append(f"{what}: regimes drawn at {_describe_fixed(_varying(combos[0], combos))} only "
                     f"({len(combos)} settings ran)")
    sub = _select(used, combos[0])
    varying = [k for k in cell if sub[k].astype(str).nunique() > 1] or [P_KEY, N_KEY]
    out = []
    for key, grp in sub.groupby(varying, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        label = ", ".join(f"{_short_sym(k)}={_fmt(v)}" for k, v in zip(varying, key))
        out.append((label, grp["run_id"], dict(zip(varying, key))))
    if len(out) > MAX_REGIMES:
        notes.append(f"{what}: {len(out)} regimes; drawing {MAX_REGIMES} spread over the grid")
        idx = np.linspace(0, len(out) - 1, MAX_REGIMES).round().astype(int)
        out = [out[i] for i in sorted(set(idx))]
    styles = _regime_styles([attrs for _, _, attrs in out], varying)
    return [(label, ids, style) for (label, ids, _), style in zip(out, styles)]


LINESTYLES = ("-", "--", ":", "-.")


def _regime_styles(attrs: list[dict], varying: list[str]) -> list[dict]:
    """Colour by pairing ratio (viridis), line style by train size, when those are what varies; else tab10."""
    if set(varying) <= {P_KEY, N_KEY}:
        order = lambda v: -1.0 if v is None else float(v)  # noqa: E731
        ps = sorted({a.get(P_KEY) for a in attrs}, key=order)
        ns = sorted({a.get(N_KEY) for a in attrs}, key=order)
        colors = _regime_colors(len(ps))
        return [{"color": colors[ps.index(a.get(P_KEY))],
                 "linestyle": LINESTYLES[ns.index(a.get(N_KEY)) % len(LINESTYLES)] if N_KEY in varying else "-"}
                for a in attrs]
    from matplotlib import colormaps

    tab = colormaps["tab10"]
    return [{"color": tab(i % 10), "linestyle": LINESTYLES[(i // 10) % len(LINESTYLES)]} for i in range(len(attrs))]


def _short_sym(key: str) -> str:
    return {P_KEY: "p", N_KEY: "N", SLOTS_KEY: "n", TAUM_KEY: "tau_m", "loss.tau_l": "tau_l"}.get(key, short_name(key))


def _mean_curve(hist: pd.DataFrame, run_ids, metric: str) -> pd.DataFrame:
    d = hist[(hist["metric"] == metric) & hist["run_id"].isin(run_ids)]
    rows = []
    for step, grp in d.groupby("step", sort=True):
        v = grp["value"].to_numpy(dtype=float)
        lo, hi = t_interval(v)
        rows.append({"step": step, "mean": np.nanmean(v) if len(v) else np.nan, "low": lo, "high": hi, "n": len(v)})
    return pd.DataFrame(rows, columns=["step", "mean", "low", "high", "n"])


def info_over_epochs(runs: pd.DataFrame, hist: pd.DataFrame, keys: list[str], plots_dir: str,
                     formats: tuple[str, ...] = ("png", "svg"), dpi: int = 150):
    """Per variant: a panel per info quantity/estimator, a line per regime (mean over seeds, 95 % t band).
    ``formats``, ``dpi``: as in ``save``."""
    used = runs[runs["used"]]
    info_metrics = sorted({m for m in hist["metric"].unique() if parse_info(m)})
    if not info_metrics:
        return [], ["information plots skipped: no info/<quantity>/<estimator> metric logged"]
    files, notes = [], []
    for variant in sorted(used["variant"].unique()):
        vu = used[used["variant"] == variant]
        vh = hist[hist["run_id"].isin(vu["run_id"])]
        present = [m for m in info_metrics if (vh["metric"] == m).any()]
        if not present:
            notes.append(f"information over epochs: variant {variant!r} logged no info metric")
            continue
        if len(present) > MAX_PANELS:
            notes.append(f"information over epochs ({variant}): {len(present)} quantities; drawing {MAX_PANELS}")
            present = present[:MAX_PANELS]
        regimes = _regimes(vu, keys, notes, f"information over epochs ({variant})")
        ncols = min(4, len(present))
        nrows = math.ceil(len(present) / ncols)
        fig = Figure(figsize=(3.4 * ncols, 2.7 * nrows + 0.9), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for ax, metric in zip(axes, present):
            quantity, estimator = parse_info(metric)
            for label, ids, style in regimes:
                curve = _mean_curve(vh, ids, metric)
                if curve.empty:
                    continue
                ax.plot(curve["step"], curve["mean"], marker=".", label=label, **style)
                ax.fill_between(curve["step"], curve["low"], curve["high"], color=style["color"], alpha=0.12,
                                linewidth=0)
            ax.set_title(f"{PRETTY_INFO.get(quantity, quantity)}\nestimator: {estimator}", fontsize=9)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("epoch")
            ax.set_ylabel("nats")
            ax.grid(alpha=0.3)
        for ax in axes[len(present):]:
            ax.set_visible(False)
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=min(4, len(labels)), fontsize=8)
        fig.suptitle(f"Information quantities over epochs, variant {variant}: mean over seeds, band = 95 % t-CI; "
                     f"{_sample_size_text(vh, vu['run_id'])}", fontsize=10)
        files += save(fig, plots_dir, f"info_epochs__{slug(variant)}", formats, dpi)
    return files, notes


def _regime_colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(x) for x in np.linspace(0.0, 0.9, max(n, 1))]


def _pick_estimator(available: dict[str, set[str]], qx: str, qy: str, ex: str | None, ey: str | None):
    """Estimators for the two axes: as asked; else each axis's first plane estimator (PLANE_ESTIMATORS order),
    one both quantities share when that is as good for both; None for an axis with no plane estimator."""
    if ex and ey:
        return ex, ey

    def order(names) -> list[str]:
        ranked = [e for e in names if plane_rank(e) is not None]
        return sorted(ranked, key=lambda e: (plane_rank(e), e))

    bx, by = order(available.get(qx, set())), order(available.get(qy, set()))
    common = order(available.get(qx, set()) & available.get(qy, set()))
    if not ex and not ey and common and bx and by and plane_rank(common[0]) <= min(plane_rank(bx[0]),
                                                                                    plane_rank(by[0])):
        return common[0], common[0]
    return ex or (bx or [None])[0], ey or (by or [None])[0]


def _plane_point_cloud(ax, both: pd.DataFrame, style: dict, label: str) -> None:
    """One regime's trajectory: mean per epoch, 95 % t-CI over seeds on both axes, o first epoch, square last."""
    color = style["color"]
    xerr = np.vstack([both["mean_x"] - both["low_x"], both["high_x"] - both["mean_x"]])
    yerr = np.vstack([both["mean_y"] - both["low_y"], both["high_y"] - both["mean_y"]])
    ax.plot(both["mean_x"], both["mean_y"], marker=".", label=label, **style)
    ax.errorbar(both["mean_x"], both["mean_y"], xerr=np.where(np.isnan(xerr), 0, xerr),
                yerr=np.where(np.isnan(yerr), 0, yerr), fmt="none", ecolor=color, alpha=0.35, elinewidth=0.8,
                capsize=1.5)
    ax.plot(both["mean_x"].iloc[0], both["mean_y"].iloc[0], marker="o", markerfacecolor="white",
            markeredgecolor=color, linestyle="none")
    ax.plot(both["mean_x"].iloc[-1], both["mean_y"].iloc[-1], marker="s", color=color, linestyle="none")
    ax.annotate(f"e{int(both['step'].iloc[-1])}", (both["mean_x"].iloc[-1], both["mean_y"].iloc[-1]),
                textcoords="offset points", xytext=(4, 3), fontsize=7, color=color)


def _resolve_estimator(available: set[str], estimator: str | None) -> str | None:
    """An asked estimator, or the first available one matching a pattern such as ``gauss_noise_*``."""
    import fnmatch

    if estimator is None or "*" not in estimator:
        return estimator
    return next(iter(sorted(e for e in available if fnmatch.fnmatchcase(e, estimator))), None)


def _split_spec(spec: str) -> tuple[str, str | None]:
    spec = spec.removeprefix("info/")
    q, _, e = spec.partition("/")
    return q, e or None


def info_plane(runs: pd.DataFrame, hist: pd.DataFrame, keys: list[str], plots_dir: str,
               pairs: list[tuple[str, str]] | None = None, title: str | None = None,
               formats: tuple[str, ...] = ("png", "svg"), dpi: int = 150):
    """Per variant: trajectories over epochs in the plane (x quantity, y quantity), one line per regime.

    ``pairs``: [("I_zv_zs", "I_S_Sprime/infonce"), ...] (estimator optional, patterns such as gauss_noise_*
    allowed); default I(Z_v;Z_s) against I(S;S') and against I(f_v;f_s,mem). Without an asked estimator an axis
    takes its first plane estimator (PLANE_ESTIMATORS: finite by definition); a quantity with none is not drawn.
    Each point is the mean over seeds at one epoch with its 95 % t-CI over seeds on both axes. ``title`` replaces
    the figure title's first part (the live plane of one trial says so); ``formats``, ``dpi``: as in ``save``.
    """
    used = runs[runs["used"]]
    specs = pairs or [(x, y) for x in PLANE_X for y in PLANE_Y]
    files, notes = [], []
    if not any(parse_info(m) for m in hist["metric"].unique()):
        return [], ["information plane skipped: no info/<quantity>/<estimator> metric logged"]
    for variant in sorted(used["variant"].unique()):
        vu = used[used["variant"] == variant]
        vh = hist[hist["run_id"].isin(vu["run_id"])]
        available: dict[str, set[str]] = {}
        for m in vh["metric"].unique():
            parsed = parse_info(m)
            if parsed:
                available.setdefault(parsed[0], set()).add(parsed[1])
        planes = []
        for xs, ys in specs:
            (qx, ex), (qy, ey) = _split_spec(xs), _split_spec(ys)
            if qx not in available or qy not in available:
                continue
            ex, ey = _resolve_estimator(available[qx], ex), _resolve_estimator(available[qy], ey)
            ex, ey = _pick_estimator(available, qx, qy, ex, ey)
            if ex in available[qx] and ey in available[qy]:
                planes.append((qx, ex, qy, ey))
                for q, e in ((qx, ex), (qy, ey)):
                    if plane_rank(e) is None:
                        notes.append(f"information plane ({variant}): {q}/{e} was asked for; it is not finite by "
                                     "definition for a deterministic map (docs/information.md, section 4e)")
        if not planes:
            wanted = ", ".join(f"{x} vs {y}" for x, y in specs)
            notes.append(f"information plane skipped for variant {variant!r}: it logged none of {wanted} with a "
                         f"plane estimator ({', '.join(PLANE_ESTIMATORS)})")
            continue
        regimes = _regimes(vu, keys, notes, f"information plane ({variant})")
        fig = Figure(figsize=(4.6 * len(planes), 4.4), layout="constrained")
        axes = fig.subplots(1, len(planes), squeeze=False)[0]
        for ax, (qx, ex, qy, ey) in zip(axes, planes):
            for label, ids, style in regimes:
                cx = _mean_curve(vh, ids, f"info/{qx}/{ex}")
                cy = _mean_curve(vh, ids, f"info/{qy}/{ey}")
                both = cx.merge(cy, on="step", suffixes=("_x", "_y")).dropna(subset=["mean_x", "mean_y"])
                if both.empty:
                    continue
                _plane_point_cloud(ax, both, style, label)
            ax.set_xlabel(f"{info_label(qx, ex)} (nats)")
            ax.set_ylabel(f"{info_label(qy, ey)} (nats)")
            same = "one estimator" if ex == ey else "two estimators"
            ax.set_title(f"x {ex}, y {ey} ({same})", fontsize=9)
            ax.grid(alpha=0.3)
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=min(4, max(1, len(labels))), fontsize=8)
        head = title or (f"Information plane, variant {variant}: mean over seeds per epoch, bars = 95 % t-CI over "
                         "seeds")
        fig.suptitle(f"{head} (o first epoch, ■ last)\n{_sample_size_text(vh, vu['run_id'])}; estimator error at "
                     "this d and N: docs/information.md, section 5c", fontsize=10)
        files += save(fig, plots_dir, f"info_plane__{slug(variant)}", formats, dpi)
    return files, notes


# -- exchange rate ------------------------------------------------------------------------------------------------


def exchange_rate_plot(table: pd.DataFrame, keys: list[str], metric: str, plots_dir: str):
    """Rows = variants; left: marginal value of a pair and of an unpaired sample; right: the exchange rate."""
    if table.empty:
        return [], ["exchange-rate plot skipped: no exchange-rate estimate (see exchange_rate.md)"]
    t = table[table["metric"] == metric]
    if t.empty:
        return [], [f"exchange-rate plot skipped: no estimate for {metric}"]
    notes = []
    vcol = "variant" if "variant" in t else "model.variant"
    others = [k for k in keys if k in t and k not in (P_KEY, N_KEY, *VARIANT_KEYS)]
    combos = _combos(t, others)
    if len(combos) > 1:
        notes.append(f"exchange-rate plot: drawn at {_describe_fixed(_varying(combos[0], combos))} "
                     f"({len(combos)} settings)")
    t = _select(t, combos[0])
    variants = sorted(t[vcol].unique())
    intervals = sorted({(a, b) for a, b in zip(t["N_low"], t["N_high"])})
    colors = _regime_colors(len(intervals))
    fig = Figure(figsize=(9.5, 3.2 * len(variants) + 0.8), layout="constrained")
    axes = fig.subplots(len(variants), 2, squeeze=False, sharex=True)
    for r, variant in enumerate(variants):
        tv = t[t[vcol] == variant]
        ax_m, ax_r = axes[r]
        for (n0, n1), color in zip(intervals, colors):
            d = tv[(tv["N_low"] == n0) & (tv["N_high"] == n1)].sort_values("p_mid")
            if d.empty:
                continue
            x = 100 * d["p_mid"].to_numpy()
            lab = f"N {n0}–{n1}"
            for col, style, marker, what in (("dA_dP_per_1k", "-", "o", "P"), ("dA_dU_per_1k", "--", "s", "U")):
                err = np.vstack([d[col] - d[f"{col}_ci95_low"], d[f"{col}_ci95_high"] - d[col]])
                ax_m.errorbar(x, d[col], yerr=np.where(np.isnan(err), 0, err), color=color, linestyle=style,
                              marker=marker, markerfacecolor=color if what == "P" else "white", capsize=2,
                              label=f"{lab}: dA/d{what}")
            ok = d["exchange_rate"].notna()
            if ok.any():
                ax_r.plot(x[ok.to_numpy()], d["exchange_rate"][ok], color=color, marker="o", label=lab)
        ax_m.axhline(0, color="black", linewidth=0.6)
        ax_m.set_ylabel(f"gain in {metric.removeprefix('final/')}\nper 1,000 samples")
        ax_m.set_title(f"{variant}: marginal value of a pair (●, solid) and of an unpaired sample (□, dashed)",
                       fontsize=9)
        ax_m.legend(fontsize=7)
        ax_m.grid(alpha=0.3)
        rates = tv["exchange_rate"].dropna()
        if rates.empty:
            ax_r.text(0.5, 0.5, "undefined: a marginal value is <= 0\neverywhere on the grid", ha="center",
                      va="center", transform=ax_r.transAxes, fontsize=9)
        else:
            if rates.min() > 0 and rates.max() / rates.min() > 20:
                ax_r.set_yscale("log")
            ax_r.legend(fontsize=7)
        ax_r.set_ylabel("R = (dA/dP) / (dA/dU)\nunpaired samples per pair")
        ax_r.set_title(f"{variant}: exchange rate", fontsize=9)
        ax_r.grid(alpha=0.3)
        if r == len(variants) - 1:
            for ax in (ax_m, ax_r):
                ax.set_xlabel("pairing ratio at the rectangle centre (%)")
    title = (f"Exchange rate on {metric}: bilinear interpolation of the seed-mean grid; error bars = 95 % t-CI "
             "over seeds")
    if others:
        title += f"\n{_describe_fixed(combos[0])}"
    fig.suptitle(title, fontsize=10)
    return save(fig, plots_dir, f"exchange_rate__{slug(metric)}"), notes
