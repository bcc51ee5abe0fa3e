"""Cluster files and storage locations: every mistake gives one clear message, and nothing starts."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from study import cluster
from study import mounts
from study import resources
from foundations import storage
from study.config import load_config

from tests.cluster.helpers import REPO, free_port

pytestmark = pytest.mark.ray  # SSH, cluster launches and a launcher; kept out of make test-fast

SHIPPED = REPO / "cluster.yaml"


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A HOME with an SSH key and a Ray token, like a user's after docs/cluster.md's two steps."""
    h = tmp_path / "home"
    (h / ".ssh").mkdir(parents=True)
    (h / ".ssh" / "id_ed25519").write_text("not a real key\n")
    (h / ".ray").mkdir()
    (h / ".ray" / "auth_token").write_text("0" * 64)
    monkeypatch.setenv("HOME", str(h))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    return h


def _shipped() -> dict:
    return yaml.safe_load(SHIPPED.read_text())


def _write(tmp_path: Path, raw, name="c.yaml") -> Path:
    p = tmp_path / name
    p.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw, sort_keys=False))
    return p


def _edit(raw: dict, path: str, value) -> dict:
    node = raw
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[k]
    if value is _DELETE:
        node.pop(keys[-1])
    else:
        node[keys[-1]] = value
    return raw


_DELETE = object()


def test_shipped_cluster_yaml_is_valid_as_is(home):
    spec = cluster.load_cluster_config(SHIPPED)
    assert spec.provider == "local" and spec.head_ip and spec.worker_ips and spec.ssh_user
    assert spec.auth_mode in cluster.AUTH_MODES and spec.dashboard_host == "127.0.0.1" and spec.may_have_workers
    mounts = spec.sdk_config()["file_mounts"]
    assert mounts["~/saliency-study"] == str(REPO)  # relative to the YAML's folder
    cluster.validate_with_ray(spec)  # Ray's own schema
    text = SHIPPED.read_text()
    for key in ("head_ip", "worker_ips", "ssh_user", "ssh_private_key"):
        assert re.search(rf"{key}:.*# <-- CHANGE", text), key
    assert "pip install" in text and "foundations.data prepare" in text and "--dashboard-host=127.0.0.1" in text


def test_example_cluster_files(home):
    aws = cluster.load_cluster_config(REPO / "clusters" / "aws-gpu.yaml")
    assert aws.provider == "aws" and aws.may_have_workers and aws.auth_mode == "token"
    gpu = aws.raw["available_node_types"]["gpu_worker"]
    assert gpu["min_workers"] < gpu["max_workers"] and "g5" in gpu["node_config"]["InstanceType"]
    cluster.validate_with_ray(aws)
    job = yaml.safe_load((REPO / "clusters" / "kuberay-rayjob.yaml").read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    assert "study.launch" in spec["entrypoint"] and spec["rayClusterSpec"]["authOptions"]["mode"] in cluster.AUTH_MODES
    assert (
        spec["rayClusterSpec"]["workerGroupSpecs"][0]["maxReplicas"]
        > spec["rayClusterSpec"]["workerGroupSpecs"][0]["minReplicas"]
    )


@pytest.mark.parametrize("path", ["cluster.yaml", "clusters/aws-gpu.yaml", "clusters/kuberay-rayjob.yaml"])
def test_no_secrets_in_cluster_files(path):
    text = (REPO / path).read_text()
    assert not re.search(r"AKIA[0-9A-Z]{16}|BEGIN [A-Z ]*PRIVATE KEY|aws_secret_access_key|password\s*:", text, re.I)
    assert not re.search(r"(RAY_AUTH_TOKEN|secret_key|access_key)\s*[:=]\s*\S", text)


BAD = [
    ("missing provider", lambda r: _edit(r, "provider", _DELETE), "no `provider` section"),
    ("provider without type", lambda r: _edit(r, "provider.type", _DELETE), "no `provider` section with a `type`"),
    ("no head ip", lambda r: _edit(r, "provider.head_ip", _DELETE), "provider.head_ip is missing"),
    ("empty head ip", lambda r: _edit(r, "provider.head_ip", " "), "provider.head_ip is missing"),
    ("placeholder head ip", lambda r: _edit(r, "provider.head_ip", "<HEAD_IP>"), "still the placeholder"),
    ("no worker ips", lambda r: _edit(r, "provider.worker_ips", _DELETE), "provider.worker_ips is missing"),
    ("worker ips not a list", lambda r: _edit(r, "provider.worker_ips", "10.0.0.2"), "must be a list of addresses"),
    ("no ssh user", lambda r: _edit(r, "auth.ssh_user", _DELETE), "auth.ssh_user is missing"),
    ("missing key", lambda r: _edit(r, "auth.ssh_private_key", "~/.ssh/nope"), "does not exist on this machine"),
    (
        "auth mode unset",
        lambda r: _edit(r, "head_start_ray_commands", ["ray stop", "ray start --head --port=6379"]),
        "RAY_AUTH_MODE is not set where Ray starts",
    ),
    (
        "auth mode bogus",
        lambda r: _edit(
            r, "worker_start_ray_commands", ["export RAY_AUTH_MODE=secure; ray start --address=$RAY_HEAD_IP:6379"]
        ),
        "RAY_AUTH_MODE='secure' is not a Ray 2.60 value",
    ),
    (
        "auth modes differ",
        lambda r: _edit(
            r, "worker_start_ray_commands", ["export RAY_AUTH_MODE=disabled; ray start --address=$RAY_HEAD_IP:6379"]
        ),
        "RAY_AUTH_MODE differs between the head and the workers",
    ),
    ("no ray start", lambda r: _edit(r, "head_start_ray_commands", ["echo hi"]), "must run `ray start --head"),
    ("missing mount", lambda r: _edit(r, "file_mounts", {"~/x": "no/such/folder"}), "does not exist"),
]


@pytest.mark.parametrize("label,mutate,message", BAD, ids=[b[0] for b in BAD])
def test_bad_cluster_files(home, tmp_path, label, mutate, message):
    raw = _shipped()
    raw["file_mounts"]["~/saliency-study"] = str(REPO)
    p = _write(tmp_path, mutate(raw))
    with pytest.raises(cluster.ClusterError, match=re.escape(message)):
        cluster.load_cluster_config(p)


def test_unparseable_and_missing_files(home, tmp_path):
    with pytest.raises(cluster.ClusterError, match="not found"):
        cluster.load_cluster_config(tmp_path / "nope.yaml")
    with pytest.raises(cluster.ClusterError, match="invalid YAML"):
        cluster.load_cluster_config(_write(tmp_path, "provider: [type: local\n"))
    with pytest.raises(cluster.ClusterError, match="expected a mapping"):
        cluster.load_cluster_config(_write(tmp_path, "- a\n- b\n"))
    raw = _shipped()
    raw["bogus_key"] = 1
    raw["file_mounts"]["~/saliency-study"] = str(REPO)
    with pytest.raises(cluster.ClusterError, match="bogus_key"):
        cluster.validate_with_ray(cluster.load_cluster_config(_write(tmp_path, raw)))


def test_token_mode_needs_a_token(home, tmp_path, monkeypatch):
    (home / ".ray" / "auth_token").unlink()
    raw = _shipped()
    raw["file_mounts"] = {"~/saliency-study": str(REPO)}
    with pytest.raises(cluster.ClusterError, match="ray get-auth-token --generate"):
        cluster.load_cluster_config(_write(tmp_path, raw))
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(_write(tmp_path, "1" * 64, "tok")))
    assert cluster.load_cluster_config(_write(tmp_path, raw)).auth_mode == "token"


def test_unreachable_head_is_reported_fast(home, tmp_path):
    raw = _shipped()
    raw["file_mounts"]["~/saliency-study"] = str(REPO)
    # TEST-NET-3: nothing answers there (a transparent proxy may accept the TCP connection, but
    # it sends no SSH greeting).
    spec = cluster.load_cluster_config(_write(tmp_path, _edit(raw, "provider.head_ip", "203.0.113.7")))
    with pytest.raises(
        cluster.ClusterError,
        match=r"cannot reach the head node 203\.0\.113\.7 on its SSH port 22 .*Nothing was started"
    ):
        cluster.check_reachable(spec, timeout=2)
    # a port that is closed on this machine: refused at once
    port = free_port()
    spec.head_ip, spec.ssh_port = "127.0.0.1", port
    with pytest.raises(cluster.ClusterError, match="refused"):
        cluster.check_reachable(spec, timeout=2)
    # something that is not an SSH server
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    spec.ssh_port = srv.getsockname()[1]
    import threading

    def serve():
        c, _ = srv.accept()
        c.sendall(b"HTTP/1.0 400 Bad\r\n\r\n")
        c.close()

    threading.Thread(target=serve, daemon=True).start()
    with pytest.raises(cluster.ClusterError, match="not an SSH server"):
        cluster.check_reachable(spec, timeout=2)
    srv.close()


LAUNCH = """
import contextlib, io, json, sys
from study.launch import main
out = []
for args in json.loads(sys.argv[1]):
    err, so = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(so):
        try:
            rc = main(args)
        except SystemExit as e:
            rc = e.code
    out.append({"rc": rc, "stderr": err.getvalue(), "stdout": so.getvalue()})
print(json.dumps({"runs": out}))
"""


def test_launcher_rejects_bad_cluster_files_and_uris_without_starting_anything(home, tmp_path):
    raw = _shipped()
    raw["file_mounts"]["~/saliency-study"] = str(REPO)
    no_provider = _write(tmp_path, {k: v for k, v in raw.items() if k != "provider"}, "noprov.yaml")
    no_head = _write(tmp_path, _edit(yaml.safe_load(yaml.safe_dump(raw)), "provider.head_ip", _DELETE), "nohead.yaml")
    unreachable = _write(
        tmp_path, _edit(yaml.safe_load(yaml.safe_dump(raw)), "provider.head_ip", "203.0.113.9"), "far.yaml"
    )
    cases = [
        (["--cluster", str(no_provider)], "no `provider` section"),
        (["--cluster", str(no_head)], "provider.head_ip is missing"),
        (["--cluster", str(unreachable)], "cannot reach the head node 203.0.113.9"),
        (["--cluster", str(tmp_path / "missing.yaml")], "not found"),
        (["--storage", "foo://bucket/x"], "unsupported storage scheme 'foo'"),
        (["--storage", "s3://"], "no bucket"),
        (["--storage", "s3://bucket/x?endpoint_override=h:1"], "--storage-endpoint"),
        (["--storage-endpoint", "ftp://h:1", "--storage", "s3://b/x"], "expected http(s)://host:port"),
        (["--down"], "--down needs --cluster"),
        (["--cluster", str(SHIPPED), "--address", "auto"], "not allowed with"),
    ]
    env = {**os.environ, "HOME": str(home), "SALIENCY_SSH_CHECK_TIMEOUT": "2", "RAY_USAGE_STATS_ENABLED": "0"}
    import json

    r = subprocess.run(
        [sys.executable, "-c", LAUNCH, json.dumps([a for a, _ in cases])],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    runs = json.loads(r.stdout.strip().splitlines()[-1])["runs"]
    for (args, message), run in zip(cases, runs):
        assert run["rc"] == 2, (args, run)
        assert message in run["stderr"], (args, run["stderr"])
        assert "Traceback" not in run["stderr"], run["stderr"]
        assert "[cluster] bringing up" not in run["stdout"] and "submitted job" not in run["stdout"], run["stdout"]


# --------------------------------------------------------------------------- storage locations
def test_storage_locations_normalise_and_reject_clearly(tmp_path):
    assert storage.normalize("s3://b//studies/q/") == "s3://b/studies/q"
    assert storage.normalize(f"file://{tmp_path}/x") == str(tmp_path / "x")
    assert storage.normalize("rel/dir") == str(Path("rel/dir").absolute())
    assert storage.join("s3://b/q", "trials", "dataset=mnist") == "s3://b/q/trials/dataset=mnist"
    assert storage.join(str(tmp_path), "a", "b") == str(tmp_path / "a" / "b")
    assert storage.is_remote("gs://b/x") and not storage.is_remote("/x") and not storage.is_remote("file:///x")
    for bad, msg in [
        ("", "empty storage location"),
        ("s3://", "no bucket"),
        ("gs:///x", "no bucket"),
        ("foo://b/x", "unsupported storage scheme 'foo'"),
        ("s3:/b/x", "malformed URI"),
        ("file://rel", "absolute path"),
        ("s3://b/../x", "'..' are not allowed"),
        ("s3://b/x?region=y", "--storage-endpoint"),
    ]:
        with pytest.raises(storage.StorageError, match=re.escape(msg)):
            storage.normalize(bad)


def test_node_local_path_refused_on_a_multi_host_cluster(tmp_path, monkeypatch):
    monkeypatch.delenv("SALIENCY_STORAGE_SHARED", raising=False)
    mounts.check_shared("s3://b/x", {"10.0.0.1", "10.0.0.2"})  # object storage: fine
    mounts.check_shared(str(tmp_path), {"10.0.0.1"})  # one host: its disk is shared by all its nodes
    with pytest.raises(
        storage.StorageError,
        match=r"node-local path \(.*\) but this Ray cluster is multi-node: its nodes run on 2 hosts"
    ):
        mounts.check_shared(str(tmp_path), {"10.0.0.1", "10.0.0.2"})
    with pytest.raises(storage.StorageError, match="it can add worker hosts"):
        mounts.check_shared(str(tmp_path), {"10.0.0.1"}, expect_more_hosts=True)
    monkeypatch.setenv("SALIENCY_STORAGE_SHARED", "1")  # the operator vouches for an unrecognised shared fs
    mounts.check_shared(str(tmp_path), {"10.0.0.1", "10.0.0.2"})


def test_submission_id_is_derived_from_the_study(tmp_path):
    a = load_config("quick", [f"output=s3://b/{tmp_path.name}"])
    b = load_config("quick", [f"output=s3://b/{tmp_path.name}", "resources.cpu=2", "max_concurrent_trials=4"])
    c = load_config("quick", [f"output=s3://b/{tmp_path.name}", "trials=3"])
    d = load_config("quick", [f"output=s3://b/{tmp_path.name}-other"])
    assert cluster.submission_base(a) == cluster.submission_base(b)  # same study, other resources: attach
    assert len({cluster.submission_base(a), cluster.submission_base(c), cluster.submission_base(d)}) == 3
    assert re.fullmatch(r"saliency-quick-[0-9a-f]{12}", cluster.submission_base(a))
    assert cluster._attempt(cluster.submission_base(a) + "-r3", cluster.submission_base(a)) == 3


class _FakeJobs:
    """A job server that remembers submissions (the real one is exercised in test_multinode)."""

    def __init__(self, jobs=()):
        from types import SimpleNamespace

        self.jobs = [SimpleNamespace(submission_id=i, status=s) for i, s in jobs]
        self.submitted = []

    def list_jobs(self):
        return list(self.jobs)

    def submit_job(self, **kw):
        from types import SimpleNamespace

        if any(j.submission_id == kw["submission_id"] for j in self.jobs):
            raise RuntimeError(f"Job with submission_id {kw['submission_id']} already exists.")
        self.submitted.append(kw)
        self.jobs.append(SimpleNamespace(submission_id=kw["submission_id"], status="PENDING"))
        return kw["submission_id"]


def test_same_study_attaches_finished_is_reported_failed_is_resubmitted(tmp_path):
    cfg = load_config("quick", ["output=s3://b/studies/quick", "datasets=[mnist]"])
    base = cluster.submission_base(cfg)
    args = dict(stage="all", verbose=1, quiet=True, expect_workers=True, auth_mode="token", log=lambda _: None)
    jobs = _FakeJobs()
    assert cluster.submit_or_attach(jobs, cfg, **args) == (base, "submitted")
    sub = jobs.submitted[0]
    env = sub["runtime_env"]
    assert sub["entrypoint"] == "python -m study.launch --job --stage all -q"
    assert env["working_dir"] == str(REPO) and {"data/", "outputs/", ".git/"} <= set(env["excludes"])
    assert env["env_vars"]["RAY_AUTH_MODE"] == "token" and env["env_vars"]["SALIENCY_EXPECT_WORKERS"] == "1"
    assert yaml.safe_load(env["env_vars"]["SALIENCY_STUDY_CONFIG"])["output"] == "s3://b/studies/quick"
    assert not any(re.search(r"SECRET|ACCESS_KEY|TOKEN$", k) for k in env["env_vars"])  # no credentials shipped
    assert cluster.submit_or_attach(jobs, cfg, **args) == (base, "attached")  # still pending: attach
    jobs.jobs[-1].status = "SUCCEEDED"
    assert cluster.submit_or_attach(jobs, cfg, **args) == (base, "done")
    jobs.jobs[-1].status = "FAILED"
    assert cluster.submit_or_attach(jobs, cfg, **args) == (f"{base}-r2", "submitted")  # resumes from its storage
    jobs.jobs[-1].status = "STOPPED"
    assert cluster.submit_or_attach(jobs, cfg, **args) == (f"{base}-r3", "submitted")
    assert len(jobs.submitted) == 3


def _autoscaling(raw: dict) -> dict:
    """The shipped file as an autoscaling (cloud) cluster whose node types declare their resources.
    Only parsed here: nothing is started and no cloud API is called (the check runs before)."""
    raw = {k: v for k, v in raw.items() if k not in ("provider",)}
    raw["provider"] = {"type": "aws", "region": "us-west-2"}
    raw["available_node_types"] = {
        "head": {"resources": {"CPU": 4}, "node_config": {}, "max_workers": 0},
        "cpu_worker": {"resources": {"CPU": 16}, "node_config": {}, "min_workers": 0, "max_workers": 8},
    }
    raw["head_node_type"] = "head"
    return raw


def test_a_request_no_node_type_can_hold_is_refused_before_anything_starts(home, tmp_path):
    """On an autoscaling cluster, the node types it can start are compared with a trial's request."""
    raw = _shipped()
    raw["file_mounts"]["~/saliency-study"] = str(REPO)
    p = _write(tmp_path, _autoscaling(raw), "aws.yaml")
    spec = cluster.load_cluster_config(p)
    assert spec.node_types == {"head": {"CPU": 4.0}, "cpu_worker": {"CPU": 16.0}}
    cfg = load_config("quick")
    assert resources.node_type_shortfall(cfg, spec.node_types) is None
    assert resources.node_type_shortfall(load_config("quick", ["resources.cpu=16"]), spec.node_types) is None  # worker
    assert resources.node_type_shortfall(cfg, {}) is None  # types without declared resources: Ray finds out at start
    why = resources.node_type_shortfall(load_config("quick", ["resources.cpu=32"]), spec.node_types)
    assert why.startswith("resources.cpu: each trial asks for 32 CPU, but no node type of the cluster has more than 16")
    assert "cpu_worker: 16 CPU, 0 GPU" in why and "valid choices:" in why
    env = {**os.environ, "HOME": str(home), "RAY_USAGE_STATS_ENABLED": "0"}
    r = subprocess.run(
        [sys.executable, "-c", LAUNCH, json.dumps([["--cluster", str(p), "--set", "resources.gpu=0.25"]])],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    run = json.loads(r.stdout.strip().splitlines()[-1])["runs"][0]
    err = [ln for ln in run["stderr"].splitlines() if ln.strip()]
    assert run["rc"] == 2 and len(err) == 1, run
    assert err[0].startswith("error: resources.gpu: each trial asks for 0.25 GPU, but no node type of the cluster "
                             "has more than 0"), err
    assert "[cluster]" not in run["stdout"]  # nothing was started or contacted
