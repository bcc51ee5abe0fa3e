"""A selected model's accuracy on every test image: one batched pass equal to a plain loop."""

from __future__ import annotations

import torch

from evaluation import accuracy
from foundations.data import to_float


def test_full_test_accuracy_equals_a_plain_loop_over_the_test_set(trained_cnn3b, mnist):
    model = trained_cnn3b
    ok = accuracy.correct(model, mnist.test_x, mnist.test_y)
    assert ok.shape == (10_000,) and ok.dtype == torch.bool
    plain = 0
    with torch.no_grad():
        for i in range(len(mnist.test_y)):  # one image at a time, by hand
            plain += int(model(to_float(mnist.test_x[i : i + 1])).argmax(1).item() == int(mnist.test_y[i]))
    assert int(ok.sum()) == plain
    df = accuracy.rows(model, mnist.test_x, mnist.test_y, dataset="mnist", penalty="none", model_id="m", seed=0)
    assert len(df) == 10_000 and df["sample"].tolist() == list(range(10_000))
    assert df["value"].mean() == plain / 10_000 and set(df["metric"]) == {"full_test_accuracy"}
    assert (df["method"] == "").all()
