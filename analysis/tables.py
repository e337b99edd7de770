"""Readable Markdown and LaTeX renderings of the summary, comparison and exchange-rate tables.

CSV/Parquet carry every column; these carry a curated set: the keys that vary, the seed and failure counts and
the main metrics as ``mean ± CI half-width`` (or ``mean [low, high]`` for the asymmetric bootstrap interval).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.aggregate import constant_keys
from analysis.collect import short_name

DASH = "–"


def fmt_num(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NA:
        return DASH
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x))
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        return str(int(x)) if float(x).is_integer() else f"{x:.{digits + 1}g}"
    return str(x)


def fmt_key(x) -> str:
    """A cell-key value as written in a grid spec: 0.1, 2000, softmax."""
    if isinstance(x, (float, np.floating)) and not math.isnan(x):
        return f"{x:g}"
    return fmt_num(x)


def fmt_p(p) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return DASH
    return f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}"


def fmt_ci(mean, low, high, n, ci: str, digits: int = 3, pm: str = "±") -> str:
    """``0.912 ± 0.013``; ``0.912 [0.900, 0.925]`` for bootstrap; ``0.912 (n=1, no CI)``; a dash without data."""
    if n == 0 or mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return DASH
    if n == 1 or math.isnan(low):
        return f"{mean:.{digits}f} (n={int(n)}, no CI)"
    if ci == "t":
        return f"{mean:.{digits}f} {pm} {(high - low) / 2:.{digits}f}"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def latex_escape(text: str) -> str:
    repl = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
            "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
    out = "".join(repl.get(ch, ch) for ch in str(text))
    return out.replace("±", r"$\pm$").replace("–", "--").replace("Δ", r"$\Delta$").replace("δ", r"$\delta$")


def to_latex(table: pd.DataFrame, caption: str, label: str) -> str:
    """A booktabs ``table`` of string cells (needs \\usepackage{booktabs}); text is escaped."""
    cols = list(table.columns)
    align = "".join("l" if i < 1 or not _numeric_looking(table[c]) else "r" for i, c in enumerate(cols))
    lines = [
        r"\begin{table}[ht]",
        r"\centering",
        r"\small",
        rf"\caption{{{latex_escape(caption)}}}",
        rf"\label{{{label}}}",
        rf"\begin{{tabular}}{{{align}}}",
        r"\toprule",
        " & ".join(latex_escape(c) for c in cols) + r" \\",
        r"\midrule",
    ]
    for _, row in table.iterrows():
        lines.append(" & ".join(latex_escape(v) for v in row.tolist()) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)


def _numeric_looking(col: pd.Series) -> bool:
    return all(str(v).replace(".", "", 1).replace("-", "", 1).strip().isdigit() for v in col if str(v) != DASH)


def to_markdown(table: pd.DataFrame) -> str:
    if table.empty:
        return "_(no rows)_\n"
    return table.to_markdown(index=False, disable_numparse=True) + "\n"


# -- summary -----------------------------------------------------------------------------------------------------


def summary_display(summary: pd.DataFrame, keys: list[str], main_cols: list[str], ci: str,
                    pm: str = "±") -> pd.DataFrame:
    """The curated summary: varying keys (short names), n, failures, main metrics as mean ± CI half-width."""
    fixed = constant_keys(summary, keys)
    shown_keys = [k for k in keys if k not in fixed and k != "model.variant"]
    out = pd.DataFrame({"variant": summary["variant"].astype(str)})
    for k in shown_keys:
        if k != "variant":
            out[short_name(k)] = summary[k].map(fmt_key)
    out["n"] = summary["n_seeds"].astype(int).astype(str)
    if summary["n_failed"].sum():
        out["failed"] = summary["n_failed"].astype(int).astype(str)
    if summary["n_running"].sum():
        out["running"] = summary["n_running"].astype(int).astype(str)
    flagged = flagged_counts(summary)
    if flagged is not None:
        out["info flagged"] = flagged
    for col in main_cols:
        out[col.removeprefix("final/")] = [
            fmt_ci(r[f"{col}_mean"], r[f"{col}_ci95_low"], r[f"{col}_ci95_high"], r[f"{col}_n"], ci, pm=pm)
            for _, r in summary.iterrows()
        ]
    return out


FLAGGED, ESTIMATES = "final/info/n_flagged", "final/info/n_estimates"


def flagged_counts(summary: pd.DataFrame) -> list[str] | None:
    """Per cell, "flagged/estimates" of the information probes at the final epoch, summed over the cell's seeds
    (a flagged estimate is NaN and not logged: docs/information.md); None when the study logged no such count."""
    if f"{FLAGGED}_mean" not in summary:
        return None
    out = []
    for _, r in summary.iterrows():
        n = r.get(f"{FLAGGED}_n", 0)
        if not n or math.isnan(r[f"{FLAGGED}_mean"]):
            out.append(DASH)
            continue
        flagged = int(round(r[f"{FLAGGED}_mean"] * n))
        total = r.get(f"{ESTIMATES}_mean", float("nan")) * r.get(f"{ESTIMATES}_n", 0)
        out.append(f"{flagged}/{int(round(total))}" if total == total else str(flagged))
    return out


def flagged_line(runs: pd.DataFrame) -> str | None:
    """The summary's line on flagged information estimates over the trials it aggregates, or None."""
    if FLAGGED not in runs:
        return None
    used = runs[runs["used"]]
    flagged = used[FLAGGED].dropna()
    if flagged.empty:
        return None
    total = used[ESTIMATES].dropna().sum() if ESTIMATES in used else float("nan")
    with_flags = int((flagged > 0).sum())
    of = f" of {int(total)}" if total == total else ""
    return (f"- information estimates flagged at the final probe (NaN, not logged; the reason code is in "
            f"`info/flag/<quantity>/<estimator>`): {int(flagged.sum())}{of}, in {with_flags} of {len(flagged)} "
            "trials (`info flagged` column: per cell, summed over seeds)")


def plane_display(summary: pd.DataFrame, keys: list[str], ci: str, pm: str = "±") -> pd.DataFrame:
    """The information-plane quantities at the final epoch, per cell: mean ± 95 % CI over seeds.

    The quantities are those the plane figure may draw (analysis.plots.PLANE_ESTIMATORS: noise-regularised MIs and
    bounded lower bounds); empty when the study logged none.
    """
    from analysis.plots import PLANE_X, PLANE_Y, parse_info, plane_rank

    quantities = set(PLANE_X) | set(PLANE_Y)
    cols = []
    for c in summary.columns:
        if c.startswith("final/info/") and c.endswith("_mean"):
            metric = c.removeprefix("final/").removesuffix("_mean")
            parsed = parse_info(metric)
            if parsed and parsed[0] in quantities and plane_rank(parsed[1]) is not None:
                cols.append(f"final/{metric}")
    if not cols:
        return pd.DataFrame()
    out = summary_display(summary, keys, [], ci, pm=pm)
    out = out.drop(columns=[c for c in ("failed", "running") if c in out])
    for col in sorted(cols):
        out[col.removeprefix("final/info/")] = [
            fmt_ci(r[f"{col}_mean"], r[f"{col}_ci95_low"], r[f"{col}_ci95_high"], r[f"{col}_n"], ci, pm=pm)
            for _, r in summary.iterrows()
        ]
    return out


def ci_phrase(ci: str, n_resamples: int) -> str:
    if ci == "t":
        return "mean ± half-width of the 95 % Student-t interval over seeds (t quantile with n-1 dof)"
    return f"mean [2.5 %, 97.5 %] percentile bootstrap interval over seeds ({n_resamples} resamples)"


def problems_table(runs: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Failed and running trials (not superseded by a later finished run), for the summary's list."""
    bad = runs[(runs["state"] != "finished") & ~runs["superseded"]]
    return pd.DataFrame({
        "run": bad["run_name"].astype(str),
        "run_id": bad["run_id"].astype(str),
        "state": bad["state"].astype(str),
        "mlflow status": bad["mlflow_status"].astype(str),
        "seed": bad["seed"].map(fmt_num),
        "epochs logged": bad["n_epochs"].map(fmt_num),
        "error": bad["error"].map(lambda e: DASH if e is None or (isinstance(e, float) and math.isnan(e))
                                  else " ".join(str(e).split())[:160]),
    })


def summary_markdown(summary, runs, keys, main_cols, ci, n_resamples, header: dict, notes: list[str]) -> str:
    fixed = constant_keys(summary, keys)
    counts = runs["state"].value_counts()
    lines = [f"# Study `{header['study']}`: summary", ""]
    lines.append(f"- tracking store: `{header['tracking_uri']}` (experiment {header['experiment_id']})")
    lines.append(
        f"- trials: {len(runs)} runs ({int(counts.get('finished', 0))} finished, "
        f"{int(counts.get('failed', 0))} failed, "
        f"{int(counts.get('running', 0))} running; {int(runs['superseded'].sum())} superseded), "
        f"{len(summary)} cells"
    )
    lines.append(f"- values: final value (last logged epoch) of each metric; {ci_phrase(ci, n_resamples)}")
    lines.append("- `n`: finished seeds aggregated in the cell; a cell with n=1 has no CI (\"n=1, no CI\")")
    if fixed:
        lines.append("- fixed in this study: " + ", ".join(f"{short_name(k)} = {fmt_key(v)}" for k, v in fixed.items()))
    flag_text = flagged_line(runs)
    if flag_text:
        lines.append(flag_text)
    lines += ["", to_markdown(summary_display(summary, keys, main_cols, ci))]
    plane = plane_display(summary, keys, ci)
    if not plane.empty:
        lines += ["## Information plane (final epoch)", "",
                  "Quantities finite by definition (noise-regularised MIs, bounded lower bounds); "
                  f"{ci_phrase(ci, n_resamples)}. Estimator error at these dimensions and sample sizes: "
                  "docs/information.md, section 5c.", "", to_markdown(plane)]
    probs = problems_table(runs, keys)
    lines.append(f"## Failed and running trials ({len(probs)})")
    lines.append("")
    if len(probs):
        lines.append("Counted per cell in `n_failed` / `n_running`, never aggregated.")
        lines.append("")
        lines.append(to_markdown(probs))
    else:
        lines.append("None: every trial finished.")
        lines.append("")
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def summary_latex(summary, keys, main_cols, ci, n_resamples, study: str) -> str:
    fixed = constant_keys(summary, keys)
    shown = summary_display(summary, keys, main_cols, ci)
    cap = f"Study {study}: {ci_phrase(ci, n_resamples)}; n = seeds per cell"
    if fixed:
        cap += "; fixed: " + ", ".join(f"{short_name(k)} = {fmt_key(v)}" for k, v in fixed.items())
    return to_latex(shown, cap, f"tab:{_label(study)}-summary")


def _label(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text)


# -- comparison --------------------------------------------------------------------------------------------------


def compare_display(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    cell = [k for k in keys if k not in ("model.variant", "variant") and k in table]
    fixed = constant_keys(table, cell)
    out = pd.DataFrame({"variant": table["variant"].astype(str)})
    for k in cell:
        if k not in fixed:
            out[short_name(k)] = table[k].map(fmt_key)
    out["metric"] = table["metric"].str.removeprefix("final/")
    out["n"] = table["n_pairs"].astype(str)
    out["Δ mean [95 % CI]"] = [
        DASH if math.isnan(r.mean_diff) else
        (f"{r.mean_diff:+.3f}" if math.isnan(r.diff_ci95_low) else
         f"{r.mean_diff:+.3f} [{r.diff_ci95_low:+.3f}, {r.diff_ci95_high:+.3f}]")
        for r in table.itertuples()
    ]
    if "verdict" in table:
        out["90 % CI"] = [DASH if math.isnan(lo) else f"[{lo:+.3f}, {hi:+.3f}]"
                          for lo, hi in zip(table["diff_ci90_low"], table["diff_ci90_high"])]
        out["δ"] = table["sesoi"].map(lambda d: DASH if d is None or math.isnan(d) else f"{d:g}")
        out["verdict"] = table["verdict"].astype(str)
        # inf: past verdicts.SEEDS_NEEDED_CAP (a target within rounding of the estimate): no study will run it
    out["seeds needed"] = table["seeds_needed"].map(lambda n: DASH if math.isnan(n) else "∞" if math.isinf(n)
                                                    else str(int(n)))
    star = lambda p: "*" if (not math.isnan(p) and p < 0.05) else ""  # noqa: E731
    out["p (t)"] = table["p_ttest"].map(fmt_p)
    out["p (t, Holm)"] = [fmt_p(p) + star(p) for p in table["p_ttest_holm"]]
    out["p (Wilcoxon)"] = table["p_wilcoxon"].map(fmt_p)
    out["p (W, Holm)"] = [fmt_p(p) + star(p) for p in table["p_wilcoxon_holm"]]
    out["note"] = table["note"].fillna("").astype(str)
    return out


def family_line(size: int, family: str, definition: str) -> str:
    """The sentence every tests table states above its rows: the Holm family exactly as the code grouped it."""
    return f"Holm over {size} test{'s' if size != 1 else ''} within `{family}`: {definition}"


def verdict_lines(sesoi_source: str) -> list[str]:
    """The verdict legend shared by the reports (DESIGN.md, "How a study settles a question")."""
    return [
        "- verdict (per contrast, its own unadjusted intervals; analysis.verdicts): *gain* / *loss* = the 95 % CI lies "
        "above / below 0; *equivalent* = TOST at alpha 0.05 passes (the 90 % CI inside ±δ); *inconclusive* = none "
        "of these (never read as \"no effect\"); *undetermined* = fewer than 3 seeds or zero variance. A gain or "
        "loss whose 90 % CI is also inside ±δ is reported as the sign, noted \"smaller than delta\"",
        "- seeds needed (inconclusive only): a planning estimate, the total seeds at which the observed sd would give "
        "a 95 % CI half-width of |estimate| (to exclude 0) or a 90 % half-width of δ − |estimate| (equivalence), "
        "whichever is fewer; it assumes the estimate and sd hold, and stopping when a verdict appears needs an "
        "alpha-spending correction",
        f"- δ (smallest effect of interest): {sesoi_source}",
    ]


def compare_markdown(table, keys, baseline, header: dict, notes: list[str], main_cols: list[str],
                     sesoi_source: str = "none declared: equivalence not tested") -> str:
    against = f"the baseline `{baseline}`" if baseline else "a baseline"
    lines = [f"# Study `{header['study']}`: variants against {against}", ""]
    if table.empty:
        lines += ["No comparison was possible.", ""] + [f"- {n}" for n in notes] + [""]
        return "\n".join(lines)
    lines += [
        "- pairs: same cell (every key but the variant) and same seed; Δ = variant - baseline, final values",
        "- tests: paired t-test (scipy.stats.ttest_rel) and Wilcoxon signed-rank (scipy.stats.wilcoxon), two-sided;",
        "  Holm correction within each metric's family, stated above its table; * : adjusted p < 0.05",
        *verdict_lines(sesoi_source),
        "- with 3 seeds the smallest possible two-sided Wilcoxon p is 0.25: only the t-test can reach significance",
        "- full table (every compared metric, every column): compare.csv / compare.parquet",
        "",
    ]
    cell = [k for k in keys if k not in ("model.variant", "variant") and k in table]
    fixed = constant_keys(table, cell)
    if fixed:
        lines += ["fixed: " + ", ".join(f"{short_name(k)} = {fmt_key(v)}" for k, v in fixed.items()), ""]
    unmatched = table[table["n_pairs"] == 0]
    if len(unmatched):
        lines += [f"{len(unmatched)} row(s) without a single pair (no baseline trial of that cell and seed) are left "
                  "out below; compare.csv lists them with their note.", ""]
    shown = [m for m in main_cols if m in set(table["metric"])] or sorted(table["metric"].unique())
    for metric in shown:
        sub = table[(table["metric"] == metric) & (table["n_pairs"] > 0)]
        shown_table = compare_display(sub, keys).drop(columns="metric")
        fam = table[table["metric"] == metric]
        size = int(fam["family_size"].iloc[0]) if "family_size" in fam and len(fam) else \
            int(fam["p_ttest"].notna().sum())
        lines += [f"## {metric.removeprefix('final/')}", "",
                  family_line(size, metric.removeprefix("final/"), "every t-test of this metric in this comparison "
                              f"({fam['variant'].nunique()} variant(s) against the baseline x every cell; rows "
                              "without a test are left out)"), "", to_markdown(shown_table)]
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def compare_latex(table, keys, baseline, study: str, main_cols: list[str]) -> str:
    if table.empty:
        return f"% study {study}: no comparison against {baseline}\n"
    shown = [m for m in main_cols if m in set(table["metric"])] or sorted(table["metric"].unique())
    sub = table[table["metric"].isin(shown) & (table["n_pairs"] > 0)]
    disp = compare_display(sub, keys).drop(columns="note")
    cap = (f"Study {study}: paired differences against {baseline} (same cell and seed); p-values of the paired "
           "t-test and the Wilcoxon signed-rank test, Holm-corrected per metric; * adjusted p < 0.05")
    return to_latex(disp, cap, f"tab:{_label(study)}-compare")


# -- exchange rate -----------------------------------------------------------------------------------------------


def exchange_markdown(table, keys, header: dict, notes: list[str]) -> str:
    lines = [f"# Study `{header['study']}`: exchange rate of unpaired samples for pairs", ""]
    lines += [
        "R = (dA/dP) / (dA/dU): how many unpaired samples (per modality) buy the same gain in the metric A as one",
        "more pair, from the bilinear interpolation of the seed-mean grid A(p, N) over each rectangle",
        "[p_low, p_high] x [N_low, N_high] (P = pN pairs, U = (1-p)N unpaired). Marginal values per 1,000 samples,",
        "CI over seeds (t). Method: docs/analysis.md, section \"Exchange rate\".",
        "",
    ]
    if table.empty:
        lines += ["No estimate was possible."] + [f"- {n}" for n in notes] + [""]
        return "\n".join(lines)
    group = [k for k in keys if k in table and k not in ("regime.pairing_ratio", "regime.train_size")]
    fixed = constant_keys(table, group)
    for metric, sub in table.groupby("metric", sort=False):
        disp = pd.DataFrame({"variant": sub["variant"].astype(str) if "variant" in sub else sub["model.variant"]})
        for k in group:
            if k not in fixed and k not in ("model.variant", "variant"):
                disp[short_name(k)] = sub[k].map(fmt_key)
        disp["p"] = [f"{a:g}–{b:g}" for a, b in zip(sub["p_low"], sub["p_high"])]
        disp["N"] = [f"{a}–{b}" for a, b in zip(sub["N_low"], sub["N_high"])]
        for col, name in (("dA_dP_per_1k", "dA/dP per 1k"), ("dA_dU_per_1k", "dA/dU per 1k")):
            disp[name] = [
                f"{m:.4f}" + ("" if math.isnan(lo) else f" [{lo:.4f}, {hi:.4f}]")
                for m, lo, hi in zip(sub[col], sub[f"{col}_ci95_low"], sub[f"{col}_ci95_high"])
            ]
        disp["R (unpaired per pair)"] = sub["exchange_rate"].map(lambda r: DASH if math.isnan(r) else f"{r:.3g}")
        disp["seeds"] = sub["n_seeds"].astype(str)
        disp["note"] = sub["note"].fillna("").astype(str)
        lines += [f"## {metric.removeprefix('final/')}", ""]
        if fixed:
            lines += ["fixed: " + ", ".join(f"{short_name(k)} = {fmt_key(v)}" for k, v in fixed.items()), ""]
        lines.append(to_markdown(disp))
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


# -- verdict tables (analysis.boost, analysis.ablation) ------------------------------------------------------------


def _ci_text(low, high) -> str:
    return DASH if low is None or math.isnan(low) else f"[{low:+.3f}, {high:+.3f}]"


def verdict_display(table: pd.DataFrame, key_cols: list[str]) -> pd.DataFrame:
    """A verdict table's curated columns: keys, estimate [95 % CI], 90 % CI, n, δ, verdict, p, Holm p, seeds
    needed, note (the CSV has every column)."""
    out = pd.DataFrame(index=table.index)
    for k in key_cols:
        if k in table:
            out[short_name(k) if "." in k else k] = table[k].map(fmt_key)
    out["n"] = table["n"].astype(int).astype(str)
    out["estimate [95 % CI]"] = [DASH if math.isnan(e) else f"{e:+.3f} {_ci_text(lo, hi)}".replace(f" {DASH}", "")
                                 for e, lo, hi in zip(table["estimate"], table["ci95_low"], table["ci95_high"])]
    out["90 % CI"] = [_ci_text(lo, hi) for lo, hi in zip(table["ci90_low"], table["ci90_high"])]
    out["δ"] = table["sesoi"].map(lambda d: DASH if d is None or math.isnan(d) else f"{d:.3g}")
    out["verdict"] = table["verdict"].astype(str)
    out["p"] = table["p"].map(fmt_p)
    out["Holm p"] = table["p_holm"].map(fmt_p)
    # inf: past verdicts.SEEDS_NEEDED_CAP (a target within rounding of the estimate): no study will run it
    out["seeds needed"] = table["seeds_needed"].map(lambda n: DASH if math.isnan(n) else "∞" if math.isinf(n)
                                                    else str(int(n)))
    out["note"] = table["note"].fillna("").astype(str)
    return out.reset_index(drop=True)


def verdict_markdown(table: pd.DataFrame, title: str, key_cols: list[str], family_definition: str,
                     sesoi_source: str, notes: list[str] = ()) -> str:
    """One section per Holm family, each opened by the sentence that states it ("Holm over N tests within ...")."""
    lines = [f"# {title}", ""]
    lines += [n if n.startswith("- ") else f"- {n}" for n in notes]
    lines += verdict_lines(sesoi_source)
    lines += ["- p: two-sided paired t-test of mean 0 (NaN where the verdict is undetermined); Holm p: adjusted "
              "within the family stated above each table", ""]
    if table.empty:
        return "\n".join(lines + ["_(no rows)_", ""])
    for family, sub in table.groupby("family", sort=False):
        lines += [f"## {family}", "", family_line(int(sub["family_size"].iloc[0]), family, family_definition), "",
                  to_markdown(verdict_display(sub, key_cols))]
    return "\n".join(lines)
