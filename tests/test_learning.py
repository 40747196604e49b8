"""Both backends actually learn the built-in dataset, and to the same accuracy.

Both start from the same weights and read the same batches; only the dropout
masks (torch's generator vs. our counter hash) and float rounding differ. A
larger learning rate than the tutorial's keeps this test short (300 steps).
"""
import pytest

from scratchcnn.config import TrainConfig
from scratchcnn.train import train


@pytest.fixture(scope="module")
def final_accuracy(tmp_path_factory):
    acc = {}
    for backend in ("scratch", "torch"):
        cfg = TrainConfig(backend=backend, dataset="synthetic", epochs=2, train_size=4800,
                          test_size=1000, lr=0.01, seed=0)
        metrics = train(cfg, str(tmp_path_factory.mktemp(backend)), progress=False, log=lambda *a: None)
        acc[backend] = metrics[-1]["test_acc"]
    return acc


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["scratch", "torch"])
def test_backend_learns_far_above_chance(final_accuracy, backend):
    assert final_accuracy[backend] > 0.85, final_accuracy      # chance is 0.10


@pytest.mark.slow
def test_backends_reach_the_same_accuracy_within_noise(final_accuracy):
    assert abs(final_accuracy["scratch"] - final_accuracy["torch"]) < 0.04, final_accuracy
