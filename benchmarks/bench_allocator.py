"""glibc's allocator thresholds against its defaults, side by side: one training step of the graph UNet on CPU.

A training step at nside 128 allocates activations of 50-150 MB; above glibc's largest ``mmap`` threshold (32 MB)
each is returned to the kernel when freed and faulted in again, zeroed, at the next step: system time. This script
runs the step in child processes, alternately with the default allocator and with the thresholds raised before
torch allocates (``mallopt(M_MMAP_THRESHOLD, --mmap-threshold)``, ``mallopt(M_TRIM_THRESHOLD, 2^31 - 1)`` through
``ctypes``), and prints one JSON object with, per setting and round: user, system and wall seconds per step (after
one warm-up step), the peak resident memory, the SHA-256 of the first layer's gradient (equal: the allocator
does not change the arithmetic) and torch's compute context (``cosmobench.core.runtime.compute_context``).
``deepsphere``'s preset network: levels 4, base channels 16, 3 Chebyshev terms, 4 input maps, one thread.

    python benchmarks/bench_allocator.py [--nside 128] [--batch 4] [--steps 3] [--rounds 2]

Linux with glibc only (``mallopt``).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h>


def _child(nside: int, batch: int, steps: int, tuned: bool, mmap_threshold: int) -> dict:
    import ctypes
    import hashlib
    import resource
    import time

    if tuned:
        libc = ctypes.CDLL("libc.so.6")
        if not (libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold) and libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)):
            raise RuntimeError("mallopt refused the thresholds")
    import torch

    from cosmobench.cmb.sphere import SphereUNet
    from cosmobench.core.runtime import compute_context

    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = SphereUNet(4, nside, [16, 32, 64, 128], k=3)
    inputs = torch.randn(batch, 4, 1, 12 * nside**2)

    def step():
        net.zero_grad()
        net(inputs).abs().mean().backward()

    step()
    before, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(steps):
        step()
    after = resource.getrusage(resource.RUSAGE_SELF)
    grad = net.down[0].convs[0].weight.grad.numpy().tobytes()
    return {
        "user_s": (after.ru_utime - before.ru_utime) / steps,
        "sys_s": (after.ru_stime - before.ru_stime) / steps,
        "wall_s": (time.perf_counter() - wall) / steps,
        "max_rss_mb": after.ru_maxrss / 1024,
        "grad_sha256": hashlib.sha256(grad).hexdigest(),
        **compute_context("cpu"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nside", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--mmap-threshold", type=int, default=2**30, help="bytes (glibc's default ceiling: 32 MB)")
    parser.add_argument("--child", choices=["default", "tuned"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.nside, args.batch, args.steps, args.child == "tuned", args.mmap_threshold)))
        return
    runs: dict[str, list[dict]] = {"default": [], "tuned": []}
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
                "wall_ratio_default_over_tuned": best["default"] / best["tuned"],
                "same_gradients": len({r["grad_sha256"] for rows in runs.values() for r in rows}) == 1,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
