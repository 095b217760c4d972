"""Hyper-parameter search for o3_err with optuna over a relational-database storage.

The study lives in an RDB: by default a SQLite file in the search folder (``sqlite:///.../study.db``), or any
SQLAlchemy URL (``postgresql://user@host/db``, ``mysql+pymysql://...``) so several workers on several machines
share one study: start the same command on each machine with the same ``storage`` (and a shared filesystem for
the weights); each worker stops once the study holds ``n_trials`` finished trials. Study name and search space
are the CMD benchmark's: ``wd_dr_hidden_lr_o3``; lr ~ logU[1e-5, 5e-3], wd ~ logU[1e-8, 1e-1], dr ~ U[0, 0.9],
hidden in {6, ..., 12} (the CPU demo searches {1, 2, 3}; ``preset=reference`` the reference's); TPE sampler with
``n_startup_trials`` random trials. Unlike the reference, trials are pruned (median rule on the validation loss,
reported every epoch from fit's ``on_epoch_end``). Every trial keeps its weights and losses in ``trial_NNN/``; the
best complete trial is written to ``best.json``. :func:`check_storage` checks the storage URL before any work
(driver, reachable database, writable SQLite folder).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

from ..core.io import write_json
from .settings import SearchSettings, TrainingSettings
from .train import PreparedData, train_model

__all__ = ["storage_url", "check_storage", "run_search", "best_trial"]

_S = SearchSettings


def storage_url(storage: str | None, folder: Path) -> str:
    """The SQLAlchemy URL of the study: ``storage`` if given, else ``sqlite:///<folder>/study.db``."""
    if storage:
        return storage
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(folder / 'study.db').resolve()}"


def check_storage(storage: str | None) -> None:
    """Check an optuna storage URL before any work: parsable, a known dialect with its driver installed, and for
    SQLite a file in an existing, writable folder; other databases are connected to once (nothing is written).

    Raises
    ------
    ValueError
        One line naming the setting (``search.storage``), what is wrong and the fix.
    """
    import os

    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    if storage is None:
        return
    fix = (
        "use storage=null (a SQLite file in the search folder), sqlite:////abs/path/study.db, or "
        "postgresql://user:password@host/db with its driver installed"
    )
    head = f"search.storage={storage!r}"
    try:
        url = make_url(storage)
        dialect = url.get_dialect()
        dialect.import_dbapi()
    except ImportError as err:
        raise ValueError(f"{head}: the database driver is not installed ({err}); install it, or {fix}") from None
    except (SQLAlchemyError, ValueError) as err:
        raise ValueError(f"{head} is not a usable SQLAlchemy URL ({str(err).splitlines()[0]}); {fix}") from None
    if url.get_backend_name() == "sqlite":
        if not url.database or url.database == ":memory:":
            raise ValueError(f"{head} is an in-memory database (lost at exit, not shared); {fix}")
        folder = Path(url.database).absolute().parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise ValueError(f"{head}: the folder {folder} does not exist or is not writable; {fix}")
        return
    try:
        with create_engine(url).connect():
            pass
    except (SQLAlchemyError, OSError) as err:
        raise ValueError(f"{head}: cannot connect ({str(err).splitlines()[0]}); {fix}") from None


def _make_study(url: str, study_name: str, n_startup_trials: int, seed: int, prune_warmup: int):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(url=url)
    return optuna.create_study(
        study_name=study_name,
        storage=storage,
        direction="minimize",
        load_if_exists=True,
        sampler=optuna.samplers.TPESampler(n_startup_trials=n_startup_trials, seed=seed),
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=max(1, min(n_startup_trials, 5)), n_warmup_steps=prune_warmup
        ),
    )


def run_search(
    data: PreparedData,
    folder: Path | str,
    base: TrainingSettings,
    *,
    n_trials: int = _S.n_trials,
    n_startup_trials: int = _S.n_startup_trials,
    storage: str | None = _S.storage,
    study_name: str = _S.study_name,
    lr_range: Sequence[float] = _S.lr_range,
    wd_range: Sequence[float] = _S.wd_range,
    dropout_range: Sequence[float] = _S.dropout_range,
    hidden_range: Sequence[int] = _S.hidden_range,
    prune_warmup: int = _S.prune_warmup,
    seed: int = _S.seed,
    device: str = _S.device,
    progress: bool = _S.progress,
) -> dict:
    """Run (or join, or resume) the study until it holds ``n_trials`` complete or pruned trials.

    Parameters
    ----------
    data : PreparedData
    folder : path
        Search folder: ``study.db`` (default storage), ``trial_NNN/`` (weights, losses), ``best.json``.
    base : TrainingSettings
        Settings of every trial except the searched lr, weight_decay, dropout and hidden.
    n_trials, n_startup_trials : int
        Total trials of the study (over all workers) and random trials before TPE.
    storage : str, optional
        SQLAlchemy URL (check it first with :func:`check_storage`); default a SQLite file in ``folder``.
    study_name : str
    lr_range, wd_range, dropout_range, hidden_range : (low, high)
        Search ranges.
    prune_warmup : int
        Epochs before a trial may be pruned.
    seed : int
        Sampler seed and training seed of every trial.
    device : str
        Training device ("auto": CUDA when available).
    progress : bool
        Progress bars of the trials' trainings.

    Returns
    -------
    dict
        ``best`` (number, value, params, model_path), ``n_complete``, ``n_pruned``, ``wall_s``, ``storage``.
    """
    import optuna

    folder = Path(folder)
    url = storage_url(storage, folder)
    study = _make_study(url, study_name, n_startup_trials, seed, prune_warmup)
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)

    def objective(trial: optuna.Trial) -> float:
        settings = dataclasses.replace(
            base,
            lr=trial.suggest_float("lr", *lr_range, log=True),
            weight_decay=trial.suggest_float("wd", *wd_range, log=True),
            dropout=trial.suggest_float("dr", *dropout_range),
            hidden=trial.suggest_int("hidden", *hidden_range),
        )
        best = [float("inf")]

        def report(epoch: int, record: dict) -> None:
            best[0] = min(best[0], record["val_loss"])
            trial.report(record["val_loss"], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch}")

        run_dir = folder / f"trial_{trial.number:03d}"
        trial.set_user_attr("run_dir", str(run_dir))
        summary = train_model(data, run_dir, settings, seed=seed, device=device, progress=progress, on_epoch_end=report)
        trial.set_user_attr("model_path", summary["model_path"])
        return summary["best_val_loss"]

    t0 = time.perf_counter()
    already = len(study.get_trials(deepcopy=False, states=finished))
    if already < n_trials:
        study.optimize(
            objective,
            n_trials=n_trials - already,
            callbacks=[optuna.study.MaxTrialsCallback(n_trials, states=finished)],
            catch=(),
        )
    wall = time.perf_counter() - t0
    summary = best_trial(study)
    trials = study.get_trials(deepcopy=False)
    summary.update(
        {
            "n_complete": sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials),
            "n_pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in trials),
            "wall_s": wall,
            "storage": url,
            "study_name": study_name,
            "trials": [
                {"number": t.number, "state": t.state.name, "value": t.value, "params": t.params} for t in trials
            ],
        }
    )
    write_json(folder / "best.json", summary)
    return summary


def best_trial(study) -> dict:
    """The best complete trial of ``study``: number, validation loss, hyper-parameters and weights path."""
    try:
        best = study.best_trial
    except ValueError as err:
        raise RuntimeError(f"study {study.study_name!r} has no complete trial yet; run more trials") from err
    return {
        "best": {
            "number": best.number,
            "value": best.value,
            "params": best.params,
            "model_path": best.user_attrs.get("model_path"),
        }
    }
