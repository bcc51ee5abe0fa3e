"""Run the study on a Ray cluster: cluster-launcher YAML -> cluster up -> Ray Job -> logs -> results.

::

    python -m study.launch --cluster cluster.yaml --config quick --storage s3://bucket/studies [--down]
    python -m study.launch --address http://127.0.0.1:8265 --config quick --storage s3://bucket/studies

With ``--cluster`` the launcher

1. validates the YAML before anything starts (provider, head address, SSH user and key, an
   explicit and consistent ``RAY_AUTH_MODE`` in the start commands, the token file in token
   mode) and checks that the head answers on its SSH port (a TCP connect with a short timeout);
2. brings the cluster up, or reuses it, with ``ray.autoscaler.sdk.create_or_update_cluster(...,
   no_restart=True)`` (setup commands install the project and prepare the data once per node);
3. opens an SSH port-forward to the head's dashboard (bound to 127.0.0.1 there) and submits the
   study as a Ray Job (``JobSubmissionClient``) whose working_dir is this project (``data/``,
   ``outputs/``, ``.git`` excluded). The submission id is derived from the study (its output
   location and search settings): launching the same study again attaches to the running job,
   reports a finished one, and resubmits a failed or stopped one as ``<id>-r2``, ``-r3`` … (the
   study resumes from its storage);
4. streams the job's logs, prints where the results are, and with ``--down`` tears the
   cluster down.

With ``--address http://host:8265`` steps 3 and 4 run against an already-running cluster.
The job's entrypoint is ``python -m study.launch --job``: the launcher itself, as the job's driver on
the head (``--address auto``), reading the study config from the job's environment (:func:`job_config`).
This module never imports the launcher (the launcher imports it).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from foundations import storage
from study import mounts
from study.config import REPO_ROOT, ConfigError, StudyConfig, dump_config
from study.resources import EXPECT_WORKERS_ENV, NODE_TYPES_ENV, node_type_shortfall

AUTH_MODES = ("disabled", "token")  # Ray 2.60's RAY_AUTH_MODE values (ray._raylet.AuthenticationMode)
DEFAULT_DASHBOARD_PORT = 8265
DEFAULT_SSH_PORT = 22
EXCLUDES = ["data/", "outputs/", ".git/", "*.egg-info/", "__pycache__/", ".pytest_cache/", ".benchmarks/",
            "*.pt", "*.parquet", ".install-stamp"]
CONFIG_ENV = "SALIENCY_STUDY_CONFIG"
DEFAULT_REMOTE_OUTPUT = "~/saliency-outputs"
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
PLACEHOLDER = re.compile(r"<[^>]*>|\b(CHANGE_?ME|TODO|x\.x\.x\.x)\b", re.I)


class ClusterError(RuntimeError):
    """The cluster file, the cluster or the job is not usable; the message says why and what to do."""


# --------------------------------------------------------------------------- the cluster file
@dataclass
class ClusterSpec:
    """What the launcher needs from a cluster-launcher YAML (validated)."""

    path: Path
    raw: dict
    name: str
    provider: str
    head_ip: str = ""
    worker_ips: list[str] = field(default_factory=list)
    ssh_user: str = ""
    ssh_key: str = ""
    ssh_proxy: str = ""
    ssh_port: int = DEFAULT_SSH_PORT
    dashboard_port: int = DEFAULT_DASHBOARD_PORT
    dashboard_host: str = "127.0.0.1"
    auth_mode: str = "disabled"
    may_have_workers: bool = False
    node_types: dict[str, dict] = field(default_factory=dict)  # available_node_types with declared resources

    def sdk_config(self) -> dict:
        """The config handed to ``ray.autoscaler.sdk``: file_mounts' local paths made absolute
        (relative to the YAML's folder) so the launcher works from any directory."""
        cfg = copy.deepcopy(self.raw)
        mounts = {}
        for remote, local in (cfg.get("file_mounts") or {}).items():
            mounts[remote] = _local_path(self.path, local)
        if mounts:
            cfg["file_mounts"] = mounts
        return cfg


def _local_path(yaml_path: Path, local: str) -> str:
    p = Path(os.path.expanduser(str(local)))
    if not p.is_absolute():
        p = yaml_path.parent / p
    s = str(p.resolve())
    return s + "/" if str(local).endswith("/") and not s.endswith("/") else s


def _commands(raw: dict, key: str) -> list[str]:
    v = raw.get(key) or []
    return [str(c) for c in v] if isinstance(v, list) else [str(v)]


def _auth_modes(commands: list[str]) -> set[str]:
    """The RAY_AUTH_MODE values set in the commands that run ``ray start``."""
    modes = set()
    for c in commands:
        if "ray start" in c or re.search(r"\bray\s+start\b", c):
            found = re.findall(r"RAY_AUTH_MODE=[\"']?([A-Za-z0-9_]*)", c)
            modes.update(found or ["<unset>"])
    return modes


def _flag(commands: list[str], name: str) -> str | None:
    for c in commands:
        m = re.search(rf"--{name}[= ]+[\"']?([^\s\"';]+)", c)
        if m:
            return m.group(1)
    return None


def set_auth_mode(mode: str) -> None:
    """Set RAY_AUTH_MODE for this process (and refresh Ray's cached config if Ray is loaded)."""
    os.environ["RAY_AUTH_MODE"] = mode
    if "ray._raylet" in sys.modules:
        # Private API (no public way to re-read RAY_AUTH_MODE once Ray is loaded); Ray is pinned to the
        # tested minor range for it in pyproject.toml. Ray itself calls the same in
        # ray/_private/authentication/authentication_token_setup.py.
        from ray._raylet import Config

        Config.initialize("")


def token_available() -> bool:
    """A Ray auth token this machine can send: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    p = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.expanduser("~/.ray/auth_token")
    return os.path.isfile(p) and os.path.getsize(p) > 0


def load_cluster_config(path: str | Path) -> ClusterSpec:
    """Read and check a cluster-launcher YAML; raises :class:`ClusterError` naming the first problem."""
    p = Path(path).expanduser()
    where = str(path)
    if not p.is_file():
        raise ClusterError(f"cluster file {where!r} not found "
                           "(copy cluster.yaml from the repository root and fill in your hosts)")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ClusterError(f"{where}: invalid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(raw, dict):
        raise ClusterError(f"{where}: expected a mapping at the top level (a Ray cluster-launcher config)")
    provider = raw.get("provider")
    if not isinstance(provider, dict) or not provider.get("type"):
        raise ClusterError(
            f"{where}: no `provider` section with a `type`; an on-premise cluster needs\n"
            "  provider:\n    type: local\n    head_ip: <head address>\n    worker_ips: [<worker address>, ...]"
        )
    spec = ClusterSpec(
        path=p.absolute(), raw=raw, name=str(raw.get("cluster_name") or "default"), provider=str(provider["type"])
    )
    auth = raw.get("auth") or {}
    if not isinstance(auth, dict):
        raise ClusterError(f"{where}: `auth` must be a mapping (ssh_user, ssh_private_key)")
    spec.ssh_user = str(auth.get("ssh_user") or "")
    spec.ssh_key = os.path.expanduser(str(auth.get("ssh_private_key") or ""))
    spec.ssh_proxy = str(auth.get("ssh_proxy_command") or "")

    if spec.provider == "local":
        if provider.get("coordinator_address"):
            spec.may_have_workers = True
        else:
            head = provider.get("head_ip")
            if not head or not isinstance(head, str) or not head.strip():
                raise ClusterError(
                    f"{where}: provider.head_ip is missing: set it to the head machine's address (IP or host name)"
                )
            if PLACEHOLDER.search(head):
                raise ClusterError(
                    f"{where}: provider.head_ip is still the placeholder {head!r}: set it to the head machine's address"
                )
            spec.head_ip = head.strip()
            workers = provider.get("worker_ips", None)
            if workers is None:
                raise ClusterError(
                    f"{where}: provider.worker_ips is missing: list the worker addresses ([] for a head-only cluster)"
                )
            if not isinstance(workers, list) or not all(isinstance(w, str) and w.strip() for w in workers):
                raise ClusterError(f"{where}: provider.worker_ips must be a list of addresses, got {workers!r}")
            bad = [w for w in workers if PLACEHOLDER.search(w)]
            if bad:
                raise ClusterError(
                    f"{where}: provider.worker_ips still holds placeholder(s) {bad}: list your worker addresses"
                )
            spec.worker_ips = [w.strip() for w in workers]
            spec.may_have_workers = bool(spec.worker_ips)
            if provider.get("external_head_ip"):
                spec.head_ip = str(provider["external_head_ip"])
        if not spec.ssh_user:
            raise ClusterError(f"{where}: auth.ssh_user is missing: the user the launcher logs in as on every node")
        if PLACEHOLDER.search(spec.ssh_user):
            raise ClusterError(f"{where}: auth.ssh_user is still the placeholder {spec.ssh_user!r}")
    else:
        spec.may_have_workers = int(raw.get("max_workers", 0) or 0) > 0 or any(
            int((t or {}).get("max_workers", 0) or 0) > 0 for t in (raw.get("available_node_types") or {}).values()
        )
    if spec.ssh_key and not os.path.isfile(spec.ssh_key):
        raise ClusterError(
            f"{where}: auth.ssh_private_key {auth.get('ssh_private_key')!r} does not exist on this machine"
        )

    head_cmds, worker_cmds = _commands(raw, "head_start_ray_commands"), _commands(raw, "worker_start_ray_commands")
    if not any("ray start" in c for c in head_cmds):
        raise ClusterError(f"{where}: head_start_ray_commands must run `ray start --head ...` (see cluster.yaml)")
    head_modes = _auth_modes(head_cmds)
    worker_modes = _auth_modes(worker_cmds) if any("ray start" in c for c in worker_cmds) else set()
    explain = (
        f"set it explicitly in the command that runs `ray start`, the same value for the head and the workers "
        f"(e.g. `export RAY_AUTH_MODE=token; ray start ...`; accepted values: {', '.join(AUTH_MODES)})"
    )
    for label, modes in (("head_start_ray_commands", head_modes), ("worker_start_ray_commands", worker_modes)):
        if "<unset>" in modes:
            raise ClusterError(f"{where}: {label}: RAY_AUTH_MODE is not set where Ray starts; {explain}")
        unknown = sorted(m for m in modes if m not in AUTH_MODES)
        if unknown:
            raise ClusterError(f"{where}: {label}: RAY_AUTH_MODE={unknown[0]!r} is not a Ray 2.60 value; {explain}")
    modes = head_modes | worker_modes
    if len(modes) > 1:
        raise ClusterError(
            f"{where}: RAY_AUTH_MODE differs between the head and the workers ({', '.join(sorted(modes))}); {explain}"
        )
    spec.auth_mode = modes.pop()
    if spec.auth_mode == "token" and not token_available():
        raise ClusterError(
            f"{where}: RAY_AUTH_MODE=token but this machine has no Ray token to send: run `ray get-auth-token "
            "--generate` "
            "(writes ~/.ray/auth_token, which the file_mounts copy to every node), or set RAY_AUTH_TOKEN_PATH"
        )
    port = _flag(head_cmds, "dashboard-port")
    host = _flag(head_cmds, "dashboard-host")
    if port is not None:
        if not port.isdigit():
            raise ClusterError(f"{where}: --dashboard-port {port!r} in head_start_ray_commands is not a port number")
        spec.dashboard_port = int(port)
    spec.dashboard_host = host or "127.0.0.1"
    if any("--include-dashboard=false" in c.replace(" ", "=").lower() for c in head_cmds):
        raise ClusterError(
            f"{where}: the head starts without a dashboard; the job server needs it (drop --include-dashboard=false)"
        )
    for remote, local in (raw.get("file_mounts") or {}).items():
        lp = _local_path(spec.path, local)
        if not os.path.exists(lp.rstrip("/")):
            hint = " (run `ray get-auth-token --generate` first)" if "auth_token" in str(local) else ""
            raise ClusterError(f"{where}: file_mounts[{remote!r}]: the local path {local!r} does not exist{hint}")
    for tname, t in (raw.get("available_node_types") or {}).items():
        res = (t or {}).get("resources") if isinstance(t, dict) else None
        if isinstance(res, dict) and res:
            spec.node_types[str(tname)] = {str(k): float(v) for k, v in res.items() if isinstance(v, (int, float))}
    return spec


def check_reachable(spec: ClusterSpec, timeout: float | None = None) -> None:
    """TCP-connect to the head's SSH port and read the SSH server's greeting (a firewall or proxy
    that accepts any connection sends none); raises :class:`ClusterError` if it does not answer."""
    if spec.provider != "local" or not spec.head_ip:
        return  # a cloud head does not exist before `up`; the provider's API is checked by the SDK
    if spec.ssh_proxy:
        return  # the proxy command decides how the head is reached
    timeout = timeout if timeout is not None else float(os.environ.get("SALIENCY_SSH_CHECK_TIMEOUT", "5"))
    t0 = time.perf_counter()
    try:
        with socket.create_connection((spec.head_ip, spec.ssh_port), timeout=timeout) as s:
            s.settimeout(max(0.5, timeout - (time.perf_counter() - t0)))
            greeting = s.recv(64)
        if greeting.startswith(b"SSH-"):
            return
        reason = f"something answered but it is not an SSH server ({greeting[:20]!r})"
    except (socket.timeout, TimeoutError):
        reason = "no answer"
    except OSError as exc:
        reason = exc.strerror or str(exc)
    raise ClusterError(
        f"{spec.path.name}: cannot reach the head node {spec.head_ip} on its SSH port {spec.ssh_port} "
        f"({reason} after {time.perf_counter() - t0:.1f} s): check provider.head_ip, that the machine is up with "
        "sshd listening, and your network/VPN. Nothing was started."
    )


def validate_with_ray(spec: ClusterSpec) -> None:
    """Ray's own schema check of the (filled-out) config, as one clear message."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        # Private API: Ray's public SDK (ray.autoscaler.sdk) validates only inside create_or_update_cluster,
        # after it starts working; prepare_config also fills the local provider's node types the schema
        # needs. Ray is pinned to the tested minor range for it in pyproject.toml.
        from ray.autoscaler._private.util import prepare_config, validate_config
    except ImportError as exc:  # pragma: no cover - ray[default] missing
        raise ClusterError(f"the Ray cluster launcher is not installed ({exc}); pip install 'ray[default]'") from None
    try:
        validate_config(prepare_config(spec.sdk_config()))
    except SystemExit:
        raise ClusterError(f"{spec.path.name}: Ray rejected the cluster config (see the message above)") from None
    except Exception as exc:  # jsonschema.ValidationError and friends
        msg = getattr(exc, "message", None) or str(exc)
        loc = "/".join(str(x) for x in getattr(exc, "absolute_path", []) or [])
        raise ClusterError(
            f"{spec.path.name}: invalid cluster config{(' at ' + loc) if loc else ''}: {' '.join(msg.split())[:500]}"
        ) from None


def _job_exists(client, job_id: str) -> bool:
    """Whether the job server knows ``job_id`` (asked, instead of reading an error message)."""
    try:
        client.get_job_info(job_id)
    except Exception:  # noqa: BLE001 - RuntimeError (404: no such job) or the server gone
        return False
    return True


# --------------------------------------------------------------------------- up / down
def _quiet_sdk():
    from ray.autoscaler import sdk

    sdk.configure_logging(log_style="record", color_mode="false", verbosity=0)


def cluster_up(spec: ClusterSpec, log: Callable[[str], None] = print) -> None:
    """Create the cluster, or update/reuse a running one without restarting Ray."""
    from ray.autoscaler import sdk

    _quiet_sdk()
    log(
        f"[cluster] bringing up {spec.name!r} ({spec.provider}; head {spec.head_ip or 'from the provider'}"
        f"{', workers ' + ', '.join(spec.worker_ips) if spec.worker_ips else ''}); setup commands run once per node"
    )
    t0 = time.perf_counter()
    try:
        sdk.create_or_update_cluster(spec.sdk_config(), no_restart=True)
    except SystemExit as exc:
        raise ClusterError(f"the cluster launcher stopped (exit {exc.code}); see its output above") from None
    except Exception as exc:
        raise ClusterError(f"the cluster launcher failed: {' '.join(str(exc).split())[:800]}") from None
    log(f"[cluster] up in {time.perf_counter() - t0:.0f} s")


def cluster_down(spec: ClusterSpec, log: Callable[[str], None] = print) -> None:
    from ray.autoscaler import sdk

    _quiet_sdk()
    log(f"[cluster] tearing down {spec.name!r}")
    try:
        sdk.teardown_cluster(spec.sdk_config())
    except SystemExit as exc:
        raise ClusterError(f"teardown stopped (exit {exc.code}); see its output above") from None
    log("[cluster] down")


def head_address(spec: ClusterSpec) -> str:
    if spec.head_ip:
        return spec.head_ip
    from ray.autoscaler import sdk

    return sdk.get_head_node_ip(spec.sdk_config())


# --------------------------------------------------------------------------- dashboard access
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ssh_options(spec: ClusterSpec) -> list[str]:
    """The SSH options the Ray cluster launcher itself uses for this cluster (plus BatchMode)."""
    opts = [
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        f"UserKnownHostsFile={os.devnull}",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "ExitOnForwardFailure=yes",
        "-o",
        "ServerAliveInterval=5",
        "-o",
        "ServerAliveCountMax=3",
        "-o",
        "ConnectTimeout=10",
        "-o",
        "LogLevel=ERROR",
    ]
    if spec.ssh_key:
        opts = ["-i", spec.ssh_key, *opts]
    if spec.ssh_proxy:
        opts += ["-o", f"ProxyCommand={spec.ssh_proxy}"]
    if spec.ssh_port != DEFAULT_SSH_PORT:
        opts += ["-p", str(spec.ssh_port)]
    return opts


@contextlib.contextmanager
def ssh_tunnel(spec: ClusterSpec, host: str, remote_port: int, timeout: float = 30.0):
    """Forward 127.0.0.1:<free port> here to 127.0.0.1:<remote_port> on the head; yields the URL."""
    local = free_port()
    cmd = [
        "ssh",
        "-N",
        "-L",
        f"127.0.0.1:{local}:127.0.0.1:{remote_port}",
        *ssh_options(spec),
        f"{spec.ssh_user}@{host}",
    ]
    err = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True
    )
    try:
        deadline = time.time() + timeout
        while True:
            if proc.poll() is not None:
                err.seek(0)
                raise ClusterError(
                    f"the SSH port-forward to {spec.ssh_user}@{host} failed (exit {proc.returncode}): "
                    f"{' '.join(err.read().decode(errors='replace').split())[:500]}"
                )
            try:
                with socket.create_connection(("127.0.0.1", local), timeout=1):
                    break
            except OSError:
                if time.time() > deadline:
                    raise ClusterError(f"the SSH port-forward to {host} did not open within {timeout:.0f} s") from None
                time.sleep(0.2)
        yield f"http://127.0.0.1:{local}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        err.close()


def job_client(address: str, timeout: float = 90.0):
    """A JobSubmissionClient, retried while the dashboard starts (right after `up`)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    deadline, last = time.time() + timeout, None
    while time.time() < deadline:
        try:
            return JobSubmissionClient(address)
        except AuthenticationError as exc:  # HTTP 401/403 from the job server: retrying will not help
            last = exc
            break
        except Exception as exc:  # ConnectionError, the dashboard still starting
            last = exc
            time.sleep(1.0)
    msg = " ".join(str(last).split())[:500]
    if isinstance(last, AuthenticationError):
        raise ClusterError(
            f"the job server at {address} refused this machine's Ray token ({msg}); RAY_AUTH_MODE must be "
            "the same here and on the cluster, with the same token"
        )
    raise ClusterError(
        f"no Ray job server at {address} after {timeout:.0f} s ({msg}); is the dashboard running "
        "(ray[default] installed, --include-dashboard not false)?"
    )


# --------------------------------------------------------------------------- the job
def submission_base(cfg: StudyConfig) -> str:
    """A stable id for the study: its name and a hash of (output location, search settings)."""
    key = json.dumps({"output": cfg.output, "search": cfg.search_key()}, sort_keys=True, default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    name = re.sub(r"[^A-Za-z0-9_-]", "-", cfg.name)[:40]
    return f"saliency-{name}-{digest}"


def _attempt(job_id: str, base: str) -> int:
    if job_id == base:
        return 1
    m = re.fullmatch(re.escape(base) + r"-r(\d+)", job_id)
    return int(m.group(1)) if m else 0


def runtime_env(
    cfg: StudyConfig, expect_workers: bool, auth_mode: str | None, node_types: dict | None = None
) -> dict:
    env = {CONFIG_ENV: dump_config(cfg), "RAY_USAGE_STATS_ENABLED": "0", **storage.worker_env()}
    if expect_workers:
        env[EXPECT_WORKERS_ENV] = "1"
    if node_types:
        env[NODE_TYPES_ENV] = json.dumps(node_types, sort_keys=True)
    if auth_mode:
        env["RAY_AUTH_MODE"] = auth_mode
    return {"working_dir": str(REPO_ROOT), "excludes": list(EXCLUDES), "env_vars": env}


def entrypoint(stage: str, verbose: int, quiet: bool) -> str:
    args = ["python", "-m", "study.launch", "--job", "--stage", stage]
    if quiet:
        args.append("-q")
    elif verbose >= 2:
        args.append("-vv")
    return " ".join(shlex.quote(a) for a in args)


def submit_or_attach(
    client,
    cfg: StudyConfig,
    stage: str,
    verbose: int,
    quiet: bool,
    expect_workers: bool,
    auth_mode: str | None,
    log: Callable[[str], None] = print,
    node_types: dict | None = None,
) -> tuple[str, str]:
    """Submit the study, or find its job; returns (submission id, what happened: submitted|attached|done)."""
    base = submission_base(cfg)
    mine = sorted(
        (
            (_attempt(j.submission_id or "", base), j)
            for j in client.list_jobs()
            if j.submission_id and _attempt(j.submission_id, base)
        ),
        key=lambda t: t[0],
    )
    if mine:
        n, last = mine[-1]
        status = str(last.status)
        if status in ("PENDING", "RUNNING"):
            log(f"[cluster] study {cfg.name!r} is already running as job {last.submission_id} ({status}): attaching")
            return last.submission_id, "attached"
        if status == "SUCCEEDED":
            log(f"[cluster] study {cfg.name!r} already finished as job {last.submission_id}")
            return last.submission_id, "done"
        job_id = f"{base}-r{n + 1}"
        log(
            f"[cluster] job {last.submission_id} ended {status}; resubmitting as {job_id} (the study resumes from "
            "its storage)"
        )
    else:
        job_id = base
    env = runtime_env(cfg, expect_workers, auth_mode, node_types)
    try:
        client.submit_job(
            entrypoint=entrypoint(stage, verbose, quiet),
            submission_id=job_id,
            runtime_env=env,
            metadata={"study": cfg.name, "output": cfg.output or "(head default)"},
        )
    except RuntimeError as exc:
        if _job_exists(client, job_id):  # a concurrent launcher submitted it first
            log(f"[cluster] job {job_id} was just submitted by another launcher: attaching")
            return job_id, "attached"
        raise ClusterError(f"submitting the job failed: {' '.join(str(exc).split())[:800]}") from None
    log(f"[cluster] submitted job {job_id} (working_dir {REPO_ROOT.name}/ uploaded without data/, outputs/, .git)")
    return job_id, "submitted"


async def _tail(client, job_id: str, write: Callable[[str], None]) -> None:
    async for chunk in client.tail_job_logs(job_id):
        write(chunk)


def follow(
    client, job_id: str, write: Callable[[str], None] = None, poll: float = 2.0, log: Callable[[str], None] = print
) -> str:
    """Stream the job's logs until it ends; returns its final status."""
    write = write or (lambda s: (sys.stdout.write(s), sys.stdout.flush()))
    t0 = time.perf_counter()
    try:
        asyncio.run(_tail(client, job_id, write))
    except Exception as exc:  # websocket dropped: fall back to polling the full log
        log(f"[cluster] log stream interrupted ({' '.join(str(exc).split())[:200]}); polling")
        seen = 0
        while True:
            text = client.get_job_logs(job_id)
            if len(text) > seen:
                write(text[seen:])
                seen = len(text)
            if str(client.get_job_status(job_id)) in TERMINAL:
                break
            time.sleep(poll)
    status = str(client.get_job_status(job_id))
    deadline = time.time() + 30
    while status not in TERMINAL and time.time() < deadline:
        time.sleep(0.5)
        status = str(client.get_job_status(job_id))
    info = client.get_job_info(job_id)
    why = (info.message or "").strip().splitlines()[0][:300] if status != "SUCCEEDED" and info.message else ""
    log(f"[cluster] job {job_id}: {status} after {time.perf_counter() - t0:.0f} s" + (f" ({why})" if why else ""))
    return status


def results_hint(cfg: StudyConfig) -> str:
    out = cfg.output or f"{DEFAULT_REMOTE_OUTPUT}/{cfg.name} on the head node"
    if not cfg.output:
        read = "`ray rsync-down cluster.yaml <path> <here>`, or give --storage to write to shared storage"
    elif storage.is_remote(out):
        read = (f"study.analysis.load({out!r}) (pyarrow; same endpoint/credentials), "
                f"or python -m study.report {out} --out report")
    else:
        read = f"study.analysis.load({out!r}) or pandas.read_parquet('{out}/trials') on the head (or the shared path)"
    return f"[cluster] results: {out}\n[cluster] read them with {read}"


def run_job(
    client, cfg: StudyConfig, args, expect_workers: bool, auth_mode: str | None, log: Callable[[str], None] = print,
    node_types: dict | None = None,
) -> int:
    job_id, what = submit_or_attach(
        client, cfg, args.stage, args.verbose, args.quiet, expect_workers, auth_mode, log, node_types
    )
    if what == "done":
        log(results_hint(cfg))
        return 0
    try:
        status = follow(client, job_id, log=log)
    except KeyboardInterrupt:
        log(
            f"\n[cluster] detached from job {job_id}; it keeps running. Re-attach with the same command; "
            f"stop it with `ray job stop {job_id}`"
        )
        return 130
    if status == "SUCCEEDED":
        log(results_hint(cfg))
        return 0
    log("[cluster] the study did not finish; rerun the same command to resubmit it (it resumes from its storage)")
    return 1


# --------------------------------------------------------------------------- launcher entry points
def prepare_job_config(cfg: StudyConfig, args) -> StudyConfig:
    """The study config as the job will see it: output is --output, --storage/<name>, or unset
    (the head's default ~/saliency-outputs/<name>); client-local paths are not pinned."""
    if getattr(args, "output", None):
        if not storage.is_remote(args.output) and not os.path.isabs(args.output):
            raise ClusterError(
                f"--output {args.output}: on a cluster give an absolute path on the head "
                "(or a path every node mounts) or a URI such as s3://bucket/studies/name"
            )
        cfg.output = storage.normalize(args.output)
    elif getattr(args, "storage", None):
        cfg.output = storage.join(storage.normalize(args.storage), cfg.name)
    else:
        cfg.output = ""
    return cfg


def launch(args, cfg: StudyConfig, log: Callable[[str], None] = print) -> int:
    """``study.launch --cluster`` / ``--address http://…``: run the study as a Ray Job."""
    cfg = prepare_job_config(cfg, args)
    spec = None
    if args.cluster:
        spec = load_cluster_config(args.cluster)
        why = node_type_shortfall(cfg, spec.node_types)  # before any machine starts
        if why:
            raise ConfigError(why)
        check_reachable(spec)
        set_auth_mode(spec.auth_mode)  # this client speaks the cluster's auth mode
        validate_with_ray(spec)
    if (
        cfg.output
        and not storage.is_remote(cfg.output)
        and spec is not None
        and spec.may_have_workers
        and not mounts.is_shared_path(cfg.output)
        and os.environ.get("SALIENCY_STORAGE_SHARED") is None
    ):
        log(
            f"[cluster] note: {cfg.output} must be a path every node mounts (it is checked on the head before the "
            "search)"
        )
    if spec is None:
        auth_mode = os.environ.get("RAY_AUTH_MODE")
        if auth_mode and auth_mode not in AUTH_MODES:
            raise ClusterError(f"RAY_AUTH_MODE={auth_mode!r} is not a Ray 2.60 value ({', '.join(AUTH_MODES)})")
        client = job_client(args.address)
        log(f"[cluster] job server {args.address}")
        return run_job(client, cfg, args, False, auth_mode, log)

    rc = 1
    try:
        cluster_up(spec, log)
        host = head_address(spec)
        with ssh_tunnel(spec, host, spec.dashboard_port) as url:
            log(f"[cluster] dashboard of {host} forwarded to {url} (SSH)")
            client = job_client(url)
            rc = run_job(client, cfg, args, spec.may_have_workers, spec.auth_mode, log, spec.node_types)
    finally:
        if args.down:
            cluster_down(spec, log)
    return rc


# --------------------------------------------------------------------------- the job's driver
def job_config() -> dict:
    """Inside the Ray Job: the study config the launcher put in ``$SALIENCY_STUDY_CONFIG`` (raw mapping).

    The job's entrypoint is ``python -m study.launch --job``, which reads it through this function: the
    config travels once, as YAML in the job's environment, and this module never imports the launcher."""
    text = os.environ.get(CONFIG_ENV)
    if not text:
        raise ConfigError(f"--job: ${CONFIG_ENV} is not set; --job runs inside a Ray Job submitted by "
                          "python -m study.launch --cluster")
    raw = yaml.safe_load(text)
    if not raw.get("output"):
        raw["output"] = str(Path(os.path.expanduser(DEFAULT_REMOTE_OUTPUT), raw.get("name", "study")))
    return raw
