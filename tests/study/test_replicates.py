"""The per-seed analysis' per-class accuracy: from the full-test-set rows of a real (tiny, untrained) model,
equal to a plain loop over the images."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from evaluation import accuracy
from foundations.schemas import SELECTED
from study import replicates
from study.analysis import Study
from trainables.models import build_model


def test_class_accuracy_equals_a_plain_loop(fashion):
    torch.manual_seed(0)
    x, y = fashion.test_x[:600], fashion.test_y[:600]
    rows, sel = [], []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = build_model("cnn3b").eval()
        rows.append(accuracy.rows(model, x, y, dataset="fashion-mnist", penalty="none", model_id=f"none-t{seed}",
                                  seed=0).assign(study="x", chunk=0, node_id=""))
        sel.append({**dict.fromkeys(SELECTED.names), "study": "x", "dataset": "fashion-mnist", "penalty": "none",
                    "trial_id": f"t{seed}", "seed": seed, "lam": 0.0})
        # the loop: one image at a time, its prediction against its label, counted per class
        hits, counts = np.zeros(10), np.zeros(10)
        with torch.no_grad():
            for img, label in zip(x, y):
                pred = int(model(img[None, None].float() / 255).argmax())
                hits[int(label)] += pred == int(label)
                counts[int(label)] += 1
        s = Study.from_frames(selected=pd.DataFrame(sel), evaluation=pd.concat(rows, ignore_index=True))
        ca = replicates.class_accuracy(s, {"fashion-mnist": y.numpy()})
        got = ca[ca["seed"] == seed].set_index("label")
        present = np.flatnonzero(counts)
        assert list(got.index) == list(present)
        assert np.allclose(got["accuracy"].to_numpy(), hits[present] / counts[present])
        assert (got["n"].to_numpy() == counts[present]).all() and got["n"].sum() == 600
    assert set(ca["model_id"]) == {"none-t0", "none-t1"}
