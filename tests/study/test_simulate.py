"""Simulated studies (``study.launch --simulate``): the real schedule with sleeping trials and tasks, the
profile built from a finished study, the lower bound, and the launcher's checks of the options."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from foundations import profile
from foundations import schemas as R
from tests.ray_utils import ray_env, start_local_ray
from tests.study.processes import result_lines, sigkill, signal_when

REPO = Path(__file__).resolve().parents[2]

EVAL = ["evaluation.methods=[saliency]", "evaluation.metrics=[morf, complexity, roar]", "evaluation.n_samples=20",
        "evaluation.chunk_size=10", "evaluation.roar.fractions=[0.5]", "evaluation.roar.repeats=1",
        "evaluation.roar.epochs=1", "evaluation.roar.data_fraction=0.01", "evaluation.roar.n_test=100"]


def write_profile(path: Path, epoch_seconds: float = 0.6) -> Path:
    """A small profile: every epoch ``epoch_seconds`` at the quick preset's sizes, cheap evaluation tasks."""
    n_train, n_val = profile.split_sizes(0.05, 0.1, 2000)
    per = epoch_seconds / (n_train + n_val + 100)
    prof = {"trial_start_seconds": 0.1, "actor_start_seconds": 0.2,
            "models": {"cnn4b": {"like": "cnn3b", "factor": 2.0}},
            "epochs": [{"dataset": "mnist", "model": "cnn3b", "penalty": "none", "device": "cpu",
                        "epoch_seconds": epoch_seconds, "train_s_per_image": per, "val_s_per_image": per,
                        "morf_s_per_image": per}],
            "evaluation": {"metrics_s_per_image_method": 0.01, "ranks_s_per_image": 0.0002,
                           "roar_s_per_image_epoch": 0.0005}}
    path.write_text(yaml.safe_dump(prof))
    return path


def sim_config(out: Path, prof: Path, schedule: str = "concurrent", scale: float = 1.0):
    from study.config import load_config

    return load_config("quick", [
        f"output={out}", f"schedule={schedule}", "name=sim", "datasets=[mnist, fashion-mnist]",
        "penalties=[none, gradient, locality]", "trials=3", "max_concurrent_trials=2", "epochs=2",
        "per_dataset={fashion-mnist: {model: cnn3b}}", f"simulate={{profile: {prof}, time_scale: {scale}}}", *EVAL,
    ])


@pytest.fixture(scope="module")
def ray16():
    import ray

    start_local_ray(num_cpus=16)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def simulated_study(ray16, tmp_path_factory, data_root):
    """A simulated study (2 datasets x 3 penalties x 3 trials) on 16 logical CPUs, concurrent schedule."""
    from study.simulate import run_schedule

    tmp = tmp_path_factory.mktemp("sim")
    cfg = sim_config(tmp / "study", write_profile(tmp / "profile.yaml"))
    row = run_schedule(cfg, log=lambda _m: None)
    return cfg, row


@pytest.mark.ray
def test_simulated_study_writes_every_table_and_overlaps_searches(simulated_study):
    """The search, selection and evaluation tables are those a real run writes, with sleeping bodies."""
    from evaluation import stage, tables
    from study.simulate import planned_rows

    cfg, row = simulated_study
    out = cfg.location
    trials, epochs, selected = (R.read_table(out, t) for t in ("trials", "epochs", "selected"))
    assert len(trials) == 18 and (trials["status"] == "ok").all() and (trials["epochs_done"] == 2).all()
    assert len(epochs) == 36 and not epochs.duplicated(["trial_id", "epoch"]).any()
    assert sorted(map(tuple, selected[["dataset", "penalty"]].to_numpy())) == sorted(
        (d, p) for d in cfg.datasets for p in cfg.penalties)
    assert selected["within_tolerance"].all()  # plausible values: the penalties stay near the baseline
    # every evaluation task wrote its file (the stage's own resume check), with the stage's schemas
    s = stage.settings_from_config(cfg)
    sel = selected.assign(trial_id=selected["trial_id"])
    assert stage.missing(stage.plan_tasks(sel, s), out) == []
    # 2 chunks + 1 ROAR each; control + clean
    assert len(stage.plan_tasks(sel, s)) == len(planned_rows(cfg)) * 3 + 2 * 2
    ev, roar = tables.read_stage_table(out, "evaluation"), tables.read_stage_table(out, "roar")
    assert set(ev["metric"]) >= {"accuracy", "morf", "morf_curve", "complexity"} and len(roar) == 6 + 4
    for w in Path(out, "models").rglob("model.pt"):  # the exported weights load into the model
        import torch

        from trainables.models import build_model

        build_model("cnn3b").load_state_dict(torch.load(w, weights_only=True))
    # trials of different searches ran at the same time
    t = trials.assign(key=trials["dataset"] + "/" + trials["penalty"])
    overlap = any(a.key != b.key and a.start_time < b.end_time and b.start_time < a.end_time
                  for a in t.itertuples() for b in t.itertuples())
    assert overlap
    assert row["trials"] == 18 and row["bound"] > 0 and row["wall"] >= row["critical_path"]
    # the fixed costs' CPU time: the driver's own and its Ray's (the trial actors, named as Ray names them)
    by_name = row["cpu_by_name"]
    assert by_name["driver"][1] > 0 and any(k.startswith("ray::ImplicitFunc") for k in by_name)
    assert row["cpu_seconds"] == pytest.approx(sum(c for _, c in by_name.values()))


@pytest.mark.ray
def test_simulated_trials_import_no_torch(simulated_study):
    """Every simulated trial reported from a process without torch (Tune's result.json lines)."""
    cfg, _ = simulated_study
    flags = [json.loads(line)["torch_imported"] for f in Path(cfg.location, "tune").rglob("result.json")
             for line in f.read_text().splitlines() if line.strip()]
    assert len(flags) == 36 and not any(flags)


def test_a_simulated_search_process_imports_no_torch():
    """What a search task's process imports (the schedule, the search, Tune, Optuna, the trainables) holds no torch:
    a simulated study's 14 searches are not 14 torch processes."""
    code = ("import sys, study.schedule, study.search, study.simulate, trainables.trainable, trainables.simulated, "
            "evaluation.simulated, ray.tune, optuna\nfrom ray.tune.search.optuna import OptunaSearch\n"
            "print('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=ray_env(), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stdout + r.stderr


@pytest.mark.ray
def test_profile_epoch_seconds_are_the_means_of_the_epochs_table(simulated_study):
    """study.profile's per-(dataset, penalty) epoch seconds equal the means of the study's epochs table."""
    from study.profile import build

    cfg, _ = simulated_study
    prof = build(cfg.location)
    means = R.read_table(cfg.location, "epochs").groupby(["dataset", "penalty"])["seconds"].mean()
    got = {(r["dataset"], r["penalty"]): r["epoch_seconds"] for r in prof["epochs"]}
    assert set(got) == set(means.index)
    for key, v in got.items():
        assert v == pytest.approx(means[key], abs=1e-6)
    # a metric chunk's seconds per (image x method): its marker (start) to its file (end), over its 10 images x 1
    # method (n_samples 20 in chunks of 10), whatever rows of the whole test set the file also holds
    per = [(f.stat().st_mtime - json.loads((Path(cfg.location) / ".tasks" / f"evaluation__{f.stem}.json").read_text())[
        "time"]) / 10 for f in Path(cfg.location, "evaluation").rglob("*.parquet")]
    assert len(per) == 12 and prof["evaluation"]["metrics_s_per_image_method"] == pytest.approx(sum(per) / len(per))
    profile.check(prof)  # and the simulation can read it back
    assert prof["source"] == f"outputs/{Path(cfg.location).name}"  # a tmp folder: named as outputs/<name>, no path


def test_a_metric_chunks_images_are_its_explained_images_not_the_whole_test_set(tmp_path):
    """study.profile: a chunk's file also holds one accuracy row per test image; its cost is per explained image."""
    import time

    import pandas as pd

    from study.profile import metric_chunk_seconds

    rows = [{"metric": m, "sample": i} for m in ("morf", "complexity") for i in range(5)]
    rows += [{"metric": "full_test_accuracy", "sample": i} for i in range(100)]
    f = tmp_path / "evaluation" / "dataset=mnist" / "penalty=none" / "none-1__c000.parquet"
    f.parent.mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(f)
    end = time.time()
    os.utime(f, (end, end))
    (tmp_path / ".tasks").mkdir()
    (tmp_path / ".tasks" / "evaluation__none-1__c000.json").write_text(json.dumps({"time": end - 2.0}))
    got = metric_chunk_seconds(str(tmp_path), {"evaluation": {"methods": ["saliency", "smoothgrad"]}})
    assert got == pytest.approx(2.0 / (5 * 2))  # 2 s over 5 images x 2 methods


def test_profile_splits_a_fresh_actors_start_from_a_reused_ones():
    """study.profile: the first trial of each process pays the actor start; later trials there only their own gap."""
    import pandas as pd

    from study.profile import start_seconds

    t0 = pd.Timestamp("2026-01-01", tz="UTC")
    at = lambda s: t0 + pd.Timedelta(seconds=s)  # noqa: E731
    trials = pd.DataFrame({  # pid 1 runs a then c (reused), pid 2 runs b; every epoch 10 s
        "trial_id": ["a", "b", "c"], "hostname": ["h"] * 3, "pid": [1, 2, 1],
        "start_time": [at(0), at(0), at(15)], "end_time": [at(14), at(16), at(26)]})
    epochs = pd.DataFrame({"trial_id": ["a", "b", "c"], "seconds": [10.0, 10.0, 10.0]})
    reused, fresh = start_seconds(trials, epochs)
    assert reused == pytest.approx(1.0)  # c: 11 s less 10 s of epochs
    assert fresh == pytest.approx((4 + 6) / 2 - 1.0)  # a and b: gaps 4 and 6 s, less a reused trial's
    only_fresh = start_seconds(trials.iloc[:2], epochs)
    assert only_fresh == pytest.approx((0.0, 5.0))


def test_a_trial_begins_when_its_process_loaded_the_trainables_then_when_called():
    """A fresh actor's first trial counts its imports (from the package's load); a reused actor's trial starts now."""
    code = ("import time, trainables\nfrom trainables import reporting\ntime.sleep(0.3)\n"
            "a, fa = reporting.trial_begun()\nb, fb = reporting.trial_begun()\n"
            "print(a == trainables.LOADED_AT, fa, fb, b - a >= 0.3)")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.stdout.split() == ["True", "True", "False", "True"], r.stdout + r.stderr


def test_lower_bound_counts_the_search_concurrency_limit(tmp_path):
    """3 trials, 2 at a time, take 2 trial lengths; the bound is the larger of that path and work / slots."""
    from study.simulate import lower_bound
    from trainables.simulated import search_seconds, trial_seconds

    cfg = sim_config(tmp_path / "s", write_profile(tmp_path / "p.yaml"))
    t = trial_seconds(cfg, "mnist", "none")
    many, few = lower_bound(cfg, 1000), lower_bound(cfg, 1)
    assert many["critical_path"] >= 2 * t + 0.2 and many["bound"] == many["critical_path"]
    # the first trials of a search start fresh actors: 2 trials at a time pay the actor start once each
    assert search_seconds(cfg, "mnist", "none") == pytest.approx(2 * t + 0.2)
    assert few["bound"] == pytest.approx(few["work"]) and few["work"] >= 18 * t + 6 * 2 * 0.2


@pytest.mark.ray
def test_simulate_on_three_nodes_places_trials_on_several(tmp_path, data_root):
    """--nodes 3 starts a cluster_utils cluster; the trials land on more than one node."""
    prof = write_profile(tmp_path / "p.yaml", epoch_seconds=3.0)
    cmd = [sys.executable, "-m", "study.launch", "--simulate", str(prof), "--cpus", "1", "--nodes", "3", "-q",
           "--stage", "search", "--output", str(tmp_path / "s"), "--set", "datasets=[mnist]",
           "--set", "penalties=[none]", "--set", "trials=3", "--set", "epochs=2", "--set", "max_concurrent_trials=3"]
    r = subprocess.run(cmd, cwd=REPO, env=ray_env({**os.environ, "SALIENCY_DATA_ROOT": str(data_root)}),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "3 node(s) x 1 CPUs" in r.stdout and "bound s" in r.stdout
    trials = R.read_table(tmp_path / "s", "trials")  # 3 trials at once, one CPU per node: they must spread
    assert len(trials) == 3 and trials["node_id"].nunique() > 1


@pytest.mark.ray
def test_killed_simulated_study_resumes_without_rerunning(tmp_path, data_root):
    """SIGKILL the driver of a simulated study once a trial finished; the rerun keeps every finished trial."""
    prof = write_profile(tmp_path / "p.yaml", epoch_seconds=2.0)
    out = tmp_path / "s"
    cmd = [sys.executable, "-m", "study.launch", "--simulate", str(prof), "--cpus", "2", "-q", "--stage", "search",
           "--output", str(out), "--set", "datasets=[mnist]", "--set", "penalties=[none]", "--set", "trials=3",
           "--set", "epochs=2", "--set", "max_concurrent_trials=2"]
    env = ray_env({**os.environ, "SALIENCY_DATA_ROOT": str(data_root)})
    exp = out / "tune" / "mnist-none"
    finished_one = lambda: any(lines[-1]["epoch"] == 2 for lines in result_lines(exp).values())  # noqa: E731
    # 1 s more: Tune snapshots its state at every checkpoint
    signal_when(cmd, env, tmp_path / "run1.log", finished_one, sigkill, settle=1.0, wait=30, what="killed")
    before = result_lines(exp)
    finished = {t: lines for t, lines in before.items() if lines[-1]["epoch"] == 2}
    assert finished and not (exp / "search_done.json").exists()

    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    trials = R.read_table(out, "trials").set_index("trial_id")
    epochs = R.read_table(out, "epochs")
    assert len(trials) == 3 and (trials["epochs_done"] == 2).all()
    assert len(epochs) == 6 and not epochs.duplicated(["trial_id", "epoch"]).any()
    for trial_id, lines in finished.items():  # not retrained: the same records
        rows = epochs[epochs["trial_id"] == trial_id].sort_values("epoch")
        assert rows["train_seconds"].tolist() == [x["train_seconds"] for x in lines[:2]]
        assert abs(trials.loc[trial_id, "start_time"].timestamp() - lines[0]["start_time"]) < 1e-3


DRIVER = """
import contextlib, io, json, sys
from study.launch import main
out = []
for args in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main(args)
        except SystemExit as e:
            rc = e.code
    out.append({"rc": rc, "stderr": err.getvalue()})
print(json.dumps({"runs": out, "ray_imported": "ray" in sys.modules}))
"""


def test_bad_simulate_options_exit_2_with_one_line_before_ray(tmp_path, data_root):
    """A missing or malformed profile, --cpus 0, --nodes without --cpus: one line, exit 2, Ray never imported."""
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("epochs: 3\n")
    cases = [
        (["--simulate", str(tmp_path / "none.yaml"), "--cpus", "4"], "error: --simulate: profile", "not found"),
        (["--simulate", str(bad_yaml), "--cpus", "4"], "error: --simulate: profile", "`epochs` must be"),
        (["--simulate", "--cpus", "0"], "error: --cpus: must be an integer >= 1, got 0", "valid choices"),
        (["--simulate", "--nodes", "2"], "error: --nodes: needs --cpus", "valid choices"),
        (["--cpus", "4"], "error: --cpus: only with --simulate", "valid choices"),
        (["--simulate", "--cpus", "1", "--set", "resources.cpu=2"], "error: --cpus: 1 per node cannot hold", "cpu"),
    ]
    args = [[*a, "--output", str(tmp_path / "o")] for a, *_ in cases]
    r = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(args)], cwd=REPO, capture_output=True, text=True,
                       env=ray_env({**os.environ, "SALIENCY_DATA_ROOT": str(data_root)}), timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert not res["ray_imported"]
    for run, (_, start, part) in zip(res["runs"], cases):
        lines = run["stderr"].strip().splitlines()
        assert run["rc"] == 2 and len(lines) == 1, run
        assert lines[0].startswith(start) and part in lines[0] and "valid choices" in lines[0], lines[0]
