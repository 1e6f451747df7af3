"""The one batched evaluation pass (MLP.forward_batches) behind metrics, figures and predict."""

from __future__ import annotations

import numpy as np
import pytest

from mlptrain import nn
from mlptrain import loop
from mlptrain.backend import get_backend
from mlptrain.model import MLP
from mlptrain.reports.arrays import run_model


@pytest.fixture
def model():
    ops = get_backend("cpu")
    m = MLP(ops, [5, 7, 3], nn.make_activation("tanh"), nn.make_loss("softmax_cross_entropy", 3),
            np.float64)
    m.initialize("xavier_uniform", np.random.default_rng(0))
    return m


@pytest.mark.parametrize("batch", [1, 4, 10, 64])
def test_batches_cover_every_row_once_and_match_one_big_forward(model, batch):
    X = np.random.default_rng(1).normal(size=(10, 5))
    whole = np.array(model.forward(model.workspace(10), X))
    got = np.empty_like(whole)
    seen = []
    for start, stop, ws, logits in model.forward_batches(X, batch):
        assert ws.batch_size == stop - start
        got[start:stop] = logits
        seen += range(start, stop)
    assert seen == list(range(10))
    np.testing.assert_allclose(got, whole, rtol=0, atol=1e-12)


def test_metrics_figures_and_predict_agree(model):
    from mlptrain.experiment.predict import probabilities

    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(23, 5)), rng.integers(0, 3, 23)
    split = loop.to_device(model.ops, model, X, y)
    accuracy = loop.evaluate(model, split, batch_size=4)[1]["accuracy"]
    outputs = run_model(model, X, batch_size=7)
    assert accuracy == np.mean(outputs.predictions == y)
    np.testing.assert_allclose(probabilities(model, X), outputs.probabilities, atol=1e-12)
