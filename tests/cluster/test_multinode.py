"""The study on a real two-node Ray cluster, with its storage on an S3 server.

One study, submitted as a Ray Job through the job server (``--address http://…``), writes its Tune
storage and every Parquet table to ``s3://…`` on a loopback S3 server (moto). While the second
search runs, the worker node is SIGKILLed (raylet, workers and all) and a fresh worker joins: the
trial that ran there continues from its last checkpoint (read back from S3) on another node, and
the study ends with every trial and every row exactly once. pandas reads the results from S3.
"""

from __future__ import annotations

import pytest

import json
import subprocess
import time


from tests.cluster import helpers

pytestmark = pytest.mark.ray  # starts Ray, SSH or a launcher

STUDY = "mn"
SETTINGS = [
    f"name={STUDY}", "datasets=[mnist]", "penalties=[none, gradient]", "trials=2", "epochs=2",
    "data_fraction=0.03", "val_limit=300", "explain_n=20", "per_dataset={}", "max_concurrent_trials=2",
    "max_failures=2", "evaluation.methods=[saliency]", "evaluation.metrics=[morf, roar]",
    "evaluation.n_samples=20", "evaluation.chunk_size=10",
    "evaluation.roar={fractions: [0.5], repeats: 1, epochs: 1, data_fraction: 0.01, n_test: 200}",
]


def _set(items):
    out = []
    for s in items:
        out += ["--set", s]
    return out


def test_local_path_is_refused_on_a_multi_node_cluster(two_nodes, workdir):
    """A node-local --output on a cluster that has (or may get) worker hosts: one clear error, no search."""
    head = two_nodes["head"]
    env = {**two_nodes["env"], "SALIENCY_EXPECT_WORKERS": "1"}
    env.pop("SALIENCY_STORAGE_SHARED", None)
    r = helpers.run_launcher(
        [
            "--address",
            f"127.0.0.1:{head.ports['port']}",
            "--output",
            str(workdir / "local-out"),
            "-q",
            *_set(["name=refused", "datasets=[mnist]", "penalties=[none]", "trials=1"]),
        ],
        env,
        workdir / "refused.log",
        timeout=180,
    )
    assert r.returncode == 2, r.stdout[-3000:]
    assert "is a node-local path" in r.stdout and "--storage s3://" in r.stdout, r.stdout[-3000:]
    assert "[search]" not in r.stdout


def _s3_keys(fs, prefix: str) -> list[str]:
    import pyarrow.fs as pafs

    try:
        infos = fs.get_file_info(pafs.FileSelector(prefix, recursive=True, allow_not_found=True))
    except OSError:
        return []
    return [i.path for i in infos if i.type == pafs.FileType.File]


def _committed_results(fs, prefix: str) -> dict[str, tuple[str, dict]]:
    """Per trial id: (experiment, last result) as the *driver* recorded them in the newest Tune
    experiment state on S3. A result there has been processed by the driver, so its checkpoint is
    registered: a trial killed after that point must restore from it (one only uploaded by the
    trial, not yet reported, may rightly be lost with its node)."""
    import json

    out = {}
    for key in _s3_keys(fs, f"{prefix}/tune"):
        name = key.rsplit("/", 1)[-1]
        if not (name.startswith("experiment_state-") and name.endswith(".json")):
            continue
        exp = key.split("/tune/", 1)[1].split("/", 1)[0]
        try:
            with fs.open_input_stream(key) as f:
                state = json.loads(f.read())
            for trial_json, meta_json in state["trial_data"]:
                trial, meta = json.loads(trial_json), json.loads(meta_json)
                last = meta.get("last_result") or {}
                if last.get("checkpoint_dir_name"):
                    out[trial["trial_id"]] = (exp, last)
        except Exception:  # being rewritten
            continue
    return out


def test_two_nodes_s3_storage_and_a_worker_killed_mid_study(two_nodes, s3, workdir):
    head, worker = two_nodes["head"], two_nodes["workers"][0]
    dash = head.ports["dashboard-port"]
    nodes_before = {n.node_id for n in helpers.alive_nodes(dash)}
    assert len(nodes_before) == 2
    storage = f"s3://{s3.bucket}/studies"
    args = [
        "--address",
        f"http://127.0.0.1:{dash}",
        "--storage",
        storage,
        "--storage-endpoint",
        s3.endpoint,
        "--stage",
        "all",
        "-q",
        *_set(SETTINGS),
    ]
    env = {**two_nodes["env"]}
    log = workdir / "study.log"
    proc = subprocess.Popen(
        [helpers.PY, "-m", "study.launch", *args],
        cwd=helpers.REPO,
        env=env,
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    fs = helpers.s3_filesystem(s3)
    prefix = f"{s3.bucket}/studies/{STUDY}"
    killed_at = None
    try:
        # wait until the driver has recorded the first epoch (and so registered its checkpoint, which
        # the trial uploaded to S3) of a trial running on the worker, then kill the worker node
        # outright: raylet, trial process and all
        def ready():
            assert proc.poll() is None, "the study ended before the worker could be killed:\n" + log.read_text()[-5000:]
            pids = {p for p in helpers.session_pids(worker.sid) if "ImplicitFunc" in helpers.cmdline(p)}
            if not pids:
                return None
            for trial_id, (exp, last) in _committed_results(fs, prefix).items():
                if last.get("pid") in pids and last.get("epoch") == 1:
                    return f"{exp}/{trial_id}/{last['checkpoint_dir_name']}", last
            return None

        key, at_kill = helpers.wait_for(ready, 420, "a trial on the worker to checkpoint its first epoch", every=0.3)
        worker.kill()
        killed_at = time.time()
        # a fresh worker joins (as a replaced machine would); the retried trial may land there or on the head
        replacement = helpers.start_worker(workdir, head, two_nodes["env"], num_cpus=1, label="worker2")
        two_nodes["nodes"].append(replacement)
        two_nodes["workers"].append(replacement)
        helpers.wait_for(lambda: len(helpers.alive_nodes(dash)) == 2 or not replacement.alive(), 120,
                         "the new worker to join")
        assert replacement.alive(), replacement.log.read_text()[-3000:]
        rc = proc.wait(timeout=600)
    finally:
        helpers.kill_group(proc, wait=5)
    out = log.read_text()
    assert rc == 0, out[-6000:]
    assert f"[cluster] results: {storage}/{STUDY}" in out

    # ---- pandas reads every table back from S3
    trials = helpers.read_s3_table(s3, f"studies/{STUDY}/trials")
    epochs = helpers.read_s3_table(s3, f"studies/{STUDY}/epochs")
    selected = helpers.read_s3_table(s3, f"studies/{STUDY}/selected")
    ev = helpers.read_s3_table(s3, f"studies/{STUDY}/evaluation")
    ro = helpers.read_s3_table(s3, f"studies/{STUDY}/roar")
    worker1 = nodes_before - {n.node_id for n in helpers.alive_nodes(dash)}
    assert len(worker1) == 1, "the killed worker should be the only node gone"
    (worker1,) = worker1

    # every trial, once, finished; every epoch once
    assert len(trials) == 4 and trials["trial_id"].is_unique, trials[["penalty", "trial_id", "status"]]
    assert (trials["status"] == "ok").all() and (trials["epochs_done"] == 2).all(), trials[["status", "error"]]
    assert len(epochs) == 8 and not epochs.duplicated(["trial_id", "epoch"]).any()
    assert len(selected) == 2 and set(selected["penalty"].astype(str)) == {"none", "gradient"}
    # work on both nodes: trials and epochs
    assert worker1 in set(epochs["node_id"]) and (set(epochs["node_id"]) - {worker1}), epochs[
        ["trial_id", "epoch", "node_id"]
    ]
    # the worker's trial continued from its epoch-1 checkpoint on another node
    moved = epochs.groupby("trial_id")["node_id"].agg(lambda s: list(s))
    killed_trial = key.split("/checkpoint_")[0].rsplit("/", 1)[-1]
    assert moved[killed_trial][0] == worker1 and moved[killed_trial][-1] != worker1, epochs[
        ["trial_id", "epoch", "node_id"]
    ]
    row = trials.set_index("trial_id").loc[killed_trial]
    assert abs(row["start_time"].timestamp() - at_kill["start_time"]) < 1e-3  # the same trial, continued
    resumed = [t for t, ns in moved.items() if ns[0] == worker1 and ns[-1] != worker1]
    # evaluation and ROAR: every planned task once, spread over more than one node
    assert len(ev) and not ev.duplicated(["model_id", "method", "metric", "level", "sample"]).any()
    assert set(ev["chunk"]) == {0, 1}
    # 2 models × 1 fraction + the random control + the clean retrain (t = 0, docs/spec.md §5): 4 retrains
    assert len(ro) == 4 and not ro.duplicated(["model_id", "method", "fraction", "repeat"]).any()
    used = set(ev["node_id"]) | set(ro["node_id"])
    assert len(used) >= 2, (used, [(n.node_id, n.state) for n in helpers.alive_nodes(dash)], out[-3000:])
    print(
        json.dumps(
            {
                "trial_epochs_per_node": epochs["node_id"].value_counts().to_dict(),
                "evaluation_rows_per_node": ev["node_id"].value_counts().to_dict(),
                "roar_rows_per_node": ro["node_id"].value_counts().to_dict(),
                "resumed_trials": resumed,
                "killed_worker": worker1,
                "study_seconds_after_kill": round(time.time() - killed_at),
            },
            indent=1,
        )
    )

    # ---- the same command again attaches to the finished job: nothing runs twice
    r = helpers.run_launcher(args, env, workdir / "again.log", timeout=120)
    assert r.returncode == 0, r.stdout[-3000:]
    assert "already finished as job saliency-mn-" in r.stdout, r.stdout[-3000:]
    assert len(helpers.read_s3_table(s3, f"studies/{STUDY}/trials")) == 4
