"""The import graph: no circle, no arrow from a lower layer up, and the launcher's side (config, cluster
launch) without torch. An ``ast`` walk of every import, at module level and inside functions alike, of the
four packages. The layer of a module is its top-level folder, nothing else."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("foundations", "trainables", "evaluation", "study")  # bottom to top: the layer order


def layer(module: str) -> int:
    """A module's layer: the position of its folder in PACKAGES (0 foundations … 3 the study)."""
    return PACKAGES.index(module.split(".")[0])


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for f in (REPO / pkg).rglob("*.py"):
            parts = f.relative_to(REPO).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    g: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        for node in ast.walk(ast.parse(f.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                subs = [f"{node.module}.{a.name}" for a in node.names]  # `from foundations import seeds`
                names = [s for s in subs if s in mods] + ([node.module] if any(s not in mods for s in subs) else [])
            for n in names:
                if n in mods and n != m:
                    g[m].add(n)
    return g


def test_no_module_imports_a_higher_layer():
    up = sorted(f"{a} -> {b}" for a, deps in graph().items() for b in deps if layer(b) > layer(a))
    assert not up, up


def test_the_import_graph_has_no_circle():
    g = graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(g[m]):
            if state.get(d) == 1:
                cycles.append(path[path.index(d):] + [d] if d in path else [m, d])
            elif d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert not cycles, cycles


def test_the_walk_sees_the_known_arrows():
    """The checks above are only as good as the walk: it must find imports inside functions too."""
    g = graph()
    assert "study.schedule" in g["study.launch"] and "evaluation.stage" in g["study.schedule"]
    assert "evaluation.evaluate" in g["evaluation.stage"]  # imported inside a function
    assert "foundations.seeds" in g["evaluation.roar"]


def test_no_lower_package_names_study_at_all():
    """Not even inside a function: trainables, evaluation and foundations import nothing from study."""
    up = sorted(f"{a} -> {b}" for a, deps in graph().items() for b in deps
                if b.startswith("study") and not a.startswith("study"))
    assert not up, up


def test_loading_a_config_and_the_cluster_launcher_import_no_torch():
    """`python -m study.launch --cluster …` on a laptop: the config, its checks and the launcher need no torch."""
    code = (
        "import json, sys\n"
        "import study.launch, study.cluster\n"
        "from study.config import load_config\n"
        "for p in ('quick', 'paper', 'full', 'replicate'):\n"
        "    load_config(p)\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'ray': 'ray' in sys.modules}))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == {"torch": False, "ray": False}


def test_the_report_and_the_analysis_read_tables_only():
    """The report plots the evaluation stage's `gallery` table instead of recomputing the maps:
    neither it nor the analysis imports torch, a model or an attribution method, even inside a function."""
    mods = modules()
    reading = ("study.report", "study.document", "study.publish", "study.analysis", "foundations.statistics")
    heavy = {"torch", "torchvision", "captum", "foundations.data", "trainables.models", "evaluation.attributions"}
    found = {}
    for m in reading:
        for node in ast.walk(ast.parse(mods[m].read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                if isinstance(node, ast.ImportFrom) and node.module else [])
            hits = {n for n in names if n in heavy or n.split(".")[0] in ("torch", "torchvision", "captum")}
            if hits:
                found.setdefault(m, set()).update(hits)
    assert not found, found
    code = "import sys, study.report, study.analysis, study.publish\nprint('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "False", (r.stdout, r.stderr)
