"""Early stopping and the learning-rate schedules of the multifield CNN training."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from cosmobench.multifield.train import (
    _scheduler,
    load_model,
    prepare_data,
    should_stop,
    train_model,
    training_settings,
)

TINY = {"hidden": 1, "dropout": 0.0, "batch_size": 16, "split": [0.5, 0.25, 0.25], "maps_per_sim": 3}


def test_should_stop_counts_epochs_since_the_best():
    assert not should_stop([3.0, 2.0, 2.5], 2)  # best one epoch ago
    assert should_stop([3.0, 2.0, 2.5, 2.6], 2)  # two epochs without improvement
    assert not should_stop([3.0, 2.0, 2.5, 2.6], 0)  # patience 0: never
    assert should_stop([np.nan, 1.0, np.nan, np.nan], 2)  # NaN epochs are never the best
    assert not should_stop([np.nan, np.nan], 1)


@pytest.mark.parametrize("schedule", ["onecycle", "cyclic", "cosine"])
def test_schedules_stay_within_lr(schedule):
    s = training_settings(TINY, epochs=4, lr=1e-2, schedule=schedule, cycle_steps=3)
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=s.lr)
    sched = _scheduler(s, steps_per_epoch=5)(opt)
    lrs = []
    for _ in range(s.epochs * 5):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert max(lrs) <= s.lr * (1 + 1e-9) and min(lrs) >= 0
    if schedule == "onecycle":  # warm-up over 30 % of the 20 steps, then annealing towards lr / 2.5e5
        assert np.argmax(lrs) in (4, 5) and lrs[0] < s.lr / 5 and lrs[-1] < s.lr / 50


def test_unknown_schedule_and_negative_patience_are_refused():
    with pytest.raises(ValueError, match="training.schedule"):
        training_settings(schedule="step")
    with pytest.raises(ValueError, match="training.patience"):
        training_settings(patience=-1)


def test_early_stopping_stops_when_validation_loss_rises(tiny_data, tmp_path):
    """Validation labels mirrored (1 - theta): learning the training labels makes the validation loss rise, so the
    training stops ``patience`` epochs after its best epoch and keeps the best weights."""
    settings = training_settings(TINY, epochs=30, patience=3, lr=5e-3, schedule="cosine")
    data = prepare_data(tiny_data, "TNGlike", ["Mtot", "Mgas"], settings)
    data = dataclasses.replace(data, valid=(data.valid[0], 1 - data.valid[1]))
    summary = train_model(data, tmp_path / "run", settings, seed=0, device="cpu", progress=False)
    history = json.loads((tmp_path / "run" / "model.json").read_text())["history"]
    assert summary["stopped_early"] and summary["epochs"] < 30
    assert summary["epochs"] == summary["best_epoch"] + 1 + 3  # stopped exactly `patience` epochs after the best
    assert summary["best_val_loss"] == pytest.approx(min(history["val_loss"]))
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=True)["model"]
    model, _ = load_model(tmp_path / "run")
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, best[k])  # the best epoch's weights, not the last ones
    # an early stop interrupted before model.pt was written resumes to the same result without training more
    (tmp_path / "run" / "model.pt").unlink()
    again = train_model(data, tmp_path / "run", settings, seed=0, device="cpu", progress=False)
    assert again["epochs"] == summary["epochs"] and again["stopped_early"]
