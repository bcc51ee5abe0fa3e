"""The cluster-launcher path for real: sshd on loopback, `study.launch --cluster` brings the head
up over SSH (file mounts, setup commands, `ray start`), submits the study as a Ray Job through an
SSH port-forward to the dashboard (token authentication on), follows it to the end, and `--down`
tears the cluster down.

The head is this machine, reached as root@127.0.0.1 through an sshd the test starts (Debian's
openssh-server and rsync are installed when missing) inside its own PID namespace: `ray stop`,
which the launcher runs on the head, then sees only the Ray started through that sshd, never the
other Ray instances of this (shared) machine.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from pathlib import Path

import pytest

from tests.cluster import helpers

pytestmark = [pytest.mark.ray, pytest.mark.slow]

BOOTSTRAP = [Path.home() / "ray_bootstrap_config.yaml", Path.home() / "ray_bootstrap_key.pem"]


@pytest.fixture
def sshd(workdir):
    saved = {p: p.read_bytes() for p in BOOTSTRAP if p.exists()}  # the launcher writes these on the head (~)
    server = helpers.start_sshd(workdir)
    try:
        yield server
    finally:
        server.stop()  # kills its PID namespace, and with it the head's Ray
        helpers.kill_matching(str(workdir / "ray-head"))  # (when sshd could not have its own namespace)
        for p in BOOTSTRAP:
            if p in saved:
                p.write_bytes(saved[p])
            elif p.exists():
                p.unlink()


def test_cluster_up_job_results_down(sshd, workdir, data_root_path):
    name = f"saliency-test-{secrets.token_hex(3)}"
    token = workdir / "auth_token"
    token.write_text(secrets.token_hex(32))
    path, ports = helpers.cluster_yaml_variant(workdir, sshd, data_root_path, token, name)
    out = workdir / "head-output" / "e2e"
    env = {**os.environ, "RAY_AUTH_TOKEN_PATH": str(token), "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": str(workdir)}
    env.pop("RAY_AUTH_MODE", None)  # the launcher takes it from the cluster file
    args = ["--cluster", str(path), "--output", str(out), "--stage", "search", "-q", "--down",
            "--set", "name=e2e", "--set", "datasets=[mnist]", "--set", "penalties=[none]", "--set", "trials=1",
            "--set", "epochs=1", "--set", "data_fraction=0.01", "--set", "val_limit=200", "--set", "explain_n=10",
            "--set", "per_dataset={}"]
    try:
        r = helpers.run_launcher(args, env, workdir / "e2e.log", timeout=540)
        text = r.stdout
        assert r.returncode == 0, text[-6000:]
        assert "[cluster] bringing up" in text and "Setup commands succeeded" in text, text[-4000:]
        assert re.search(r"\[cluster\] dashboard of 127\.0\.0\.1 forwarded to http://127\.0\.0\.1:\d+ \(SSH\)", text)
        assert "[cluster] submitted job saliency-e2e-" in text
        assert "[search] mnist/none: 1 trials (1 ok, 0 failed)" in text
        assert f"[cluster] results: {out}" in text
        assert "[cluster] down" in text
        # the results are where it said (the head is this machine)
        from foundations import schemas

        trials = schemas.read_table(out, "trials")
        assert len(trials) == 1 and trials["status"].iloc[0] == "ok"
        assert (out / "selected").is_dir() and (out / "models" / "mnist" / "none" / "model.pt").is_file()
        # the project was synced and the data prepared by the setup commands
        assert (workdir / "remote" / "saliency-study" / "study" / "cluster.py").is_file()
        data = workdir / "remote" / "saliency-study" / "data"
        assert not data.exists() or data.is_symlink()  # .gitignore'd: not copied (a link is copied as a link)
        # down: no Ray left behind on the head
        left = [pid for pid in helpers.all_pids() if str(workdir / "ray-head") in helpers.cmdline(pid)]
        assert not left, [helpers.cmdline(p)[:200] for p in left]
    finally:
        for f in Path(os.environ.get("RAY_TMPDIR", "/tmp"), "ray").glob(f"cluster-{name}.*"):
            f.unlink(missing_ok=True)
        for f in Path("/tmp/ray").glob(f"cluster-{name}.*"):
            f.unlink(missing_ok=True)
        shutil.rmtree(workdir / "ray-head", ignore_errors=True)
