"""The one training loop: true mean loss, exact resume, train mode after validation, checkpoint contents."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from torch import nn

from cosmobench.core.train import fit, load_checkpoint


class ConstantLoss(nn.Module):
    """A model whose loss is a constant: the logged loss must be exactly that constant."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))


def constant_loss(value):
    return lambda model, batch: model.w * 0 + value


@pytest.mark.parametrize("n, batch_size", [(10, 3), (7, 7), (5, 8)])
def test_constant_loss_is_logged_exactly(n, batch_size):
    x = torch.zeros(n, 1)
    hist = fit(
        ConstantLoss(),
        (x,),
        (x[:3],),
        loss_fn=constant_loss(1.0),
        epochs=3,
        batch_size=batch_size,
        device="cpu",
        progress=False,
    )
    assert hist["train_loss"] == [1.0, 1.0, 1.0]
    assert hist["val_loss"] == [1.0, 1.0, 1.0]


def test_logged_loss_is_the_sample_mean_with_an_uneven_last_batch():
    """Batches of 4, 4, 2: the epoch loss is the mean over samples, not over batches (that would give 5.5)."""
    x = torch.tensor([1.0] * 8 + [10.0] * 2)[:, None]
    hist = fit(
        ConstantLoss(),
        (x,),
        (x,),
        loss_fn=lambda m, b: m.w * 0 + b[0].mean(),
        epochs=2,
        batch_size=4,
        device="cpu",
        progress=False,
        seed=3,
    )
    expected = float(x.mean())  # 2.8
    assert hist["train_loss"] == pytest.approx([expected] * 2, rel=1e-6)
    assert hist["val_loss"] == pytest.approx([expected] * 2, rel=1e-6)


class Recorder(nn.Module):
    """Small regression model with BatchNorm and dropout that records its mode at every call."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(3, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 1))
        self.modes: list[bool] = []

    def forward(self, x):
        self.modes.append(self.training)
        return self.body(x)


def mse(model, batch):
    x, y = batch
    return ((model(x) - y) ** 2).mean()


def regression_data(n, seed):
    g = np.random.default_rng(seed)
    x = g.standard_normal((n, 3)).astype(np.float32)
    y = (x @ np.array([[1.0], [-2.0], [0.5]]) + 0.1 * g.standard_normal((n, 1))).astype(np.float32)
    return torch.from_numpy(x), torch.from_numpy(y)


def test_model_trains_in_train_mode_after_validation():
    """CMB-ML's trainer left the model in eval mode after validation (BatchNorm frozen from epoch 2)."""
    model = Recorder()
    train, val = regression_data(20, 0), regression_data(6, 1)
    running = []
    fit(
        model,
        train,
        val,
        loss_fn=mse,
        epochs=3,
        batch_size=10,
        device="cpu",
        progress=False,
        on_epoch_end=lambda e, r: running.append(model.body[1].running_mean.clone()),
    )
    # per epoch: 2 training calls (train mode) then 1 validation call (eval mode)
    assert model.modes == [True, True, False] * 3
    assert model.training
    assert not torch.equal(running[0], running[1]) and not torch.equal(running[1], running[2])


def _scheduler(opt):
    return torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)


@pytest.mark.parametrize("ema_decay", [None, 0.9])
def test_resume_continues_from_the_same_state(tmp_path, ema_decay):
    train, val = regression_data(30, 0), regression_data(8, 1)
    kwargs = dict(
        loss_fn=mse,
        batch_size=8,
        lr=1e-2,
        scheduler=_scheduler,
        ema_decay=ema_decay,
        device="cpu",
        progress=False,
        seed=7,
    )
    torch.manual_seed(0)
    straight = Recorder()
    h_straight = fit(straight, train, val, epochs=5, ckpt=tmp_path / "a" / "last.pt", **kwargs)

    torch.manual_seed(0)
    first = Recorder()
    fit(first, train, val, epochs=2, ckpt=tmp_path / "b" / "last.pt", **kwargs)
    torch.manual_seed(123)  # a fresh process: different initial weights and global RNG, all replaced on resume
    resumed = Recorder()
    h_resumed = fit(resumed, train, val, epochs=5, ckpt=tmp_path / "b" / "last.pt", **kwargs)

    for key in ("epoch", "train_loss", "val_loss", "lr", "best_val_loss"):
        assert h_resumed[key] == h_straight[key], key
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for k in straight.state_dict():
        assert torch.equal(straight.state_dict()[k], resumed.state_dict()[k]), k
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == 5 * 4
    assert sum(resumed.modes) == 3 * 4  # the resumed run trained only epochs 2, 3, 4 (4 batches each)


def test_checkpoint_contents_and_csv(tmp_path):
    train, val = regression_data(24, 0), regression_data(8, 1)
    config = {"name": "toy", "widths": [16], "lr": 1e-2}
    model = Recorder()
    hist = fit(
        model,
        train,
        val,
        loss_fn=mse,
        epochs=4,
        batch_size=8,
        lr=1e-2,
        device="cpu",
        progress=False,
        ckpt=tmp_path / "last.pt",
        config=config,
        log_csv=tmp_path / "log.csv",
    )
    last = load_checkpoint(tmp_path / "last.pt")
    best = load_checkpoint(tmp_path / "best.pt")
    assert {"model", "optimizer", "scheduler", "ema", "epoch", "history", "best_val_loss", "config"} <= set(last)
    assert last["epoch"] == 3 and last["config"] == config and best["config"] == config
    assert last["history"]["train_loss"] == hist["train_loss"]
    best_epoch = int(np.argmin(hist["val_loss"]))
    assert best["epoch"] == best_epoch
    assert last["best_val_loss"] == hist["best_val_loss"][0] == min(hist["val_loss"])
    # the returned model holds the best-validation weights
    for k, v in best["model"].items():
        assert torch.equal(model.state_dict()[k], v), k
    assert hist["train_loss"][-1] < hist["train_loss"][0]
    with open(tmp_path / "log.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    assert [float(r["val_loss"]) for r in rows] == pytest.approx(hist["val_loss"], rel=1e-12)
    assert not list(tmp_path.glob(".*.tmp"))


def test_no_validation_keeps_last_weights_and_logs_nan(tmp_path):
    train = regression_data(16, 0)
    model = Recorder()
    hist = fit(
        model, train, None, loss_fn=mse, epochs=2, batch_size=8, device="cpu", progress=False, ckpt=tmp_path / "last.pt"
    )
    assert all(math.isnan(v) for v in hist["val_loss"])
    last = load_checkpoint(tmp_path / "last.pt")
    for k, v in last["model"].items():
        assert torch.equal(model.state_dict()[k], v), k


ZERO_START = dict(loss_fn=mse, epochs=4, batch_size=8, lr=5e-2, device="cpu", progress=False)  # zero-started toys


def _zero_linear():
    net = nn.Linear(3, 1)
    nn.init.zeros_(net.weight)
    nn.init.zeros_(net.bias)
    return net


def _interrupted_then_resumed(first, resumed, train, val, folder, **kwargs):
    """``fit`` with ``score_initial`` stopped after epoch 1, then resumed from its checkpoint in ``resumed``."""

    def stop_after_two(epoch, record):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(first, train, val, score_initial=True, ckpt=folder / "last.pt", on_epoch_end=stop_after_two, **kwargs)
    return fit(resumed, train, val, score_initial=True, ckpt=folder / "last.pt", **kwargs)


def test_initial_weights_are_kept_when_no_epoch_beats_them(tmp_path):
    """Trained on y = x @ (1, -2, 0.5), validated on y = 0: the zero initial weights are exact on validation,
    every epoch moves away from them, so ``score_initial`` keeps them (epoch -1, loss 0); without it the best
    trained epoch is kept. An interrupted, resumed run keeps them too."""
    train = regression_data(32, 0)
    val = (regression_data(8, 1)[0], torch.zeros(8, 1))
    kwargs = ZERO_START
    model = _zero_linear()
    hist = fit(model, train, val, score_initial=True, ckpt=tmp_path / "a" / "last.pt", **kwargs)
    assert hist["initial_val_loss"] == hist["best_val_loss"] == [0.0] and hist["best_epoch"] == [-1]
    assert min(hist["val_loss"]) > 0.05  # the epochs did train away from zero
    assert float(model.weight.abs().sum() + model.bias.abs().sum()) == 0.0
    assert load_checkpoint(tmp_path / "a" / "best.pt")["epoch"] == -1

    plain = _zero_linear()
    hist_plain = fit(plain, train, val, **kwargs)
    assert hist_plain["best_epoch"] == [int(np.argmin(hist_plain["val_loss"]))]
    assert math.isnan(hist_plain["initial_val_loss"][0]) and float(plain.weight.abs().sum()) > 0.1

    resumed = nn.Linear(3, 1)  # other initial weights: the checkpoint replaces them
    hist_resumed = _interrupted_then_resumed(_zero_linear(), resumed, train, val, tmp_path / "b", **kwargs)
    assert hist_resumed["best_epoch"] == [-1] and hist_resumed["initial_val_loss"] == [0.0]
    assert hist_resumed["val_loss"] == hist["val_loss"]
    assert float(resumed.weight.abs().sum() + resumed.bias.abs().sum()) == 0.0


def test_initial_weights_lose_to_an_epoch_that_beats_them():
    """Validated on the training relation, the first epoch already beats the zero weights: they are not kept."""
    train, val = regression_data(32, 0), regression_data(8, 1)
    model = _zero_linear()
    hist = fit(model, train, val, score_initial=True, **ZERO_START)
    assert hist["initial_val_loss"][0] > 1.0  # E[y^2] = 1 + 4 + 0.25 for unit-normal x
    assert hist["best_epoch"] == [int(np.argmin(hist["val_loss"]))] and hist["best_epoch"][0] >= 0
    assert hist["best_val_loss"][0] == min(hist["val_loss"]) < hist["initial_val_loss"][0]


class SideBySide(nn.Module):
    """Two independent linear networks, ``a`` and ``b``, started at zero (state-dict keys ``a.*`` and ``b.*``)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = _zero_linear(), _zero_linear()

    def forward(self, x):
        return torch.cat([self.a(x), self.b(x)], dim=1)


def side_by_side_loss(model, batch):
    x, y = batch
    err = (model(x) - y) ** 2
    return err.mean() if model.training else err.mean(dim=0)  # validation: one loss per network


def test_each_group_of_parameters_keeps_its_own_best_weights(tmp_path):
    """Both networks learn y = x @ (1, -2, 0.5); validation wants it from ``b`` and 0 from ``a``: ``a`` keeps its
    initial (zero) weights, ``b`` its best epoch's, in one model; a resumed run ends the same."""
    x, y = regression_data(32, 0)
    xv, yv = regression_data(8, 1)
    train = (x, torch.cat([y, y], dim=1))
    val = (xv, torch.cat([torch.zeros_like(yv), yv], dim=1))
    kwargs = dict(loss_fn=side_by_side_loss, epochs=4, batch_size=8, lr=5e-2, device="cpu", progress=False)
    groups = {"A": "a.", "B": "b."}
    model = SideBySide()
    hist = fit(model, train, val, score_initial=True, groups=groups, ckpt=tmp_path / "a" / "last.pt", **kwargs)
    assert hist["best_epoch"] == [{"A": -1, "B": 3}]  # b improves every epoch at this rate
    assert float(model.a.weight.abs().sum() + model.a.bias.abs().sum()) == 0.0
    last = load_checkpoint(tmp_path / "a" / "last.pt")["model"]
    assert torch.equal(model.b.weight, last["b.weight"]) and float(model.b.weight.abs().sum()) > 1.0
    assert hist["best_val_loss"][0] < hist["initial_val_loss"][0]

    resumed = SideBySide()
    hist_resumed = _interrupted_then_resumed(SideBySide(), resumed, train, val, tmp_path / "b", groups=groups, **kwargs)
    assert hist_resumed["best_epoch"] == hist["best_epoch"] and hist_resumed["val_loss"] == hist["val_loss"]
    for key, value in model.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key

    single = SideBySide()  # one group: the whole model's best epoch, a's training included
    fit(single, train, val, score_initial=True, **{**kwargs, "loss_fn": lambda m, b: side_by_side_loss(m, b).mean()})
    assert float(single.a.weight.abs().sum()) > 0.1
