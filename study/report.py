"""The study report: ``python -m study.report OUTPUT [--format html|md]``.

Builds ``OUTPUT/report/report.html`` (one page, inline CSS, no scripts, no network) and
``OUTPUT/report/report.md`` from whatever the study folder holds, with the figures as PNG files in
``OUTPUT/report/img/`` and the analysis tables as CSV in ``OUTPUT/report/tables/``:

1. status: which tables exist, what is missing and what that leaves out;
2. summary tables: per dataset, the selected models (λ, validation scores, test accuracy and
   accuracy under noise/occlusion) and the explanation metrics per attribution method, with
   95% bootstrap confidence intervals and the best value per column marked (bold and ★);
3. paired comparisons of every penalty with the ``none`` baseline (Wilcoxon, Holm-corrected);
4. saliency gallery: the same test images for every penalty × method, one shared colour scale
   per method (needs the selected models' weights and the data; otherwise the report says so);
5. MoRF curves; ROAR curves with the random-ranking control; accuracy (and explanation
   stability) under Gaussian noise and square-block occlusion;
6. the search: Pareto fronts of validation accuracy vs explanation score, and λ sweeps;
7. the configuration, the package versions and the git commit(s).

Figures are drawn with matplotlib's Agg canvas (no display needed), with line styles and
markers as well as colours per penalty (readable in black-and-white print), and axis labels that
give units and the better direction. :func:`build_report` is what ``study.launch`` calls (through
:func:`run`) at the end of a study; it works on partial studies (a search without evaluation, a
study still running) and never fails for a missing table or figure: it says what is missing.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from study import analysis as A
from study import loading, penalty_curves, replicates
from study.document import (
    FORMATS, cli_build, Doc, Figure, Figures, Table, best_flags, direction_arrow, figure_legend,
    fmt_ci, fmt_num, fmt_pct, grid_shape, hide_unused_axes, log_x_axis, metric_label, render_html, render_md, style,
    write_text_atomic,
)
from foundations import schemas as R
from foundations.labels import CLASS_NAMES

REPORT_DIR = "report"

METHOD_LABELS = {
    "saliency": "Saliency (|∂f/∂x|)",
    "integrated_gradients": "Integrated Gradients",
    "input_x_gradient": "Input × Gradient",
    "smoothgrad": "SmoothGrad",
    "deeplift": "DeepLift",
    "deeplift_shap": "DeepLiftShap",
    "lrp": "LRP (ε)",
    "kernel_shap": "KernelShap",
    "occlusion": "Occlusion",
    "grad_cam": "GradCAM (1st conv)",
    "random": "random ranking",
}
def class_name(dataset: str, label: int) -> str:
    names = CLASS_NAMES.get(dataset) if dataset != "mnist" else None
    return (
        names[label]
        if names and 0 <= label < len(names)
        else (f"digit {label}" if dataset == "mnist" else f"class {label}")
    )


SIGNED_METHODS = ("integrated_gradients", "input_x_gradient")



# --------------------------------------------------------------------------- plotting helpers
def _methods_of(df: pd.DataFrame, exclude: Sequence[str] = ("", A.RANDOM_METHOD)) -> list[str]:
    order = list(METHOD_LABELS)
    ms = [m for m in df["method"].astype(str).unique() if m not in exclude]
    return sorted(ms, key=lambda m: (order.index(m) if m in order else len(order), m))


def _model_label(s: A.Study, dataset: str, penalty: str, model_id: str, many: bool) -> str:
    return f"{penalty} ({model_id})" if many else penalty


def _curve_lines(ax, s: A.Study, c: pd.DataFrame, order: list[str], scale: float = 1.0, errors: bool = False) -> None:
    many = c.groupby("penalty")["model_id"].nunique().max() > 1 if len(c) else False
    for penalty in order:
        for model_id, g in c[c["penalty"] == penalty].groupby("model_id"):
            g = g.sort_values("x")
            st = style(penalty, order)
            label = _model_label(s, g["dataset"].iloc[0], penalty, model_id, many)
            every = max(1, len(g) // 8)  # markers on ~8 points: dense curves stay readable
            if errors and (g["y_high"] > g["y_low"]).any():
                ax.errorbar(
                    g["x"],
                    g["y"] * scale,
                    yerr=[(g["y"] - g["y_low"]) * scale, (g["y_high"] - g["y"]) * scale],
                    capsize=2,
                    lw=1.3,
                    ms=5,
                    label=label,
                    markevery=every,
                    **st,
                )
            else:
                ax.plot(g["x"], g["y"] * scale, lw=1.3, ms=5, label=label, markevery=every, **st)


# --------------------------------------------------------------------------- sections
def _status(doc: Doc, s: A.Study) -> None:
    doc.h2("Status of the study", "status")
    t = s.trials
    n_ok = int((t["status"] == "ok").sum())
    n_err = int((t["status"] == "error").sum())
    n_stop = len(t) - n_ok - n_err
    models = s.evaluation[["dataset", "penalty", "model_id"]].drop_duplicates()
    lines = [
        f"Datasets: {', '.join(s.datasets) or '–'}; penalties: {', '.join(s.penalties) or '–'}.",
        f"Search: {len(t)} trials ({n_ok} finished, {n_stop} stopped early, {n_err} failed); "
        f"{len(s.selected)} selected model(s).",
        f"Evaluation: {len(models)} model(s) with per-sample metrics "
        f"({int((s.evaluation['sample'] >= 0).sum())} per-sample rows); ROAR: {len(s.roar)} retrained models.",
    ]
    for ln in lines:
        doc.p(ln)
    present = [t for t in loading.TABLES if t not in s.missing]
    doc.p(f"Tables present: {', '.join(present) or 'none'}; missing: {', '.join(s.missing) or 'none'}.")
    for n in s.notes():
        doc.note(n)


def _summary_section(doc: Doc, s: A.Study, summ: pd.DataFrame, figs: Figures) -> None:
    doc.h2("Summary", "summary")
    doc.p(
        "Mean over the evaluated test images, with its 95% bootstrap confidence interval in brackets "
        "(percentile bootstrap of the mean, seeded; ROAR: over retraining repeats). ↑ higher is better, "
        "↓ lower is better; **bold ★** marks the best value of each column (per dataset, and per attribution "
        "method in the explanation table). λ and the validation scores are those of the selected trial."
    )
    if summ.empty and s.selected.empty:
        doc.note("Nothing to summarise yet: no selected model and no evaluation results.")
        return
    for dataset in s.datasets:
        doc.h3(f"{dataset}: selected models")
        _model_table(doc, s, summ, dataset)
        sd = summ[(summ["dataset"] == dataset) & (summ["method"] != "")]
        if sd.empty:
            doc.note(f"{dataset}: no explanation metrics yet (evaluation table missing or empty for this dataset).")
            continue
        doc.h3(f"{dataset}: explanation metrics per attribution method")
        _explanation_table(doc, s, sd)


def _model_table(doc: Doc, s: A.Study, summ: pd.DataFrame, dataset: str) -> None:
    sel = s.selected[s.selected["dataset"] == dataset].drop_duplicates("penalty", keep="last").set_index("penalty")
    sd = summ[summ["dataset"] == dataset]
    model_metrics = [m for m in ("full_test_accuracy", "gaussian_auc", "block_auc")
                     if (sd["method"].eq("") & sd["metric"].eq(m)).any()]
    penalties = [p for p in s.penalties if p in sel.index or p in set(sd["penalty"])]
    if not penalties:
        doc.note(f"{dataset}: no selected model.")
        return
    header = ["penalty", "λ", "val. acc. (%) ↑", "val. MoRF ↑", "test acc., explained images (%) ↑"] + [
        f"{metric_label(m)}{' (%)' if m == 'full_test_accuracy' else ''}{direction_arrow(A.higher_is_better(m))}"
        for m in model_metrics
    ]
    cols: list[list[tuple[str, float]]] = []
    flagged: list[str] = []
    for p in penalties:
        r = sel.loc[p] if p in sel.index else None
        outside = (
            r is not None
            and p != "none"
            and r["within_tolerance"] is not None
            and not bool(r["within_tolerance"])
            and np.isfinite(r["baseline_val_acc"])
        )
        flagged += [p] if outside else []
        lam = fmt_num(r["lam"]) if r is not None and p != "none" else "–"
        row = [(f"{p} †" if outside else p, np.nan), (lam, np.nan)]
        row.append((fmt_pct(r["val_acc"]) if r is not None else "–", r["val_acc"] if r is not None else np.nan))
        row.append((fmt_num(r["val_morf"]) if r is not None else "–", r["val_morf"] if r is not None else np.nan))
        acc = sd[sd["penalty"] == p][["test_acc", "test_acc_ci_low", "test_acc_ci_high"]].dropna()
        if len(acc):
            a = acc.iloc[0]
            row.append((fmt_ci(a["test_acc"], a["test_acc_ci_low"], a["test_acc_ci_high"], 100), a["test_acc"]))
        else:
            row.append(("–", np.nan))
        for m in model_metrics:
            q = sd[(sd["penalty"] == p) & (sd["method"] == "") & (sd["metric"] == m)]
            scale = 100 if m == "full_test_accuracy" else 1  # a percentage, as the other accuracies
            row.append((fmt_ci(*q[["mean", "ci_low", "ci_high"]].iloc[0], scale), q["mean"].iloc[0]) if len(q)
                       else ("–", np.nan))
        cols.append(row)
    dirs = [None, None, True, True, True] + [A.higher_is_better(m) for m in model_metrics]
    bold = [[False] * len(header) for _ in cols]
    for j, hib in enumerate(dirs):
        for i, f in enumerate(best_flags([c[j][1] for c in cols], hib)):
            bold[i][j] = f
    rows = [[c[0] for c in row] for row in cols]
    if not (sd["test_acc"].notna().any()):
        doc.note(
            "Test accuracy is not available: the evaluation table has no per-sample `accuracy` rows "
            '(metric `accuracy`, method "") for these models.'
        )
    doc.table(Table(header, rows, bold, caption=f"{dataset}: the model selected per penalty"))
    if flagged:
        tol = sel["tolerance"].dropna()
        doc.note(
            f"† selected outside the tolerance ({', '.join(flagged)}): no trial of this penalty reached the best "
            f"`none` validation accuracy minus the tolerance ({fmt_pct(tol.iloc[0]) if len(tol) else '?'} points), "
            "so the most accurate trial was taken; compare its explanations with that in mind."
        )
    if len(sel) and "none" not in sel.index and not np.isfinite(sel["baseline_val_acc"]).any() and has_baseline(s):
        doc.note(
            "No `none` baseline in this search: the selection had no accuracy to stay within, so "
            "within_tolerance is not meaningful here."
        )


def _explanation_table(doc: Doc, s: A.Study, sd: pd.DataFrame) -> None:
    sd = sd[sd["level"].isna()]
    metrics = [
        m
        for m in ("morf", "faithfulness_nested", "faithfulness_correlation", "complexity", "roar")
        if m in set(sd["metric"])
    ]
    metrics += sorted(set(sd["metric"]) - set(metrics))
    header = ["method", "penalty"] + [f"{metric_label(m)}{direction_arrow(A.higher_is_better(m))}" for m in metrics]
    rows, bold = [], []
    # the random-attribution control sits under every row (its `random_mean`: the same metric on random maps
    # of the same model; for ROAR the dataset's random-ranking retrains), not in a block of its own
    methods = _methods_of(sd, exclude=("", A.RANDOM_METHOD)) or [A.RANDOM_METHOD]
    for method in dict.fromkeys(methods):
        block = sd[sd["method"] == method]
        keys = [(p, mid) for p in s.penalties for mid in sorted(block[block["penalty"] == p]["model_id"].unique())]
        many = len({k[0] for k in keys}) < len(keys)
        vals = {m: [] for m in metrics}
        cells = []
        for p, mid in keys:
            r = block[(block["penalty"] == p) & (block["model_id"] == mid)].set_index("metric")
            row = [METHOD_LABELS.get(method, method), f"{p} ({mid})" if many else p]
            for m in metrics:
                if m in r.index:
                    q = r.loc[m]
                    row.append(fmt_ci(q["mean"], q["ci_low"], q["ci_high"]))
                    vals[m].append(q["mean"])
                else:
                    row.append("–")
                    vals[m].append(np.nan)
            cells.append(row)
        # the random control does not depend on the model: no "best" among its rows
        flags = {m: best_flags(vals[m], None if method == A.RANDOM_METHOD else A.higher_is_better(m)) for m in metrics}
        for i, (row, (p, mid)) in enumerate(zip(cells, keys)):
            rows.append(row)
            bold.append([False, False] + [flags[m][i] for m in metrics])
            if method == A.RANDOM_METHOD:
                continue
            r = block[(block["penalty"] == p) & (block["model_id"] == mid)].set_index("metric")
            ctrl = [fmt_num(r.loc[m, "random_mean"]) if m in r.index and "random_mean" in r else "–" for m in metrics]
            rows.append(["↳ random control", ""] + ctrl)
            bold.append([False] * (2 + len(metrics)))
    doc.table(Table(header, rows, bold, caption="explanation metrics per attribution method; under each model its "
                                                "random control: the same metric on uniform random maps of the same "
                                                "model (ROAR: the dataset's random-ranking retrains)"))


def _compare_section(doc: Doc, s: A.Study, comp: pd.DataFrame, baseline: str) -> None:
    doc.h2(f"Penalties versus the `{baseline}` baseline", "compare")
    if comp.empty:
        doc.note(
            f"No paired comparison: it needs per-sample evaluation rows of the `{baseline}` baseline and of at "
            "least one penalty."
        )
        return
    corr = comp["correction"].iloc[0]
    doc.p(
        f"Per-sample values paired by test image (ROAR: by repeat); Δ = penalty − {baseline} with a 95% bootstrap CI; "
        f"two-sided Wilcoxon signed-rank test, p-values corrected with {'Holm' if corr == 'holm' else corr} across "
        f"all {len(comp)} comparisons; r = matched-pairs rank-biserial correlation (positive: penalty higher), "
        "d = Cohen's d_z. Verdict: better/worse (in the metric's direction) when significant at 0.05, else n.s."
    )
    sig = comp[comp["significant"]]
    doc.p(
        f"{len(sig)} of {len(comp)} comparisons are significant after correction "
        f"({int(sig['improved'].eq(True).sum())} better, {int(sig['improved'].eq(False).sum())} worse)."
    )
    header = ["dataset", "method", "metric", "penalty", "n", "Δ mean [95% CI]", "p (adj.)", "r", "d", "verdict"]
    rows, bold = [], []
    for _, r in comp.iterrows():
        verdict = "n.s."
        if r["significant"]:
            verdict = {True: "better", False: "worse"}.get(r["improved"], "differs")
        rows.append(
            [
                r["dataset"],
                METHOD_LABELS.get(r["method"], r["method"] or "(model)"),
                f"{metric_label(r['metric'])}{direction_arrow(r['higher_is_better'])}",
                r["penalty"],
                str(r["n"]),
                fmt_ci(r["mean_diff"], r["diff_ci_low"], r["diff_ci_high"]),
                fmt_num(r["p_adjusted"]),
                fmt_num(r["rank_biserial"], 2),
                fmt_num(r["cohens_d"], 2),
                verdict,
            ]
        )
        bold.append([False] * 9 + [bool(r["significant"])])
    sig_rows = [i for i, b in enumerate(bold) if b[-1]]
    if sig_rows:  # shown first, in the open; the whole list stays below, collapsed
        doc.table(
            Table(
                header,
                [rows[i] for i in sig_rows],
                [bold[i] for i in sig_rows],
                caption=f"the {len(sig_rows)} significant comparisons (after correction)",
                mark="",
            )
        )
    doc.table(
        Table(header, rows, bold, caption="paired comparisons with the baseline; bold: significant", mark=""),
        collapsed=f"all {len(comp)} comparisons",
    )


def _gallery_section(doc: Doc, s: A.Study, figs: Figures, n_images: int) -> None:
    doc.h2("Saliency gallery", "gallery")
    if n_images <= 0:
        doc.note("The gallery was not requested (--images 0).")
        return
    if s.selected.empty:
        doc.note("No gallery: no model has been selected yet (the `selected` table is missing).")
        return
    for dataset, penalties in _gallery_from_table(doc, s, figs, n_images).items():
        doc.note(
            f"No gallery for {dataset}: the `gallery` table holds no maps of its selected model(s) "
            f"({', '.join(penalties)}); the evaluation stage writes them (`python -m study.launch --output "
            f"{s.path} --resume --stage evaluate`)."
        )


GALLERY_TEXT = (
    "explained by each selected model, towards the class the model predicts (docs/spec.md §5); a white box names "
    "the prediction when it is wrong. One colour scale per figure, shared by all penalties (clipped at the "
    "99.5th percentile of the maps' magnitudes): a penalty that shrinks the gradients shows darker maps. "
    "Unsigned methods (Saliency, SmoothGrad): dark = 0, bright = large. Signed methods: red positive, blue "
    "negative, white 0."
)


def _gallery_from_table(doc: Doc, s: A.Study, figs: Figures, n_images: int) -> dict[str, list[str]]:
    """Plot the ``gallery`` table (written by the evaluation stage: no weights, data or torch needed here),
    one figure per dataset and method; returns, per dataset, the selected models it holds no maps of."""
    missing, intro = {}, False
    for dataset in s.datasets:
        sel = s.selected[s.selected["dataset"] == dataset].drop_duplicates("penalty", keep="last")
        if sel.empty:
            continue
        g = s.gallery[(s.gallery["dataset"] == dataset) & (s.gallery["position"] < n_images)]
        models, rows = [], {}
        for penalty in [p for p in s.penalties if p in set(sel["penalty"])]:
            r = sel[sel["penalty"] == penalty].iloc[0]
            v = g[g["model_id"] == f"{r['penalty']}-{r['trial_id']}"].sort_values("position")
            if v.empty:
                missing.setdefault(dataset, []).append(penalty)
                continue
            rows[penalty] = v
            models.append((penalty, r))
        if not rows:
            continue
        first = next(iter(rows.values()))
        order = list((s.config.get("evaluation") or {}).get("methods") or []) + list(dict.fromkeys(first["method"]))
        methods = [
            m
            for m in dict.fromkeys(order)
            if m != A.RANDOM_METHOD and all((v["method"] == m).any() for v in rows.values())
        ]
        ref = first[first["method"] == methods[0]] if methods else first.iloc[:0]
        if ref.empty:
            missing.setdefault(dataset, []).extend(rows)
            continue
        if not intro:
            doc.p(f"The first {len(ref)} evaluated test images (the same for every model) " + GALLERY_TEXT)
            intro = True
        images = np.stack([np.asarray(v, np.float32).reshape(28, 28) for v in ref["image"]])
        labels = ref["label"].to_numpy()
        preds = {p: v[v["method"] == methods[0]]["prediction"].to_numpy() for p, v in rows.items()}
        for method in methods:
            maps = np.stack(
                [
                    np.stack(
                        [np.asarray(m, np.float32).reshape(28, 28) for m in rows[p][rows[p]["method"] == method]["map"]]
                    )
                    for p, _ in models
                ]
            )
            path = _gallery_figure(figs, dataset, method, images, labels, models, preds, maps)
            doc.figure(
                Figure(
                    path,
                    f"{dataset}, {METHOD_LABELS.get(method, method)}: rows = penalties (λ of the "
                    f"selected model), columns = test images; shared colour scale.",
                    f"saliency gallery {dataset} {method}",
                )
            )
    return missing


def _gallery_figure(figs: Figures, dataset, method, images, labels, models, preds, maps) -> Path:
    n_img, n_rows = images.shape[0], len(models) + 1
    signed = method in SIGNED_METHODS or (maps < 0).any()
    v = float(np.percentile(np.abs(maps), 99.5)) or 1.0
    kw = dict(cmap="RdBu_r", vmin=-v, vmax=v) if signed else dict(cmap="magma", vmin=0.0, vmax=v)
    # fixed margins instead of constrained layout: many small axes make the layout solver slow
    w, h = 1.15 * n_img + 2.4, 1.15 * n_rows + 0.6
    fig, axes = figs.new(n_rows, n_img, w, h, layout=None)
    fig.subplots_adjust(left=1.0 / w, right=1 - 1.3 / w, bottom=0.1 / h, top=1 - 0.55 / h, wspace=0.06, hspace=0.08)
    for j in range(n_img):
        ax = axes[0, j]
        ax.imshow(images[j], cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(class_name(dataset, int(labels[j])), fontsize=8)
    axes[0, 0].set_ylabel("input", fontsize=8, rotation=0, ha="right", va="center")
    im = None
    for i, (penalty, row) in enumerate(models, start=1):
        lam = "" if penalty == "none" else f"\nλ={float(row['lam']):.3g}"
        axes[i, 0].set_ylabel(f"{penalty}{lam}", fontsize=8, rotation=0, ha="right", va="center")
        for j in range(n_img):
            ax = axes[i, j]
            im = ax.imshow(maps[i - 1, j], interpolation="nearest", **kw)
            pred = int(preds[penalty][j])
            if pred != int(labels[j]):
                ax.text(
                    1,
                    3,
                    f"pred {pred}",
                    fontsize=6,
                    color="black",
                    va="top",
                    bbox=dict(facecolor="white", edgecolor="black", pad=1, lw=0.5),
                )
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    cax = fig.add_axes((1 - 1.1 / w, 0.15, 0.12 / w, 0.6))
    cb = fig.colorbar(im, cax=cax)
    cb.ax.tick_params(labelsize=7)
    cb.set_label(f"{METHOD_LABELS.get(method, method)} attribution\n(shared scale)", fontsize=8)
    fig.suptitle(f"{dataset}: {METHOD_LABELS.get(method, method)}", fontsize=10)
    return figs.save(fig, f"gallery_{dataset}_{method}")


def _morf_section(doc: Doc, s: A.Study, figs: Figures) -> None:
    doc.h2("MoRF curves", "morf")
    c = A.curve(s, "morf")
    if c.empty:
        doc.note(
            "No MoRF curves: neither per-level `morf_curve` rows in the evaluation table nor a `morf` curve in "
            "the curves table."
        )
        return
    doc.p(
        "Most relevant first out: the pixels the map ranks highest are set to 0 first; y = probability of the "
        "originally predicted class relative to the clean image, mean over test images. A faster drop (lower "
        "curve, larger area above it = MoRF score) means a more faithful explanation."
    )
    for dataset in s.datasets:
        cd = c[c["dataset"] == dataset]
        methods = _methods_of(cd)
        if not methods:
            continue
        nr, nc = grid_shape(len(methods))
        fig, axes = figs.new(nr, nc, 3.4 * nc, 2.9 * nr + 0.7, sharey=True)
        for ax, method in zip(axes.ravel(), methods):
            _curve_lines(ax, s, cd[cd["method"] == method], s.penalties)
            ax.set_title(METHOD_LABELS.get(method, method), fontsize=9)
            ax.set_xlabel("fraction of pixels removed\n(most relevant first)", fontsize=8)
            ax.set_ylabel("p(ŷ | masked) / p(ŷ | x)\n(ratio; lower is better)", fontsize=8)
            ax.set_xlim(0, 1)
            ax.grid(alpha=0.3)
        hide_unused_axes(axes, len(methods))
        figure_legend(fig, axes)
        fig.suptitle(f"{dataset}: MoRF curves", fontsize=10)
        path = figs.save(fig, f"morf_{dataset}")
        doc.figure(
            Figure(
                path, f"{dataset}: MoRF curves per attribution method, one line per penalty.", f"MoRF curves {dataset}"
            )
        )
        cross_map_table(doc, s, dataset)


def cross_map_table(doc: Doc, s: A.Study, dataset: str) -> None:
    """The table of MoRF of each penalty's models (rows) with each model's Saliency maps (columns), mean over seeds."""
    m = replicates.cross_map_matrix(s)
    m = m[m["dataset"] == dataset] if len(m) else m
    if m.empty or set(m.columns) <= {"dataset", "penalty", "own", "random"}:  # no other model's maps measured
        return
    cols = [c for c in m.columns if c not in ("dataset", "penalty")]
    names = {"own": "own maps", "random": "random maps (control)"}
    m = m.set_index("penalty").reindex([p for p in s.penalties if p in set(m["penalty"])]).reset_index()
    rows = [[r["penalty"]] + [fmt_num(r[c]) for c in cols] for _, r in m.iterrows()]
    doc.h3(f"{dataset}: whose maps, whose model (MoRF ↑)")
    doc.table(Table(["scored model"] + [names.get(c, f"maps of `{c}`") for c in cols], rows, [], mark="",
                    caption="MoRF of each penalty's models (mean over seeds) when the pixels are ranked by the "
                    "Saliency maps of another model of the same seed: a column that is high for every row credits "
                    "the maps; a row that is high in every column credits the model's sensitivity"))


def _roar_section(doc: Doc, s: A.Study, figs: Figures) -> None:
    doc.h2("ROAR: remove and retrain", "roar")
    c = A.curve(s, "roar")
    if c.empty:
        doc.note("No ROAR results (the `roar` table is missing or empty).")
        return
    doc.p(
        "For each fraction t, the top-t pixels of every training and test image (ranked by the evaluated model's "
        "attribution) are replaced and a fresh unregularised model is retrained; y = its test accuracy (mean over "
        "repeats, bars: min–max). Lower = the attribution found the information the model needs. The grey "
        "dash-dot line with × markers is the random-ranking control (mean over all random runs of the dataset, "
        "light grey band: min–max); a useful attribution stays below it."
    )
    for dataset in s.datasets:
        cd = c[c["dataset"] == dataset]
        methods = _methods_of(cd)
        rnd = cd[cd["method"] == A.RANDOM_METHOD]
        if not methods and rnd.empty:
            continue
        methods = methods or [A.RANDOM_METHOD]
        nr, nc = grid_shape(len(methods))
        fig, axes = figs.new(nr, nc, 3.4 * nc, 2.9 * nr + 0.7, sharey=True)
        ctrl = (
            rnd.groupby("x").agg(y=("y", "mean"), lo=("y_low", "min"), hi=("y_high", "max")).reset_index()
            if len(rnd)
            else None
        )
        for ax, method in zip(axes.ravel(), methods):
            if method != A.RANDOM_METHOD:
                _curve_lines(ax, s, cd[cd["method"] == method], s.penalties, scale=100, errors=True)
            if ctrl is not None:
                ax.fill_between(ctrl["x"], ctrl["lo"] * 100, ctrl["hi"] * 100, color="0.88", lw=0, zorder=0)
                ax.plot(
                    ctrl["x"],
                    ctrl["y"] * 100,
                    color="0.45",
                    ls="-.",
                    marker="x",
                    lw=2,
                    ms=6,
                    label="random ranking (control)",
                )
            ax.set_title(METHOD_LABELS.get(method, method), fontsize=9)
            ax.set_xlabel("fraction of pixels removed, t", fontsize=8)
            ax.set_ylabel("test accuracy after retraining (%)\n(lower is better)", fontsize=8)
            ax.grid(alpha=0.3)
        hide_unused_axes(axes, len(methods))
        figure_legend(fig, axes)
        fig.suptitle(f"{dataset}: ROAR", fontsize=10)
        path = figs.save(fig, f"roar_{dataset}")
        doc.figure(
            Figure(
                path,
                f"{dataset}: ROAR accuracy versus fraction removed, per attribution method, with the random control.",
                f"ROAR curves {dataset}",
            )
        )


def _robustness_section(doc: Doc, s: A.Study, figs: Figures) -> None:
    doc.h2("Gaussian noise and square-block occlusion", "robustness")
    specs = [
        (
            "gaussian",
            "avg_sensitivity",
            "noise σ (pixel units; images in [0, 1])",
            "average sensitivity ‖a(x+ε) − a(x)‖ / ‖a(x)‖\n(lower is better)",
            "Gaussian noise",
        ),
        (
            "square_block",
            "block_infidelity",
            "largest block half-size s_max (pixels)",
            "square-patch infidelity (squared logits)\n(lower is better)",
            "square-block occlusion",
        ),
    ]
    any_fig = False
    doc.p(
        "Left panel of each figure: test accuracy of the model under the perturbation (mean over test images and "
        "draws; higher is better). Other panels: the explanation side per attribution method (lower is better)."
    )
    for kind, expl, xlabel, ylabel, title in specs:
        acc, ex = A.curve(s, kind), A.curve(s, expl)
        for dataset in s.datasets:
            ad, ed = acc[acc["dataset"] == dataset], ex[ex["dataset"] == dataset]
            if ad.empty and ed.empty:
                continue
            if len(ad):  # accuracy is a property of the model: average any per-method copies
                ad = ad.groupby(["dataset", "penalty", "model_id", "x"], as_index=False).agg(
                    y=("y", "mean"), y_low=("y_low", "min"), y_high=("y_high", "max")
                )
            methods = _methods_of(ed)
            n = 1 + len(methods)
            nr, nc = grid_shape(n)
            fig, axes = figs.new(nr, nc, 3.4 * nc, 2.9 * nr + 0.7)
            ax0 = axes.ravel()[0]
            _curve_lines(ax0, s, ad, s.penalties, scale=100)
            ax0.set_title("model accuracy", fontsize=9)
            ax0.set_xlabel(xlabel, fontsize=8)
            ax0.set_ylabel("test accuracy (%)\n(higher is better)", fontsize=8)
            ax0.grid(alpha=0.3)
            for ax, method in zip(axes.ravel()[1:], methods):
                _curve_lines(ax, s, ed[ed["method"] == method], s.penalties)
                ax.set_title(METHOD_LABELS.get(method, method), fontsize=9)
                ax.set_xlabel(xlabel, fontsize=8)
                ax.set_ylabel(ylabel, fontsize=8)
                vals = ed[ed["method"] == method]["y"]
                if len(vals) and (vals > 0).all() and vals.max() / vals.min() > 100:
                    ax.set_yscale("log")
                ax.grid(alpha=0.3)
            hide_unused_axes(axes, n)
            figure_legend(fig, axes)
            fig.suptitle(f"{dataset}: {title}", fontsize=10)
            path = figs.save(fig, f"{kind}_{dataset}")
            doc.figure(
                Figure(
                    path,
                    f"{dataset}: {title}: accuracy (left) and explanation stability per method.",
                    f"{title} curves {dataset}",
                )
            )
            any_fig = True
    if not any_fig:
        doc.note(
            "No Gaussian-noise or square-block results (per-level rows of the evaluation table, or the curves table)."
        )


def _search_section(doc: Doc, s: A.Study, figs: Figures, par: pd.DataFrame, sweep: pd.DataFrame) -> None:
    doc.h2("Search: Pareto fronts and λ sweeps", "search")
    if par.empty:
        doc.note("No finished trials yet: no Pareto front or λ sweep.")
        return
    doc.p(
        "Every finished trial of the search (validation split). The black step line is the Pareto front of the "
        "dataset over all penalties (both axes maximised); large open circles mark the selected models; the "
        "dotted vertical line is the selection threshold (best baseline accuracy minus the tolerance)."
    )
    for dataset in s.datasets:
        pd_ = par[par["dataset"] == dataset]
        if pd_.empty:
            continue
        fig, axes = figs.new(1, 1, 6.2, 4.4)
        ax = axes[0, 0]
        for penalty in s.penalties:
            g = pd_[pd_["penalty"] == penalty]
            if g.empty:
                continue
            st = style(penalty, s.penalties)
            ax.scatter(
                g["accuracy"] * 100,
                g["score"],
                color=st["color"],
                marker=st["marker"],
                s=36,
                alpha=0.85,
                label=penalty,
                edgecolors="black",
                linewidths=0.4,
            )
        front = pd_[pd_["on_dataset_front"]].sort_values("accuracy")
        ax.step(
            front["accuracy"] * 100,
            front["score"],
            where="post",
            color="black",
            lw=1.2,
            label="Pareto front (all penalties)",
        )
        sel = pd_[pd_["selected"]]
        ax.scatter(
            sel["accuracy"] * 100,
            sel["score"],
            s=180,
            facecolors="none",
            edgecolors="black",
            linewidths=1.3,
            label="selected model",
        )
        sd = s.selected[s.selected["dataset"] == dataset]
        if len(sd) and np.isfinite(sd["baseline_val_acc"]).any():
            thr = float(sd["baseline_val_acc"].dropna().iloc[0] - sd["tolerance"].dropna().iloc[0])
            ax.axvline(thr * 100, color="0.3", ls=":", lw=1.2, label="selection threshold")
        ax.set_xlabel("validation accuracy (%)  → higher is better", fontsize=8)
        ax.set_ylabel("validation explanation score\n(MoRF of Saliency; higher is better)", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best", frameon=True)
        ax.set_title(f"{dataset}: accuracy–explanation trade-off", fontsize=10)
        path = figs.save(fig, f"pareto_{dataset}")
        doc.figure(
            Figure(
                path,
                f"{dataset}: validation accuracy versus explanation score of every trial.",
                f"Pareto front {dataset}",
            )
        )
    if sweep.empty:
        doc.note("No λ sweep: no finished trial of a penalty other than the baseline.")
        return
    doc.p(
        "λ sweeps: the validation metrics of each trial against its penalty weight (log scale). The grey band is "
        "the range of the `none` baseline's trials (its line: their mean)."
    )
    base = s.trials[(s.trials["penalty"] == "none") & (s.trials["status"] != "error")]
    for dataset in s.datasets:
        sw = sweep[sweep["dataset"] == dataset]
        if sw.empty:
            continue
        metrics = list(dict.fromkeys(sw["metric"]))
        fig, axes = figs.new(1, len(metrics), 3.8 * len(metrics), 3.4)
        for ax, metric in zip(axes.ravel(), metrics):
            scale = 100 if metric.endswith("acc") else 1
            b = base[base["dataset"] == dataset][metric].dropna() if metric in base else pd.Series(dtype=float)
            if len(b):
                ax.axhspan(b.min() * scale, b.max() * scale, color="0.85", zorder=0)
                ax.axhline(b.mean() * scale, color="0.4", ls="-", lw=1, label="none (baseline): mean, range")
            for penalty in s.penalties:
                g = sw[(sw["penalty"] == penalty) & (sw["metric"] == metric) & (sw["lam"] > 0)].sort_values("lam")
                if g.empty:
                    continue
                ax.plot(g["lam"], g["value"] * scale, lw=1.2, ms=5, label=penalty, **style(penalty, s.penalties))
                sg = g[g["selected"]]
                ax.scatter(
                    sg["lam"],
                    sg["value"] * scale,
                    s=120,
                    facecolors="none",
                    edgecolors="black",
                    linewidths=1.2,
                    label="selected model",
                )
            log_x_axis(ax)
            ax.set_xlabel("λ (penalty weight, log scale)", fontsize=8)
            what = {"val_acc": "validation accuracy (%)", "val_morf": "validation MoRF score"}.get(metric, metric)
            hib = A.higher_is_better(metric)
            ax.set_ylabel(
                f"{what}\n({'higher' if hib else 'lower'} is better)" if hib is not None else what, fontsize=8
            )
            ax.grid(alpha=0.3, which="both")
        figure_legend(fig, axes)
        fig.suptitle(f"{dataset}: λ sweep", fontsize=10)
        path = figs.save(fig, f"lambda_{dataset}")
        doc.figure(
            Figure(path, f"{dataset}: validation metrics versus λ, one line per penalty.", f"lambda sweep {dataset}")
        )


def _environment() -> dict:
    return R.package_versions(("numpy", "pandas", "pyarrow", "scipy", "matplotlib", "torch", "captum"))


def _provenance_section(doc: Doc, s: A.Study) -> None:
    doc.h2("Configuration, versions and commit", "provenance")
    prov = A.provenance(s)
    doc.p(f"Study folder: {s.path}")
    doc.p(
        f"Git commit(s) recorded by the search: {', '.join(prov['git_commits']) or 'none recorded'}; "
        f"report built from commit {R.git_commit() or 'unknown'}."
    )
    if prov["versions"]:
        doc.p(
            "Versions recorded by the search: "
            + ", ".join(f"{k} {v}" for k, v in sorted(prov["versions"].items()) if v)
            + "."
        )
    doc.p("Versions of this report: " + ", ".join(f"{k} {v}" for k, v in _environment().items() if v) + ".")
    if s.config_text:
        doc.p("The study's configuration (config.yaml):")
        doc.pre(s.config_text)
    else:
        doc.note("The study folder has no config.yaml.")


# --------------------------------------------------------------------------- entry points
def study_penalties(s: A.Study) -> list[str]:
    """The penalties of the study: those of its config (searched or still to search) and any in its tables."""
    return A.order_penalties(set(s.penalties) | set(s.config.get("penalties") or []), s.config.get("penalties"))


def has_baseline(s: A.Study, baseline: str = "none") -> bool:
    return baseline in study_penalties(s)


def check_baseline(s: A.Study, baseline: str) -> None:
    """A baseline must be a penalty of the study; only the default ``none`` may be absent (a study searched
    without it gets its report without comparisons)."""
    if baseline != "none" and not has_baseline(s, baseline):
        raise ValueError(
            f"baseline: {baseline!r} is not a penalty of this study; valid choices: {', '.join(study_penalties(s))}"
        )


def _no_baseline_note(doc: Doc, baseline: str) -> None:
    doc.h2(f"Penalties versus the `{baseline}` baseline", "compare")
    doc.note(f"No `{baseline}` baseline in this study (its penalties have none): no paired comparisons, and the "
             "selection had no accuracy to stay within, so within_tolerance is not meaningful here.")


def build_report(
    output_dir,
    formats: Sequence[str] = FORMATS,
    *,
    out_dir=None,
    n_images: int = 6,
    baseline: str = "none",
    embed: bool = False,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Write the report of the study in ``output_dir``; returns the path of the first format.

    Args:
        output_dir: the study folder (local path or URI; see :func:`study.analysis.load`).
        formats: any of ``html``, ``md``.
        out_dir: where to write (default ``<output_dir>/report``; required for a remote study).
        n_images: test images per gallery figure (0: no gallery).
        baseline: the penalty the others are compared with.
        embed: inline the PNGs in the HTML as data URIs (one file to mail); the PNG files are
            written either way.
        seed: seeds the bootstrap.
        log: progress messages (default: none).

    Raises FileNotFoundError / :class:`study.loading.StudyError` for a folder that is not a
    study or a table with a wrong schema; every other problem becomes a note in the report.
    """
    formats = [formats] if isinstance(formats, str) else list(formats)
    bad = [f for f in formats if f not in FORMATS]
    if not formats or bad:
        raise ValueError(f"formats: unknown {bad or formats!r}; valid choices: {', '.join(FORMATS)}")
    log = log or (lambda _m: None)
    if not (isinstance(n_images, int) and n_images >= 0):
        raise ValueError(f"n_images: must be an integer >= 0, got {n_images!r}")
    s = A.load(output_dir)
    check_baseline(s, baseline)
    if out_dir is None:
        if "://" in str(output_dir) and not str(output_dir).startswith("file://"):
            raise ValueError("out_dir is required when the study is not a local folder")
        local = Path(str(output_dir)[len("file://") :] if str(output_dir).startswith("file://") else output_dir)
        out_dir = local.expanduser().absolute() / REPORT_DIR
    out = Path(out_dir).absolute()
    img, tables = out / "img", out / "tables"
    for d in (img, tables):
        d.mkdir(parents=True, exist_ok=True)
        for old in list(d.glob("*.png")) + list(d.glob("*.csv")):  # this report's own previous outputs
            old.unlink()
    figs = Figures(img, log)
    doc = Doc()

    def guarded(name: str, fn, *args):
        t0 = time.perf_counter()
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - one broken section must not lose the report
            log(f"[report] {name} failed: {traceback.format_exc()}")
            doc.note(f"The {name} section could not be built ({type(exc).__name__}: {exc}).")
        log(f"[report] {name}: {time.perf_counter() - t0:.1f} s")

    log(f"[report] {s.path}: tables missing: {', '.join(s.missing) or 'none'}")
    t0 = time.perf_counter()
    summ = A.summary(s, seed=seed)
    comp = A.compare(s, baseline, seed=seed)
    par = A.pareto(s)
    sweep = A.lambda_sweep(s, baseline=baseline)
    log(f"[report] analysis: {time.perf_counter() - t0:.1f} s")
    csvs = []
    for name, df in (("summary", summ), ("compare", comp), ("pareto", par), ("lambda_sweep", sweep)):
        p = tables / f"{name}.csv"
        df.to_csv(p, index=False)
        csvs.append((f"{name}.csv", p))

    guarded("status", _status, doc, s)
    guarded("summary", _summary_section, doc, s, summ, figs)
    doc.links(csvs)
    if has_baseline(s, baseline):
        guarded("comparison", _compare_section, doc, s, comp, baseline)
    else:
        _no_baseline_note(doc, baseline)
    guarded("gallery", _gallery_section, doc, s, figs, n_images)
    guarded("MoRF", _morf_section, doc, s, figs)
    guarded("ROAR", _roar_section, doc, s, figs)
    guarded("robustness", _robustness_section, doc, s, figs)
    guarded("penalty values", penalty_curves.section, doc, s, figs)
    guarded("search", _search_section, doc, s, figs, par, sweep)
    guarded("provenance", _provenance_section, doc, s)

    title = f"Saliency-penalty study “{s.name}”: report"
    written = []
    for fmt in formats:
        path = out / f"report.{fmt}"
        write_text_atomic(path, render_html(doc, title, out, embed) if fmt == "html" else render_md(doc, title, out))
        written.append(path)
    log(f"[report] wrote {', '.join(str(p) for p in written)} ({len(figs.made)} figures)")
    return written[0]


def run(cfg, selected=None, quiet: bool = False) -> Path:
    """The report stage of ``study.launch``: ``build_report`` of the study, path printed.

    A study on an object store (``s3://…``) gets its report built in a local folder of this
    machine, then copied to ``<location>/report/``."""
    from foundations import storage
    from study import journal

    log = None if quiet else (lambda m: print(m, flush=True))  # quiet: the report's path only
    if not cfg.remote:
        path = build_report(cfg.output_dir, log=log)
        print(f"[report] {path}", flush=True)
        return path
    local = journal.local_state_dir(cfg.location) / "report"
    path = build_report(cfg.location, out_dir=local, log=log)
    for f in sorted(p for p in local.rglob("*") if p.is_file()):
        storage.upload(f, storage.join(cfg.location, "report", f.relative_to(local).as_posix()))
    print(f"[report] {storage.join(cfg.location, 'report', path.name)} (built in {path})", flush=True)
    return path


def _count(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = -1
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return v


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m study.report", description=__doc__.split("\n\n")[0])
    p.add_argument("output", help="the study folder (e.g. outputs/quick), or a URI pyarrow can open")
    p.add_argument(
        "--format", action="append", choices=FORMATS, default=None, help="html or md (repeatable; default: both)"
    )
    p.add_argument("--out", default=None, help="report folder (default: OUTPUT/report)")
    p.add_argument("--images", type=_count, default=6, help="test images per gallery figure (0: no gallery; default 6)")
    p.add_argument("--baseline", default="none", help="penalty the others are compared with (default: none)")
    p.add_argument("--embed", action="store_true", help="inline the figures in the HTML (a single file)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the report's path")
    args = p.parse_args(argv)
    log = None if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    return cli_build(lambda: build_report(args.output, args.format or FORMATS, out_dir=args.out, n_images=args.images,
                                          baseline=args.baseline, embed=args.embed, seed=args.seed, log=log),
                     (FileNotFoundError, loading.StudyError, ValueError))


if __name__ == "__main__":
    sys.exit(main())
