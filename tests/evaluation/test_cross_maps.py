"""Whose maps, whose model: a model scored with its own maps equals its default rows, swapping the two
models swaps the matrix, the map model is the same-seed selected model, and bad names are refused."""

from __future__ import annotations

import copy

import pandas as pd
import pytest
import torch

from evaluation.config import Evaluation
from evaluation.cross_maps import map_model_for, scored_rows
from evaluation.evaluate import evaluate_model
from trainables.config import ConfigError

TINY = {"morf": {"levels": 6}, "faithfulness": {"levels": 6, "n_subsets": 10}}
KEY = ["method", "metric", "level", "sample"]


@pytest.fixture(scope="module")
def two_models(batch):
    model, x, labels, _, _ = batch
    other = copy.deepcopy(model)
    with torch.no_grad():  # a second, different model: the first layer's filters flipped left-right
        other[0].weight.copy_(other[0].weight.flip(-1))
    return model.eval(), other.eval(), x[:10], labels[:10]


def _scores(scored, maps, x, y):
    return scored_rows(scored, maps, x, y, methods=["saliency", "input_x_gradient"], seed=3, metric_params=TINY)


def test_a_model_scored_with_its_own_maps_equals_its_default_rows(two_models):
    a, _, x, y = two_models
    own = _scores(a, a, x, y)
    ref = evaluate_model(a, x, y, methods=["saliency", "input_x_gradient"], metrics=["morf", "faithfulness"],
                         n_samples=None, seed=3, metric_params=TINY)
    ref = ref[ref["sample"] >= 0]
    assert len(own) == len(ref) > 0
    m = own.merge(ref, on=KEY, suffixes=("", "_ref"))
    assert len(m) == len(own)
    pd.testing.assert_series_equal(m["value"], m["value_ref"], check_names=False)


def test_swapping_the_two_models_swaps_the_matrix(two_models):
    a, b, x, y = two_models

    def matrix(models):
        return [[_scores(s, mp, x, y).query("metric == 'morf' and method == 'saliency'")["value"].mean()
                 for mp in models] for s in models]

    m, swapped = matrix([a, b]), matrix([b, a])
    assert swapped == [[m[1][1], m[1][0]], [m[0][1], m[0][0]]]
    assert m[0][1] != m[0][0]  # another model's maps score differently


def test_the_map_model_is_the_same_seed_selected_model_of_that_penalty():
    sel = pd.DataFrame({"dataset": ["mnist"] * 4, "penalty": ["none", "none", "symmetry", "symmetry"],
                        "trial_id": ["a", "b", "c", "d"], "seed": [0, 1, 0, 1]})
    row = sel.iloc[3]  # symmetry, seed 1
    assert map_model_for(sel, row, "none") == "none-b"
    assert map_model_for(sel, row, "gradient") is None
    assert map_model_for(sel, sel.iloc[0].drop("seed"), "symmetry") == "symmetry-c"  # no seed: the first


def test_unknown_map_model_is_refused():
    with pytest.raises(ConfigError, match=r"^map_models: unknown value 'lasso'; valid choices: own, none, gradient"):
        Evaluation(map_models=["own", "lasso"])
    assert Evaluation(map_models=["own", "none", "symmetry"]).map_models == ["own", "none", "symmetry"]


def test_map_methods_are_among_the_methods_and_default_to_all_but_random():
    with pytest.raises(ConfigError, match=r"^map_methods: unknown value 'smoothgrad'; valid choices: saliency, grad_"):
        Evaluation(methods=["saliency", "grad_cam", "random"], map_methods=["smoothgrad"])
    assert Evaluation(methods=["saliency", "grad_cam", "random"]).crossmap_methods == ["saliency", "grad_cam"]
    assert Evaluation(methods=["saliency", "grad_cam"], map_methods=["saliency"]).crossmap_methods == ["saliency"]
