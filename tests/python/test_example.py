"""examples/torch_plugin/train.py, run in this process on this job's ranks: the loss falls."""

import importlib.util
from pathlib import Path

TRAIN = Path(__file__).resolve().parents[2] / "examples" / "torch_plugin" / "train.py"


def test_training_example_loss_falls(comm):
    spec = importlib.util.spec_from_file_location("torch_plugin_train", TRAIN)
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    losses = train.train(steps=40, comm=comm)
    assert len(losses) == 40
    assert losses[-1] < 0.4 * losses[0], losses
    assert comm.allgather(losses[-1]) == [losses[-1]] * comm.Get_size()  # one global loss
