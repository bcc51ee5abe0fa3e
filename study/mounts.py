"""Is a local study folder shared by every host of the cluster? (NFS, Lustre … or node-local.)

A node-local path is refused on a cluster whose nodes sit on more than one host
(:func:`check_shared`): each node would write its own copy, so the driver would never see the
workers' checkpoints or Parquet files. Object-store locations always pass.
"""

from __future__ import annotations

import os
from pathlib import Path

from foundations.storage import StorageError, is_remote

# Filesystem types (/proc/mounts) that several hosts can mount: a path on one is "shared".
NETWORK_FS = {
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "beegfs", "ceph", "cephfs", "glusterfs",
    "ocfs2", "gfs2", "afs", "wekafs", "fuse.glusterfs", "fuse.s3fs", "fuse.gcsfuse", "fuse.sshfs",
    "fuse.juicefs", "fuse.rclone", "fuse.mountpoint-s3", "fuse.goofys", "fuse.ceph-fuse", "fuse.cephfs",
    "fuse.lizardfs", "fuse.moosefs", "fuse.weka",
}


def mount_fstype(path) -> str:
    """The filesystem type (``ext4``, ``nfs4`` …) holding ``path`` (its closest existing parent)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    real = os.path.realpath(p)
    best, fstype = "", "unknown"
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return "unknown"
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        mnt = parts[1].replace("\\040", " ")
        if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
            best, fstype = mnt, parts[2]
    return fstype


def is_shared_path(path) -> bool:
    """True if ``path`` lies on a filesystem other hosts can mount (NFS, Lustre, …) or the
    operator vouches for it (``SALIENCY_STORAGE_SHARED=1``)."""
    if os.environ.get("SALIENCY_STORAGE_SHARED", "").lower() in ("1", "true", "yes"):
        return True
    return mount_fstype(path) in NETWORK_FS


def check_shared(loc, hosts: set[str] | list[str], expect_more_hosts: bool = False) -> None:
    """Refuse a node-local path when the cluster spans (or may grow to) more than one host.

    Args:
        loc: the study location.
        hosts: the IP addresses of the cluster's alive nodes.
        expect_more_hosts: the cluster may add worker hosts later (an autoscaling cluster).
    """
    if is_remote(loc):
        return
    hosts = sorted(set(hosts))
    if len(hosts) <= 1 and not expect_more_hosts:
        return
    if is_shared_path(loc):
        return
    where = (f"its nodes run on {len(hosts)} hosts ({', '.join(hosts[:4])}{', …' if len(hosts) > 4 else ''})"
             if len(hosts) > 1 else "it can add worker hosts")
    raise StorageError(
        f"{loc} is a node-local path ({mount_fstype(loc)} filesystem) but this Ray cluster is multi-node: {where}. "
        "Each node would write its own copy: trials on other hosts could not be restored from their checkpoints "
        "and the driver would miss their results. Give --storage s3://bucket/prefix (or gs://…) — with "
        "--storage-endpoint for an S3-compatible server — or a path on a filesystem every node mounts "
        "(NFS, Lustre, …; set SALIENCY_STORAGE_SHARED=1 if its type is not recognised)."
    )


def cluster_hosts() -> set[str]:
    """IP addresses of the connected Ray cluster's alive nodes (Ray must be initialised)."""
    import ray

    return {n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")}
