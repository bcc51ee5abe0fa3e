"""Real processes for the cluster tests: Ray nodes started with `ray start`, an S3 server, sshd.

Every process is started in its own session (process group) and killed by that group, never by
name: this machine is shared, and `ray stop` would stop every Ray on it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
RAY = str(Path(PY).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports (held open together while picked)."""
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def wait_for(cond, timeout: float, what: str, every: float = 0.25):
    deadline = time.time() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.time() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def kill_group(proc: subprocess.Popen | None, sig=signal.SIGKILL, wait: float = 15) -> None:
    """Kill a process started with start_new_session=True and everything in its group."""
    if proc is None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=wait)


def _pids_where(column: int, value: int) -> list[int]:
    """PIDs whose /proc/<pid>/stat field ``column`` (after the command name) equals ``value``."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if int(fields[column]) == value:
            out.append(int(d.name))
    return out


def group_pids(pgid: int) -> list[int]:
    """PIDs whose process group is ``pgid`` (from /proc)."""
    return _pids_where(2, pgid)


def session_pids(sid: int) -> list[int]:
    """PIDs whose session id is ``sid``."""
    return _pids_where(3, sid)


def all_pids() -> list[int]:
    return [int(d.name) for d in Path("/proc").iterdir() if d.name.isdigit()]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def kill_matching(text: str) -> None:
    """SIGKILL the processes whose command line contains ``text`` (a test's own temp dir)."""
    for pid in all_pids():
        if pid != os.getpid() and text in cmdline(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def kill_session(sid: int) -> None:
    """SIGKILL every process of session ``sid`` (the Ray processes of one `ray start`)."""
    for _ in range(3):
        pids = session_pids(sid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.3)


# --------------------------------------------------------------------------- Ray nodes
@dataclass
class RayNode:
    proc: subprocess.Popen
    log: Path
    ports: dict = field(default_factory=dict)

    @property
    def sid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL the node: the `ray start --block` process, its raylet and every worker."""
        kill_session(self.sid)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def alive(self) -> bool:
        return self.proc.poll() is None


def ray_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env.update({"RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"})
    env.setdefault("RAY_AUTH_MODE", "disabled")
    env.update(extra or {})
    return env


def _node_ports() -> dict:
    p = free_ports(7)
    return dict(zip(["node-manager-port", "object-manager-port", "dashboard-agent-listen-port",
                     "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port",
                     "ray-client-server-port"], p))


def start_head(tmp: Path, env: dict, num_cpus: int = 1, temp_dir: Path | None = None) -> RayNode:
    """`ray start --head --block` on loopback with its own ports and temp dir; dashboard on 127.0.0.1."""
    gcs, dash = free_ports(2)
    ports = {"port": gcs, "dashboard-port": dash, **_node_ports()}
    temp_dir = temp_dir or tmp / "ray"
    log = tmp / "head.log"
    cmd = [RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--num-cpus={num_cpus}",
           "--num-gpus=0", f"--temp-dir={temp_dir}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
           "--disable-usage-stats", "--object-store-memory=200000000",
           *[f"--{k}={v}" for k, v in ports.items()]]
    proc = subprocess.Popen(cmd, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True, cwd=tmp)
    node = RayNode(proc, log, ports)
    try:
        wait_for(lambda: _dashboard_up(dash) or _dead(node), 120, "the Ray head's dashboard")
        if not node.alive():
            raise RuntimeError("ray start --head exited:\n" + log.read_text()[-3000:])
    except BaseException:
        node.kill()
        raise
    return node


def start_worker(tmp: Path, head: RayNode, env: dict, num_cpus: int = 1, label: str = "worker",
                 temp_dir: Path | None = None) -> RayNode:
    ports = _node_ports()
    ports.pop("ray-client-server-port")
    log = tmp / f"{label}.log"
    cmd = [RAY, "start", "--block", f"--address=127.0.0.1:{head.ports['port']}", "--node-ip-address=127.0.0.1",
           f"--num-cpus={num_cpus}", "--num-gpus=0", "--disable-usage-stats", "--object-store-memory=200000000",
           *[f"--{k}={v}" for k, v in ports.items()]]
    # its own temp dir: two nodes on one machine must not share a session folder (each node's
    # runtime-env agent deletes the working_dir copies it no longer uses, under the other's feet)
    cmd.append(f"--temp-dir={temp_dir or tmp / f'ray-{label}'}")
    proc = subprocess.Popen(cmd, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True, cwd=tmp)
    return RayNode(proc, log, ports)


def _dead(node: RayNode) -> bool:
    return not node.alive()


def _dashboard_up(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/version", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def alive_nodes(dashboard_port: int) -> list[dict]:
    """Alive nodes from the dashboard's state API (no driver needed)."""
    from ray.util.state import list_nodes

    nodes = list_nodes(address=f"http://127.0.0.1:{dashboard_port}", raise_on_missing_output=False)
    return [n for n in nodes if getattr(n, "state", "") == "ALIVE"]


# --------------------------------------------------------------------------- S3 server (moto)
MOTO_SCRIPT = r"""
import sys, signal, threading
from moto.core.serialize import S3Serializer

# moto 5.2 names CompleteMultipartUpload's XML root `...Response`; S3 (and the AWS SDK that pyarrow
# uses, which checks it) call it `CompleteMultipartUploadResult`. Fix it so large uploads work.
_orig = S3Serializer._serialize_body
def _body(self, body):
    if isinstance(body, dict) and "CompleteMultipartUploadResponse" in body:
        body = {"CompleteMultipartUploadResult": body["CompleteMultipartUploadResponse"]}
    return _orig(self, body)
S3Serializer._serialize_body = _body

from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=int(sys.argv[1]), verbose=False)
server.start()
print("ready", flush=True)
threading.Event().wait()
"""


@dataclass
class S3Server:
    proc: subprocess.Popen
    endpoint: str
    bucket: str

    def env(self) -> dict:
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}

    def storage_options(self) -> dict:
        """pandas.read_parquet(..., storage_options=...) for s3fs users (unused if s3fs is absent)."""
        return {"client_kwargs": {"endpoint_url": self.endpoint}, "key": "testing", "secret": "testing"}

    def stop(self) -> None:
        kill_group(self.proc)


def start_s3(tmp: Path, bucket: str = "study-bucket") -> S3Server:
    port = free_port()
    log = tmp / "moto.log"
    proc = subprocess.Popen([PY, "-c", MOTO_SCRIPT, str(port)], stdout=subprocess.PIPE, stderr=open(log, "w"),
                            stdin=subprocess.DEVNULL, start_new_session=True, text=True)
    try:
        line = proc.stdout.readline()
        if "ready" not in line:
            raise RuntimeError("moto server did not start:\n" + log.read_text()[-2000:])
        endpoint = f"http://127.0.0.1:{port}"
        import boto3

        boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                     region_name="us-east-1").create_bucket(Bucket=bucket)
    except BaseException:
        kill_group(proc)
        raise
    return S3Server(proc, endpoint, bucket)


# --------------------------------------------------------------------------- results
def s3_filesystem(s3: S3Server):
    import pyarrow.fs as pafs

    host = s3.endpoint.split("://", 1)[1]
    return pafs.S3FileSystem(endpoint_override=host, scheme="http", access_key="testing", secret_key="testing",
                             region="us-east-1")


def read_s3_table(s3: S3Server, key: str):
    """pandas reads a Parquet folder back from the S3 server (pyarrow filesystem)."""
    import pandas as pd

    return pd.read_parquet(f"{s3.bucket}/{key}", filesystem=s3_filesystem(s3))


def run_launcher(args: list[str], env: dict, log: Path, timeout: float) -> subprocess.CompletedProcess:
    """`python -m study.launch ARGS` in its own session (killed with its group on timeout)."""
    with open(log, "w") as f:
        proc = subprocess.Popen([PY, "-m", "study.launch", *args], cwd=REPO, env=env, stdout=f,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            raise AssertionError(f"launcher timed out after {timeout:.0f} s:\n" + log.read_text()[-5000:])
        finally:
            kill_group(proc, wait=5)
    return subprocess.CompletedProcess(args, rc, log.read_text(), "")


def dump(obj) -> str:
    return json.dumps(obj, indent=1, default=str)


# --------------------------------------------------------------------------- sshd (the "head")
@dataclass
class SSHD:
    proc: subprocess.Popen
    port: int
    key: Path
    proxy: str  # ssh_proxy_command when port != 22, else ''
    log: Path

    def stop(self) -> None:
        """Kill sshd, which is PID 1 of its own PID namespace: the kernel then kills every process
        started through it (the Ray head included)."""
        kill_group(self.proc)
        child = _ns_init_pid(self.proc.pid)
        if child:
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _ns_init_pid(unshare_pid: int) -> int | None:
    try:
        kids = Path(f"/proc/{unshare_pid}/task/{unshare_pid}/children").read_text().split()
        return int(kids[0]) if kids else None
    except OSError:
        return None


def ensure_debian_packages(*pkgs: str) -> None:
    """Install Debian packages (as root) if their commands are missing."""
    import shutil

    missing = [p for p, cmd in pkgs if not shutil.which(cmd) and not Path(cmd).exists()]
    if not missing:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        import pytest

        pytest.skip(f"needs {', '.join(missing)} (Debian packages) and root to install them")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    r = subprocess.run(["apt-get", "install", "-y", "-qq", *missing], env=env, capture_output=True, text=True)
    if r.returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, text=True)
        r = subprocess.run(["apt-get", "install", "-y", "-qq", *missing], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]


def start_sshd(tmp: Path) -> SSHD:
    """sshd on 127.0.0.1 (port 22 when free, else a free port reached through a ProxyCommand), with a
    host key and an authorized key made here, inside its own PID namespace (so that `ray stop`
    run through it sees only the processes started through it, not the other Rays of this machine)."""
    ensure_debian_packages(("openssh-server", "/usr/sbin/sshd"), ("rsync", "rsync"))
    d = tmp / "sshd"
    d.mkdir(parents=True, exist_ok=True)
    for name in ("host_key", "id_ed25519"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"saliency-test-{name}", "-f", str(d / name)],
            check=True,
            capture_output=True,
        )
    (d / "authorized_keys").write_text((d / "id_ed25519.pub").read_text())
    os.chmod(d / "authorized_keys", 0o600)
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    port = 22 if _port_free(22) else free_port()
    (d / "sshd_config").write_text(f"""
Port {port}
ListenAddress 127.0.0.1
HostKey {d / "host_key"}
PidFile {d / "sshd.pid"}
AuthorizedKeysFile {d / "authorized_keys"}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
MaxStartups 50
MaxSessions 50
LogLevel ERROR
""")
    log = d / "sshd.log"
    sshd_cmd = ["/usr/sbin/sshd", "-D", "-e", "-f", str(d / "sshd_config")]
    if _can_unshare():
        sshd_cmd = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", *sshd_cmd]
    elif [p for p in all_pids() if "raylet" in cmdline(p)]:
        import pytest

        pytest.skip(
            "cannot give sshd its own PID namespace (unshare refused) while other Ray instances run "
            "on this machine: the cluster launcher's `ray stop` would stop them"
        )
    proc = subprocess.Popen(
        sshd_cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
    )
    proxy = "" if port == 22 else f"{PY} {Path(__file__).with_name('tcp_relay.py')} 127.0.0.1 {port}"
    sshd = SSHD(proc, port, d / "id_ed25519", proxy, log)
    try:
        wait_for(lambda: _ssh_greets(port) or proc.poll() is not None, 30, "sshd")
        if proc.poll() is not None:
            raise RuntimeError("sshd exited:\n" + log.read_text())
    except BaseException:
        sshd.stop()
        raise
    return sshd


def _can_unshare() -> bool:
    try:
        return (
            subprocess.run(
                ["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True, timeout=20
            ).returncode
            == 0
        )
    except (OSError, subprocess.SubprocessError):
        return False


def _port_free(port: int) -> bool:
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def _ssh_greets(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.settimeout(2)
            return s.recv(8).startswith(b"SSH-")
    except OSError:
        return False


# --------------------------------------------------------------------------- cluster.yaml, test variant
def cluster_yaml_variant(tmp: Path, sshd: SSHD, data_root: Path, token_file: Path, name: str) -> tuple[Path, dict]:
    """The shipped cluster.yaml with the lines a user changes filled in (head 127.0.0.1, no workers,
    root and the test's key), plus what sharing this machine needs: the project and the token go to
    a temporary "remote" folder instead of root's home, the project is not pip-installed again (this
    machine's Python already has it: a second editable install would replace the real one), the
    prepared data of this checkout is used, and Ray gets its own ports and temp dir."""
    raw = yaml_load(REPO / "cluster.yaml")
    remote = tmp / "remote"
    ports = dict(
        zip(
            [
                "port",
                "dashboard-port",
                "dashboard-agent-listen-port",
                "dashboard-agent-grpc-port",
                "runtime-env-agent-port",
                "metrics-export-port",
                "ray-client-server-port",
                "node-manager-port",
                "object-manager-port",
            ],
            free_ports(9),
        )
    )
    # the lines a user changes
    raw["cluster_name"] = name
    raw["provider"]["head_ip"] = "127.0.0.1"
    raw["provider"]["worker_ips"] = []
    raw["auth"]["ssh_user"] = "root"
    raw["auth"]["ssh_private_key"] = str(sshd.key)
    if sshd.proxy:
        raw["auth"]["ssh_proxy_command"] = sshd.proxy
    # sharing this machine
    assert set(raw["file_mounts"]) == {"~/saliency-study", "~/.ray/auth_token"}
    raw["file_mounts"] = {str(remote / "saliency-study"): str(REPO), str(remote / "auth_token"): str(token_file)}

    def fix(cmd: str) -> str:
        cmd = cmd.replace("~/saliency-venv/bin/", "").replace("$HOME/saliency-data", str(data_root))
        cmd = cmd.replace("~/saliency-data", str(data_root)).replace("~/saliency-study", str(remote / "saliency-study"))
        return cmd

    setup = [fix(c) for c in raw["setup_commands"]]
    assert any("pip install" in c for c in setup) and any("foundations.data prepare" in c for c in setup)
    raw["setup_commands"] = [c for c in setup if "pip install" not in c and "venv" not in c]
    raw["setup_commands"].insert(0, 'python -c "import study.launch, ray; print(ray.__version__)"')
    raw["setup_commands"] = [c.replace("--dataset all", "--dataset mnist") for c in raw["setup_commands"]]
    head = [fix(c) for c in raw["head_start_ray_commands"]]
    start = [i for i, c in enumerate(head) if "ray start --head" in c]
    assert len(start) == 1 and "--port=6379" in head[start[0]] and "--dashboard-port=8265" in head[start[0]]
    c = head[start[0]].replace("--port=6379", f"--port={ports['port']}")
    c = c.replace("--dashboard-port=8265", f"--dashboard-port={ports['dashboard-port']}")
    c = c.replace("RAY_AUTH_MODE=", f"RAY_AUTH_TOKEN_PATH={remote / 'auth_token'} RAY_AUTH_MODE=")
    extra = " ".join(f"--{k}={v}" for k, v in ports.items() if k not in ("port", "dashboard-port"))
    c += f" --temp-dir={tmp / 'ray-head'} --num-cpus=2 --num-gpus=0 --object-store-memory=300000000 {extra}"
    head[start[0]] = c
    raw["head_start_ray_commands"] = head
    raw["worker_start_ray_commands"] = [fix(c) for c in raw["worker_start_ray_commands"]]
    path = tmp / "cluster-test.yaml"
    import yaml

    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path, ports


def yaml_load(path: Path) -> dict:
    import yaml

    return yaml.safe_load(Path(path).read_text())
