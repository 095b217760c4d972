"""``cosmobench cmb run``: the whole CMB separation benchmark in one call.

simulate -> (train) + separate for every method and every split of ``run.splits`` (Test and the
out-of-distribution TestOOD) -> evaluate each split -> compare. Each step is resumable, so an interrupted run
continues where it stopped. The steps receive the plain sections of the configuration.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from pathlib import Path

from .compare import compare, leaderboard_markdown, ood_markdown
from .dataset import CMBDataset
from .evaluate import evaluate
from .separate import separate, train
from .simulate import simulate_dataset

__all__ = ["run"]


def run(config: Mapping) -> dict:
    """Simulate, separate with every method of ``config["run"]["methods"]``, evaluate and write the report.

    Every split of ``config["run"]["splits"]`` that the dataset holds (default Test and TestOOD, whose
    foregrounds come from another model than the training foregrounds) is separated and evaluated, into
    ``<compare.results_dir>/<split>``; splits with no simulation are skipped with a message.

    Parameters
    ----------
    config : mapping
        The resolved ``cmb`` configuration (sections ``simulate``, ``methods``, ``train``, ``separate``,
        ``evaluate``, ``compare``, ``run``), as plain dicts.

    Returns
    -------
    dict
        Seconds per step, training facts per learned method, and the path of the report (the leaderboard
        is printed to standard error).
    """
    methods = list(config["run"]["methods"])
    unknown = sorted(set(methods) - set(config["methods"]))
    if unknown:
        raise ValueError(
            f"run.methods names {unknown}, which have no section under `methods:`; "
            f"configured methods: {sorted(config['methods'])}"
        )
    steps: dict[str, float] = {}
    t0 = time.perf_counter()
    _say("simulating the dataset")
    root = simulate_dataset(**config["simulate"])["root"]
    steps["simulate"] = time.perf_counter() - t0
    wanted = list(config["run"].get("splits") or [config["evaluate"]["split"]])
    simulated = {s: n for s, n in CMBDataset(root).splits.items() if n > 0}
    splits = [s for s in wanted if s in simulated]
    if not splits:
        raise ValueError(f"run.splits {wanted} names no simulated split; the dataset holds {simulated}")
    if len(splits) < len(wanted):
        _say(f"run.splits {sorted(set(wanted) - set(splits))} have no simulations in the dataset; skipped")
    trained = {}
    for name in methods:
        t = time.perf_counter()
        settings = config["methods"][name]
        _say(f"method {name}")
        facts = train(**{**config["train"], "method": name, "settings": settings})
        if facts.get("epochs"):
            trained[name] = facts
        for split in splits:
            separate(**{**config["separate"], "method": name, "settings": settings, "split": split})
        steps[name] = time.perf_counter() - t
    t = time.perf_counter()
    summaries = {}
    for split in splits:
        _say(f"evaluating {split}")
        out_dir = Path(config["compare"]["results_dir"]) / split
        summaries[split] = evaluate(**{**config["evaluate"], "methods": methods, "split": split, "out_dir": out_dir})
    steps["evaluate"] = time.perf_counter() - t
    t = time.perf_counter()
    report = compare(**config["compare"])
    steps["compare"] = time.perf_counter() - t
    steps["total"] = time.perf_counter() - t0
    table = leaderboard_markdown(summaries[splits[0]]).split("\n\n")[0]
    _say(f"leaderboard ({splits[0]} split):\n\n{table}\n")
    if len(splits) > 1:
        _say(f"in-distribution vs out-of-distribution foregrounds:\n\n{ood_markdown(summaries)}")
    _say(f"report: {report}")
    return {
        "report": str(report),
        "seconds": {k: round(v, 1) for k, v in steps.items()},
        "trained": {
            name: {k: facts[k] for k in ("epochs", "seconds", "train_maps_per_s") if k in facts}
            for name, facts in trained.items()
        },
    }


def _say(message: str) -> None:
    print(f"cosmobench: {message}", file=sys.stderr, flush=True)
