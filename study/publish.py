"""The published results page of a replicated study (``docs/results.md``), and its CSV.

::

    python -m study.publish outputs/replicate outputs/replicate-fashion docs/results.md \
        [--lambda-response outputs/lambda-response [--lambda-search outputs/lambda-search]] [--notes FILE]

writes ``docs/results.md`` (Markdown), its figures under ``docs/results/img/`` and the table
machine-readable as ``docs/results/summary.csv`` (one row per dataset × penalty × method ×
metric: ``dataset, penalty, method, metric, mean, ci_low, ci_high, n``, ``n`` = number of
seeds). Everything on the page comes from the study's tables (``study.replicates.replicates`` and
``compare_replicates``) and its ``runs.jsonl`` (the command, wall time, machine and commit of the
run); ``--notes`` appends a hand-written discussion file verbatim, under its own heading, so that
prose and numbers stay apart. ``--readme README.md`` also rewrites the part of that file between
``<!-- results:begin -->`` and ``<!-- results:end -->`` with the run's summary and table (so the
README's table, too, comes from the command, not from a copy).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from study import analysis as A
from study import lambda_response, loading, original, penalty_curves, randomisation, replicates
from study.report import cross_map_table
from foundations import labels
from foundations import schemas as R
from study.document import (
    Doc, Figure, Figures, Table, cli_build, figure_legend, fmt_ci, fmt_num, fmt_pct, metric_label, render_md,
    shown_command, shown_folder, style, write_text_atomic,
)

# the table's columns, in order: (metric, method, scale, label); method "" = a property of the model
COLUMNS: list[tuple[str, str, float, str]] = [
    ("full_test_accuracy", "", 100.0, "test acc., all test images (%) ↑"),
    ("accuracy", "", 100.0, "acc. on the explained images (%) ↑"),
    ("morf", "saliency", 1.0, "MoRF ↑"),
    ("faithfulness_nested", "saliency", 1.0, "faithfulness (nested) ↑"),
    ("faithfulness_correlation", "saliency", 1.0, "faithfulness corr. ↑"),
    ("complexity", "saliency", 1.0, "complexity ↓"),
    ("roar_clean", "saliency", 1.0, "ROAR area ↓"),
    ("gaussian_auc_clean", "", 1.0, "noise AUC ↑"),
    ("max_sensitivity", "saliency", 1.0, "max-sensitivity ↓"),
    ("block_auc_clean", "", 1.0, "block AUC ↑"),
    ("block_infidelity", "saliency", 1.0, "block infidelity ↓"),
    ("block_infidelity_raw", "saliency", 1.0, "raw infidelity (scale-dep.) ↓"),
]
CSV_COLUMNS = ["dataset", "penalty", "method", "metric", "mean", "ci_low", "ci_high", "n"]


def last_run(path: Path) -> dict:
    """The last finished run recorded in ``<study>/runs.jsonl`` ({} if none)."""
    f = path / "runs.jsonl"
    if not f.is_file():
        return {}
    runs = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    done = [r for r in runs if r.get("status") == "finished"]
    return done[-1] if done else {}


def _cell(rep: pd.DataFrame, dataset: str, penalty: str, method: str, metric: str, scale: float) -> str:
    q = rep[
        (rep["dataset"] == dataset)
        & (rep["penalty"] == penalty)
        & (rep["method"] == method)
        & (rep["metric"] == metric)
    ]
    if q.empty:
        return "–"
    r = q.iloc[0]
    return fmt_ci(r["mean"], r["ci_low"], r["ci_high"], scale)


def _metric_table(doc: Doc, rep: pd.DataFrame, s: A.Study, dataset: str, cols) -> None:
    header = ["penalty", "maps"] + [c[3] for c in cols]
    rows = []
    for p in s.penalties:
        if not ((rep["dataset"] == dataset) & (rep["penalty"] == p)).any():
            continue
        n = int(rep[(rep["dataset"] == dataset) & (rep["penalty"] == p) & (rep["metric"] == "accuracy")]["n"].max())
        rows.append([f"{p} ({n} seeds)", "Saliency"] + [_cell(rep, dataset, p, m, k, sc) for k, m, sc, _ in cols])
        rand = [(_cell(rep, dataset, p, "random", k, sc) if m else "") for k, m, sc, _ in cols]
        if any(c not in ("", "–") for c in rand):
            rows.append(["", "random (control)"] + rand)
    # ROAR's random ranking is one control per dataset (filed under the baseline)
    ctrl = rep[(rep["dataset"] == dataset) & (rep["method"] == "random") & (rep["metric"] == "roar_clean")]
    caption = (
        f"{dataset}: mean over seeds [95% t-interval over seeds]; under each penalty its random-attribution "
        "control (the same metrics on uniform random maps of the same models)"
    )
    if len(ctrl):
        r = ctrl.iloc[0]
        caption += (
            f". ROAR's random-ranking control (one per dataset, over {int(r['n'])} retraining repeats): "
            f"{fmt_ci(r['mean'], r['ci_low'], r['ci_high'])}"
        )
    doc.table(Table(header, rows, [], caption=caption, mark=""))


METHOD_COLUMNS = [(k, sc, label) for k, m, sc, label in COLUMNS if m == "saliency" and k != "roar_clean"]


def _method_table(doc: Doc, rep: pd.DataFrame, s: A.Study, dataset: str) -> None:
    """Every attribution method's explanation metrics (mean over seeds [95 % t-interval]), one row per penalty."""
    d = rep[rep["dataset"] == dataset]
    methods = [m for m in dict.fromkeys(d["method"]) if m not in ("", "saliency", A.RANDOM_METHOD)]
    if not methods:
        return
    doc.h3(f"{dataset}: the other attribution methods")
    rows = [[p, m] + [_cell(rep, dataset, p, m, k, sc) for k, sc, _ in METHOD_COLUMNS]
            for m in methods for p in s.penalties if ((d["penalty"] == p) & (d["method"] == m)).any()]
    doc.table(Table(["penalty", "maps"] + [c[2] for c in METHOD_COLUMNS], rows, [], mark="",
                    caption=f"{dataset}: the same metrics as the table above for each other method's maps "
                    "(mean over seeds [95% t-interval]); Saliency and the random control are in the table above"))


def test_labels(s: A.Study, dataset: str):
    """The test labels of ``dataset`` (the study's data root, else the default one); None if not loadable."""
    try:
        return labels.test_labels(dataset, s.config.get("data_root") or None)
    except (labels.DataError, OSError, ValueError):
        return None


def _class_table(doc: Doc, s: A.Study, dataset: str, folder: Path) -> pd.DataFrame:
    """Per-class test accuracy (mean over seeds, %), one row per penalty; returns the per-model rows."""
    y = test_labels(s, dataset)
    if y is None:
        doc.note(f"{dataset}: per-class accuracy not shown: the test labels could not be loaded (prepare the data: "
                 "`python -m foundations.data prepare`).")
        return pd.DataFrame()
    ca = replicates.class_accuracy(s, {dataset: y})
    if ca.empty:
        return ca
    names = labels.CLASS_NAMES[dataset]
    mean = ca.groupby(["penalty", "label"])["accuracy"].mean()
    rows = [[p] + [fmt_pct(mean.get((p, c), np.nan)) for c in range(len(names))]
            for p in s.penalties if p in set(ca["penalty"])]
    spread = mean.groupby(level="label").agg(["min", "max"])
    rows.append(["(min – max over penalties)"]
                + [f"{fmt_pct(spread.loc[c, 'min'])} – {fmt_pct(spread.loc[c, 'max'])}"
                   if c in spread.index else "–" for c in range(len(names))])
    n_images = int(ca.groupby("model_id")["n"].sum().max())
    doc.h3(f"{dataset}: accuracy per class")
    doc.table(Table(["penalty"] + names, rows, [], mark="",
                    caption=f"{dataset}: test accuracy per class (%) on all {n_images} test images, mean over "
                    "seeds; [class_accuracy.csv](results/class_accuracy.csv) has every model's"))
    return ca


def _scatter(figs: Figures, rep: pd.DataFrame, s: A.Study, dataset: str) -> Path | None:
    pm = replicates.per_model(s)
    pm = pm[pm["dataset"] == dataset]
    full = (pm["metric"] == "full_test_accuracy").any()  # older studies: the explained images' accuracy
    acc = pm[(pm["metric"] == ("full_test_accuracy" if full else "accuracy")) & (pm["method"] == "")]
    acc = acc[["model_id", "penalty", "value"]]
    panels = [
        ("morf", "MoRF of Saliency ↑"),
        ("roar_clean", "ROAR area of Saliency ↓"),
        ("faithfulness_nested", "faithfulness (nested) ↑"),
    ]
    if acc.empty:
        return None
    fig, axes = figs.new(1, len(panels), 4.2 * len(panels), 3.6)
    for ax, (metric, label) in zip(axes[0], panels):
        y = pm[(pm["metric"] == metric) & (pm["method"] == "saliency")][["model_id", "value"]]
        m = acc.merge(y, on="model_id", suffixes=("_acc", ""))
        for p in s.penalties:
            g = m[m["penalty"] == p]
            if len(g):
                st = style(p, s.penalties)
                ax.scatter(
                    100 * g["value_acc"], g["value"], color=st["color"], marker=st["marker"], s=36, label=p, alpha=0.85
                )
                ax.errorbar(
                    100 * g["value_acc"].mean(),
                    g["value"].mean(),
                    color=st["color"],
                    marker=st["marker"],
                    ms=9,
                    mfc="none",
                    lw=0,
                )
        ax.set_xlabel("test accuracy (%)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    figure_legend(fig, axes)
    return figs.save(fig, f"{dataset}_accuracy_vs_explanation")


def _beside_original(doc: Doc, s: A.Study, ref: pd.DataFrame, folder: Path) -> None:
    """The section "The original study beside this one" (study/original.py), and ``original.csv``."""
    t = original.beside(s, ref)
    o = original.orderings(t)
    t.to_csv(folder / "original.csv", index=False, float_format="%.6g")
    doc.h2("The original study beside this one", "original")
    doc.p(
        "The original study trained one model per penalty and published the numbers in "
        "[docs/reference/](reference/README.md). Beside each, this study's mean over seeds with its 95 % "
        "t-interval, every value computed from this study's tables in the original's convention "
        "(`study/original.py`: its grids, its unnormalised areas, its complexity formula); *inside* says "
        "whether the original's number lies in the interval, and *τ* is Kendall's rank correlation of the "
        "penalties' order (original versus our means; 1 = the same order). Where it lies outside, the last "
        "column says whether one of our seeds comes close (seed-to-seed variance) or none does. "
        "Machine-readable: [original.csv](results/original.csv)."
    )
    summary = []
    for (dataset, metric), g in t.groupby(["dataset", "metric"], sort=False):
        r = o[(o["dataset"] == dataset) & (o["metric"] == metric)].iloc[0]
        inside = g["inside"].dropna()
        summary.append([metric, f"{int(inside.sum())} of {len(inside)}", fmt_num(r["tau"]), fmt_num(r["p_value"]),
                        original.CONVENTIONS[metric].metric])
    doc.table(Table(["original's metric", "original inside our interval", "Kendall τ", "p", "our metric"],
                    summary, [], mark="", caption="per metric: how many penalties agree, and whether the order does"))
    for (dataset, metric), g in t.groupby(["dataset", "metric"], sort=False):
        doc.h3(f"{dataset}: {metric}")
        doc.p(f"What still differs: {original.CONVENTIONS[metric].differs}.")
        rows = []
        for _, r in g.iterrows():
            if not r["n"]:
                rows.append([r["penalty"], fmt_num(r["original"]), "not measured", "", "", ""])
                continue
            near = f"seed {r['nearest_seed']}: {fmt_num(r['nearest_value'])}"
            if r["inside"]:
                reading = "inside"
            elif r["min"] <= r["original"] <= r["max"]:
                reading = f"outside the interval, within our seeds ({near})"
            else:
                reading = f"beyond every seed (nearest {near})"
            rows.append([r["penalty"], fmt_num(r["original"]), fmt_ci(r["mean"], r["ci_low"], r["ci_high"]),
                         f"{fmt_num(r['min'])} – {fmt_num(r['max'])}", "yes" if r["inside"] else "no", reading])
        doc.table(Table(["penalty", "original", "this study [95 % CI]", "our seeds (min – max)", "inside", "reading"],
                        rows, [], mark=""))


def _findings(rep: pd.DataFrame, comp: pd.DataFrame, dataset: str) -> list[str]:
    """Plain sentences generated from the comparisons (what changed significantly, what is within noise)."""
    out = []
    c = comp[comp["dataset"] == dataset]
    if c.empty:
        return out
    sig = c[c["significant"]]
    for _, r in sig.iterrows():
        base = rep[
            (rep["dataset"] == dataset)
            & (rep["penalty"] == r["baseline"])
            & (rep["method"] == r["method"])
            & (rep["metric"] == r["metric"])
        ]
        b = float(base["mean"].iloc[0]) if len(base) else np.nan
        what = f"{metric_label(r['metric'])}" + (f" of the {r['method']} maps" if r["method"] else "")
        rel = (f" ({100 * r['mean_diff'] / abs(b):+.0f} % of the baseline's {fmt_num(b)})"
               if np.isfinite(b) and b else "")
        verdict = {True: "better", False: "worse"}.get(r["improved"], "different")
        out.append(
            f"`{r['penalty']}` changes {what} by {fmt_num(r['mean_diff'])}{rel}: {verdict}, "
            f"p_adj = {fmt_num(r['p_adjusted'])} (paired t over {int(r['n'])} seeds)."
        )
    n_ns = int((~c["significant"]).sum())
    out.append(
        f"The other {n_ns} of {len(c)} penalty-versus-baseline differences are not significant after Holm's "
        f"correction (with {int(c['n'].max())} seeds a paired t-test detects only large, consistent effects)."
    )
    return out


README_BEGIN, README_END = "<!-- results:begin -->", "<!-- results:end -->"


# the README's summary: per dataset, these columns of COLUMNS (Saliency's maps)
README_COLUMNS = ["full_test_accuracy", "morf", "faithfulness_nested", "roar_clean"]


def _readme_table(doc: Doc, studies, reps) -> None:
    """One compact table for every dataset of every study: a row per penalty, a few columns per dataset, and the
    baseline's random-map / random-ranking control as the last row."""
    parts = [(rep, d) for st, rep in zip(studies, reps) for d in st.datasets]
    cols = [c for k in README_COLUMNS for c in COLUMNS if c[0] == k]
    penalties = list(dict.fromkeys(p for st in studies for p in st.penalties))
    rows = [[p] + [_cell(rep, d, p, m, k, sc) for rep, d in parts for k, m, sc, _ in cols] for p in penalties]
    rows.append(["random (control)"] + [_cell(rep, d, "none", "random", k, sc) if m else "" for rep, d in parts
                                        for k, m, sc, _ in cols])
    n = max(int(rep[rep["metric"] == "accuracy"]["n"].max()) for rep, _ in parts)
    doc.table(Table(["penalty"] + [f"{d}: {label}" for _, d in parts for *_, label in cols], rows, [], mark="",
                    caption=f"Saliency maps; mean over {n} seeds [95% t-interval over seeds]; last row: the "
                    "baseline's uniform random maps and ROAR's random ranking. Every other metric, method and "
                    "test: the full page"))


def _readme_block(studies, reps, runs, dirs, page_arg: str, readme: Path, command: str) -> str:
    """The README's results block: what was run, where the page is, the table of each dataset."""
    doc = Doc()
    link = Path(page_arg).absolute().relative_to(readme.parent.absolute()).as_posix()
    hows = []
    for s, run in zip(studies, runs):
        hows.append(f"`{shown_command(run['command'])}` (commit `{run['git_commit'][:7]}`, "
                    f"{run['wall_seconds'] / 60:.1f} min on {run['machine']})" if run
                    else f"`{s.name}` (command, wall time and machine not recorded)")
    doc.p(
        f"Generated by `{command} --readme {readme.name}` from " + " and ".join(hows) + ". "
        f"The full page, with the paired tests, the per-class accuracy, whose maps score whose model, what each "
        f"penalty does as λ grows, the original study's numbers beside these, the discussion and the "
        f"machine-readable CSVs: **[{page_arg}]({link})**."
    )
    _readme_table(doc, studies, reps)
    body = render_md(doc, "", readme.parent).split("\n", 4)[4]  # without the page's title and date lines
    return f"{README_BEGIN}\n{body.strip()}\n{README_END}"


def _readme_span(readme: Path) -> tuple[str, int, int]:
    """(text, start, end) of the results block of ``readme``; ValueError unless both markers are there once."""
    text = readme.read_text(encoding="utf-8")
    a, b = text.find(README_BEGIN), text.find(README_END)
    if text.count(README_BEGIN) != 1 or text.count(README_END) != 1 or a > b:
        raise ValueError(
            f"--readme: {readme} needs one {README_BEGIN} line followed by one {README_END} line around the "
            "results block it rewrites"
        )
    return text, a, b + len(README_END)


def update_readme(readme: str | Path, block: str) -> None:
    """Replace the text between the results markers of ``readme`` (both must be there, once each)."""
    text, a, b = _readme_span(Path(readme))
    write_text_atomic(Path(readme), text[:a] + block + text[b:])


def _produced(doc: Doc, s: A.Study, study_dir, page_arg: str) -> None:
    """How one study was run (command, commit, wall time, machine), its versions and its set-up."""
    run = last_run(Path(str(study_dir)))
    if run:
        doc.p(
            f"`{s.name}`: command `{shown_command(run['command'])}` (commit `{run['git_commit']}`), started "
            f"{run['started']}, finished after **{run['wall_seconds'] / 60:.1f} min** wall time on {run['machine']} "
            f"(host `{run['host']}`, Python {run['python']})."
        )
    else:
        doc.note(
            f"{shown_folder(study_dir)}/runs.jsonl records no finished run: command, wall time and machine unknown."
        )
    prov = A.provenance(s)
    if prov["versions"]:
        doc.p("Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(prov["versions"].items()) if v) + ".")
    training, search = s.config.get("training") or {}, s.config.get("search") or {}
    setup = [("datasets", s.config.get("datasets")), ("model", {d: (o or {}).get("model") for d, o in
              (s.config.get("per_dataset") or {}).items()} or None), ("trials", search.get("trials"))] + [
        (k, training.get(k)) for k in ("epochs", "batch_size", "lr", "data_fraction")]
    doc.p(
        "Set-up: "
        + ", ".join(f"{k} {v}" for k, v in setup if v is not None)
        + f"; λ {(search.get('space') or {}).get('default', {}).get('lam')}; evaluation "
        + json.dumps(s.config.get("evaluation", {}), sort_keys=True)
        + "."
    )


def _dataset_sections(doc: Doc, figs: Figures, s: A.Study, rep: pd.DataFrame, comp: pd.DataFrame, baseline: str,
                      folder: Path, classes: list) -> None:
    for dataset in s.datasets:
        doc.h2(f"{dataset}: every metric per penalty", f"table-{dataset}")
        _metric_table(doc, rep, s, dataset, COLUMNS)
        doc.p(
            "Areas include the clean point (σ = 0, no block, t = 0 retrain), as docs/spec.md §5 and the seed's "
            "curves; "
            "block infidelity is the scale-invariant (optimal-β) value, the raw one depends on the maps' scale. "
            "Machine-readable: [summary.csv](results/summary.csv) (every method and metric), "
            "[compare.csv](results/compare.csv)."
        )
        classes.append(_class_table(doc, s, dataset, folder))
        _method_table(doc, rep, s, dataset)
        doc.h3(f"{dataset}: penalties versus `{baseline}`, paired by seed")
        c = comp[(comp["dataset"] == dataset)].copy()
        c = c.sort_values(["significant", "p_adjusted"], ascending=[False, True])
        rows = []
        for _, r in c[c["method"].isin(["", "saliency"])].iterrows():
            verdict = {True: "better", False: "worse"}.get(r["improved"], "differs") if r["significant"] else "n.s."
            rows.append([r["penalty"], metric_label(r["metric"]), fmt_ci(r["mean_diff"], r["diff_ci_low"],
                         r["diff_ci_high"]), fmt_num(r["p_value"]), fmt_num(r["p_adjusted"]), verdict])
        doc.table(
            Table(
                ["penalty", "metric (Saliency or model)", "Δ vs baseline [95% CI]", "p", "p (Holm)", "verdict"],
                rows,
                [],
                caption="paired t-test over seeds, Holm-corrected across every row of compare.csv of the dataset's "
                "study; significant rows first",
                mark="",
            )
        )
        doc.h3(f"{dataset}: what the numbers say (generated from the comparisons)")
        for line in _findings(rep, comp[comp["method"].isin(["", "saliency"])], dataset):
            doc.p("- " + line)
        cross_map_table(doc, s, dataset)
        path = _scatter(figs, rep, s, dataset)
        if path:
            doc.figure(
                Figure(
                    path,
                    f"{dataset}: test accuracy versus explanation quality; small markers = seeds, "
                    "large hollow markers = their mean",
                    f"{dataset} accuracy vs explanation",
                )
            )


def build_results(
    study_dir,
    page: str | Path,
    *,
    notes: str | Path | None = None,
    baseline: str = "none",
    readme: str | Path | None = None,
    log: Callable[[str], None] | None = None,
    lambda_response_dir=None,
    lambda_search_dir=None,
    mprt_dirs=(),
) -> Path:
    """Write the results page ``page`` (Markdown), ``<page stem>/img/*.png`` and ``<page stem>/summary.csv``;
    with ``readme``, also that file's results block (between :data:`README_BEGIN` and :data:`README_END`).

    ``study_dir``: one replicated study folder or a list of them (e.g. MNIST's and Fashion-MNIST's), each
    with its own datasets; ``lambda_response_dir`` adds the λ-response section of a ``select: every`` λ grid
    study, ``lambda_search_dir`` (with it) the search-versus-grid table, ``mprt_dirs`` the randomisation test of
    studies evaluated with the metric ``mprt`` (e.g. a copy of a replicate study re-evaluated with it)."""
    log = log or (lambda _m: None)
    if readme:
        _readme_span(Path(readme))  # before anything is written
    dirs = list(study_dir) if isinstance(study_dir, (list, tuple)) else [study_dir]
    studies = [A.load(d) for d in dirs]
    for d, s in zip(dirs, studies):
        if not replicates.has_replicates(s):
            raise ValueError(
                f"{d}: no replicated models (one selected model per penalty); the results page "
                "needs a study whose seeds are replicates, e.g. --config replicate"
            )
    grid = A.load(lambda_response_dir) if lambda_response_dir else None
    search = A.load(lambda_search_dir) if lambda_search_dir else None
    mprt_dirs = [mprt_dirs] if isinstance(mprt_dirs, (str, Path)) else list(mprt_dirs or ())
    mprts = [A.load(d) for d in mprt_dirs]
    for d, m in zip(mprt_dirs, mprts):
        if randomisation.curves(m).empty:
            raise ValueError(f"--mprt {d}: no `mprt` rows in its evaluation table; evaluate it with "
                             "--set 'evaluation.metrics=[mprt]'")
    if search is not None and grid is None:
        raise ValueError("--lambda-search: needs --lambda-response (the grid the search is compared with)")
    page_arg = str(page)
    page = Path(page).absolute()
    folder = page.with_suffix("")
    img = folder / "img"
    img.mkdir(parents=True, exist_ok=True)
    for old in img.glob("*.png"):
        old.unlink()
    reps = [replicates.replicates(s) for s in studies]
    comps = [replicates.compare_replicates(s, baseline) for s in studies]
    pd.concat(reps)[CSV_COLUMNS].to_csv(folder / "summary.csv", index=False, float_format="%.6g")
    pd.concat(comps).to_csv(folder / "compare.csv", index=False, float_format="%.6g")
    figs = Figures(img, log)
    doc = Doc()
    doc.h2("How this was produced", "produced")
    doc.p(f"Page: `{publish_command(dirs, page_arg, lambda_response_dir, lambda_search_dir, mprt_dirs)}` from commit "
          f"`{R.git_commit() or 'unknown'}`.")
    for d, s in zip(dirs, studies):
        _produced(doc, s, d, page_arg)
    for d, st in ((lambda_response_dir, grid), (lambda_search_dir, search), *zip(mprt_dirs, mprts)):
        if d:
            _produced(doc, st, d, page_arg)
    classes: list = []
    for s, rep, comp in zip(studies, reps, comps):
        _dataset_sections(doc, figs, s, rep, comp, baseline, folder, classes)
    classes = [c for c in classes if len(c)]
    if classes:
        pd.concat(classes).to_csv(folder / "class_accuracy.csv", index=False, float_format="%.6g")
    for i, s in enumerate(studies):
        penalty_curves.section(doc, s, figs, heading=i == 0)
    if grid is not None:
        lambda_response.section(doc, grid, figs, search)
        pts = lambda_response.points(grid)
        lambda_response.summary(pts).to_csv(folder / "lambda_response.csv", index=False, float_format="%.6g")
        if search is not None:
            tol = float((grid.config.get("search") or {}).get("tolerance", 0.01))
            lambda_response.search_vs_grid(grid.trials, search.trials, tol).to_csv(
                folder / "search_vs_grid.csv", index=False, float_format="%.6g")
    if mprts:
        pd.concat([randomisation.curves(m) for m in mprts]).to_csv(folder / "mprt.csv", index=False,
                                                                   float_format="%.6g")
        for i, m in enumerate(mprts):
            randomisation.section(doc, m, figs, heading=i == 0)
    ref = original.load_reference()
    for s in studies:
        if ref["dataset"].isin(s.datasets).any():
            _beside_original(doc, s, ref[ref["dataset"].isin(s.datasets)], folder)
    if notes:
        doc.h2("Discussion", "discussion")
        doc.p(Path(notes).read_text(encoding="utf-8").strip())
    names = [s.name for s in studies] + [x.name for x in (grid, *mprts) if x is not None]
    title = "Results: " + ", ".join(dict.fromkeys(names))  # (an mprt study may be a replicate study's copy)
    text = render_md(doc, title, page.parent, "python -m study.publish")
    text = text.replace("](results/", f"]({folder.name}/")  # the CSV links point into this page's own folder
    write_text_atomic(page, text)
    if readme:
        runs = [last_run(Path(str(d))) for d in dirs]
        update_readme(readme, _readme_block(studies, reps, runs, dirs, page_arg, Path(readme).absolute(),
                                            publish_command(dirs, page_arg, lambda_response_dir, lambda_search_dir,
                                                            mprt_dirs)))
        log(f"[results] rewrote the results block of {readme}")
    log(f"[results] wrote {page}, {folder / 'summary.csv'} ({len(figs.made)} figures)")
    return page


def publish_command(dirs, page_arg: str, lambda_response_dir=None, lambda_search_dir=None, mprt_dirs=()) -> str:
    """The command that writes the page, with every folder as :func:`shown_folder` shows it."""
    words = ["python -m study.publish", *(shown_folder(d) for d in dirs), page_arg]
    if lambda_response_dir:
        words += ["--lambda-response", shown_folder(lambda_response_dir)]
    if lambda_search_dir:
        words += ["--lambda-search", shown_folder(lambda_search_dir)]
    for d in [mprt_dirs] if isinstance(mprt_dirs, (str, Path)) else mprt_dirs or ():
        words += ["--mprt", shown_folder(d)]
    return " ".join(words)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m study.publish", description=__doc__.split("\n\n")[0])
    p.add_argument("output", nargs="+", help="the study folder(s) of replicated studies (e.g. outputs/replicate "
                   "outputs/replicate-fashion), or URIs")
    p.add_argument("page", metavar="PAGE.md", help="the page to write (e.g. docs/results.md; with PAGE/summary.csv, "
                   "PAGE/compare.csv and PAGE/img/ beside it)")
    p.add_argument("--notes", default=None, metavar="FILE.md", help="a discussion appended verbatim")
    p.add_argument("--readme", default=None, metavar="README.md",
                   help="also rewrite that file's block between <!-- results:begin --> and <!-- results:end -->")
    p.add_argument("--lambda-response", default=None, metavar="DIR",
                   help="a λ-grid study whose every model is evaluated (e.g. outputs/lambda-response): its section")
    p.add_argument("--lambda-search", default=None, metavar="DIR",
                   help="a search with the same trainings (e.g. outputs/lambda-search): the search-versus-grid table")
    p.add_argument("--mprt", action="append", default=[], metavar="DIR",
                   help="a study evaluated with the metric mprt (e.g. a copy of outputs/replicate re-evaluated with "
                   "--set 'evaluation.metrics=[mprt]'): the randomisation-test section; repeat it for several")
    p.add_argument("--baseline", default="none", help="penalty the others are compared with (default: none)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the page's path")
    args = p.parse_args(argv)
    log = None if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    return cli_build(lambda: build_results(args.output, args.page, notes=args.notes, baseline=args.baseline,
                                           readme=args.readme, log=log, lambda_response_dir=args.lambda_response,
                                           lambda_search_dir=args.lambda_search, mprt_dirs=args.mprt),
                     (FileNotFoundError, loading.StudyError, ValueError))


if __name__ == "__main__":
    sys.exit(main())
