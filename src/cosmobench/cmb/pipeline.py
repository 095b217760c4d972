"""``cosmobench cmb run``: the whole CMB separation benchmark in one call.

simulate -> (train) + separate for every method -> evaluate -> compare. Each step is resumable, so an
interrupted run continues where it stopped. The steps receive the plain sections of the configuration.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping

from .compare import compare
from .evaluate import evaluate
from .separate import separate, train
from .simulate import simulate_dataset

__all__ = ["run"]


def run(config: Mapping) -> dict:
    """Simulate, separate with every method of ``config["run"]["methods"]``, evaluate and write the report.

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
    simulate_dataset(**config["simulate"])
    steps["simulate"] = time.perf_counter() - t0
    trained = {}
    for name in methods:
        t = time.perf_counter()
        settings = config["methods"][name]
        _say(f"method {name}")
        facts = train(**{**config["train"], "method": name, "settings": settings})
        if facts.get("epochs"):
            trained[name] = facts
        separate(**{**config["separate"], "method": name, "settings": settings})
        steps[name] = time.perf_counter() - t
    t = time.perf_counter()
    _say("evaluating")
    evaluate(**{**config["evaluate"], "methods": methods})
    steps["evaluate"] = time.perf_counter() - t
    t = time.perf_counter()
    report = compare(**config["compare"])
    steps["compare"] = time.perf_counter() - t
    steps["total"] = time.perf_counter() - t0
    table = (report.parent / "leaderboard.md").read_text().split("\n\n")[0]
    _say(f"leaderboard (Test split):\n\n{table}\n\nreport: {report}")
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
