"""Class names and the official test labels, read without torch (for the tables of the report and the results page)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from foundations import data  # (torch-free at import; its tensors are made in data.load only)
from foundations.data import DataError

CLASS_NAMES = {  # label -> name, per dataset (Fashion-MNIST's as torchvision's FashionMNIST.classes)
    "mnist": [str(i) for i in range(10)],
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"],
}
TEST_LABELS = "t10k-labels-idx1-ubyte"  # the official test labels (IDX: magic 2049, count, one byte per label)


def test_labels(dataset: str, root: Path | str | None = None) -> np.ndarray:
    """The 10 000 official test labels of ``dataset`` (int64), from its verified IDX file under ``root``."""
    path = data.raw_dir(root or data.default_root(), dataset) / TEST_LABELS
    if not path.exists():
        raise DataError(f"{dataset}: missing {path}; run `python -m foundations.data prepare`")
    got, want = data._sha256(path), data.SHA256[dataset][TEST_LABELS]
    if got != want:
        raise DataError(f"{dataset}: {path} has SHA-256 {got}, expected {want} (the official file)")
    raw = path.read_bytes()
    magic, n = struct.unpack(">II", raw[:8])
    if magic != 2049 or len(raw) != 8 + n:
        raise DataError(f"{dataset}: {path} is not an IDX label file (magic {magic}, {len(raw) - 8} of {n} "
                             "labels)")
    return np.frombuffer(raw, np.uint8, offset=8).astype(np.int64)
