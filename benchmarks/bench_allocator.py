"""glibc's allocator thresholds against its defaults, side by side: one CPU training step of a network.

A training step whose activations exceed glibc's largest ``mmap`` threshold (32 MB) gets each from the kernel
and returns it when freed, so its pages are faulted in again, zeroed, at the next step: system time.
``cosmobench.core.train.fit`` therefore keeps freed memory in the process on the CPU
(:func:`cosmobench.core.runtime.retain_freed_memory`). This script runs the step of one network in child
processes, alternately with glibc's defaults and with that switch applied before torch allocates, and prints one
JSON object with, per setting and round: user, system and wall seconds per step (after one warm-up step), the
peak resident memory, the SHA-256 of the first parameter's gradient (equal: the allocator does not change the
arithmetic) and torch's compute context. Networks, at their presets' sizes, one thread:

- ``deepsphere``: the graph UNet (levels 4, base channels 16, 3 Chebyshev terms, 4 input maps) at ``--nside``;
- ``nilc_unet``: the plane UNet of ``nilc_unet``/``regress_unet`` (levels 4, base channels 8; 13 input planes
  and 6 outputs, as with ``fields: IQU`` and ``uncertainty: gaussian``) on the (4 nside, 3 nside) sky plane;
- ``o3_err``: the multifield CNN of the ``reference`` preset (hidden 8, one 256^2 field; ``--nside`` unused).

    python benchmarks/bench_allocator.py [--network deepsphere] [--nside 128] [--batch 4] [--steps 3] [--rounds 2]

Linux with glibc only (``mallopt``).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys

NETWORKS = ("deepsphere", "nilc_unet", "o3_err")


def _network(name: str, nside: int, batch: int):
    """The network ``name`` and an input batch for it."""
    import torch

    if name == "deepsphere":
        from cosmobench.cmb.sphere import SphereUNet

        return SphereUNet(4, nside, [16, 32, 64, 128], k=3), torch.randn(batch, 4, 1, 12 * nside**2)
    if name == "nilc_unet":
        from cosmobench.cmb.nn import FullSkyNet, reference_config

        return FullSkyNet(13, **reference_config(4, 8), out_channels=6), torch.randn(batch, 13, 4 * nside, 3 * nside)
    from cosmobench.multifield.network import O3Err

    return O3Err(1, hidden=8, npix=256), torch.randn(batch, 1, 256, 256)


def _child(network: str, nside: int, batch: int, steps: int, retain: bool) -> dict:
    import hashlib
    import resource
    import time

    from cosmobench.core.runtime import compute_context, retain_freed_memory

    if retain and not retain_freed_memory():
        raise RuntimeError("retain_freed_memory() did not apply (not glibc, or MALLOC_*_THRESHOLD_ set)")
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    net, inputs = _network(network, nside, batch)
    first = next(net.parameters())

    def step():
        net.zero_grad()
        net(inputs).abs().mean().backward()

    step()
    before, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(steps):
        step()
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "user_s": (after.ru_utime - before.ru_utime) / steps,
        "sys_s": (after.ru_stime - before.ru_stime) / steps,
        "wall_s": (time.perf_counter() - wall) / steps,
        "max_rss_mb": after.ru_maxrss / 1024,
        "grad_sha256": hashlib.sha256(first.grad.numpy().tobytes()).hexdigest(),
        **compute_context("cpu"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", choices=NETWORKS, default="deepsphere")
    parser.add_argument("--nside", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", choices=["default", "retain"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.network, args.nside, args.batch, args.steps, args.child == "retain")))
        return
    runs: dict[str, list[dict]] = {"default": [], "retain": []}
    for _ in range(args.rounds):
        for name in runs:
            command = [sys.executable, __file__, "--child", name, *sys.argv[1:]]
            out = subprocess.run(command, capture_output=True, text=True, check=True)
            runs[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    best = {name: min(r["wall_s"] for r in rows) for name, rows in runs.items()}
    print(
        json.dumps(
            {
                "machine": platform.platform(),
                "settings": vars(args) | {"child": None},
                "runs": runs,
                "wall_ratio_default_over_retain": best["default"] / best["retain"],
                "same_gradients": len({r["grad_sha256"] for rows in runs.values() for r in rows}) == 1,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
