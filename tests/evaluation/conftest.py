"""Fixtures of the evaluation tests: a small batch of real MNIST test images, the trained
cnn3b's predicted classes, and its saliency maps."""

from __future__ import annotations

import pytest
import torch

from foundations.data import to_float

N_IMAGES = 48


@pytest.fixture(scope="session")
def batch(mnist, trained_cnn3b):
    """(model, x, labels, predicted targets, saliency attributions) on 48 MNIST test images."""
    from evaluation.attributions import attribute

    x = to_float(mnist.test_x[:N_IMAGES])
    labels = mnist.test_y[:N_IMAGES]
    with torch.no_grad():
        target = trained_cnn3b(x).argmax(1)
    a = attribute(trained_cnn3b, x, target, "saliency")
    return trained_cnn3b, x, labels, target, a
