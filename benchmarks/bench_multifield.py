"""Throughput of the multifield task; prints one JSON object (medians).

- simulator: maps/s of the offline simulator (all fields of a hydro suite, and an N-body suite), at 64^2 by default;
- training: images/s of o3_err training steps (forward, moment loss, backward, AdamW, CyclicLR, random dihedral
  augmentation) on device-resident batches, and of the full ``core.train.fit`` loop on in-memory data;
- inference: images/s of forward passes (eval mode, no grad).

On CPU the CNN is measured at 64^2 (the embedded default, hidden 2 and 8) and at 256^2 with a small batch; on CUDA
at CMD's 256^2, hidden 8, batch 128, in fp32 and bf16 autocast, channels-last (TARGETS.md: >= 2 x 1477 images/s on
an H100). Usage: ``python benchmarks/bench_multifield.py [--quick] [--device cpu|cuda] [--simulator-only]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np
import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_simulator(npix: int, n_sims: int) -> dict:
    from cosmobench.multifield.power import load_or_build_power_table
    from cosmobench.multifield.simulate import simulate_sim
    from cosmobench.sky.cosmology import default_cache_dir

    t0 = time.perf_counter()
    power = load_or_build_power_table(default_cache_dir() / "multifield")
    table_s = time.perf_counter() - t0
    theta = np.array([0.3, 0.8, 1.0, 1.0, 1.0, 1.0])
    out = {"npix": npix, "power_table_load_or_build_s": table_s}
    for suite in ("TNGlike", "Nbody_TNGlike"):
        simulate_sim(suite, theta, npix=npix, seed=0, index=0, power=power)  # warm-up (interpolator, FFT plans)
        times = []
        for i in range(n_sims):
            t = time.perf_counter()
            maps = simulate_sim(suite, theta, npix=npix, seed=0, index=i + 1, power=power)
            times.append(time.perf_counter() - t)
        n_fields = len(maps)
        out[suite] = {
            "fields": n_fields,
            "s_per_sim": statistics.median(times),
            "maps_per_s": 15 / statistics.median(times),
            "field_maps_per_s": 15 * n_fields / statistics.median(times),
        }
    return out


def bench_network(
    device: torch.device, npix: int, hidden: int, channels: int, batch: int, steps: int, amp: bool, channels_last: bool
) -> dict:
    from cosmobench.multifield.augment import random_transform
    from cosmobench.multifield.loss import moment_loss
    from cosmobench.multifield.network import O3Err, count_parameters

    model = O3Err(channels, hidden, 0.2, npix).to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.5, 0.999), weight_decay=1e-5)
    sched = torch.optim.lr_scheduler.CyclicLR(
        opt, 1e-9, 1e-3, step_size_up=500, step_size_down=500, cycle_momentum=False
    )
    x = torch.randn(batch, channels, npix, npix, device=device)
    theta = torch.rand(batch, 6, device=device)
    dtype = torch.bfloat16 if amp and device.type == "cuda" else None

    def step():
        xb = random_transform(x).contiguous(memory_format=fmt)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out = model(xb)
            loss = moment_loss(out[:, :6], out[:, 6:], theta)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()

    def timed(fn, n):
        times = []
        for _ in range(n):
            _sync(device)
            t = time.perf_counter()
            fn()
            _sync(device)
            times.append(time.perf_counter() - t)
        return batch / statistics.median(times)

    model.train()
    for _ in range(2):
        step()
    train = timed(step, steps)
    model.eval()

    @torch.no_grad()
    def infer():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            model(x.contiguous(memory_format=fmt))

    infer()
    inference = timed(infer, steps)
    return {
        "npix": npix,
        "hidden": hidden,
        "channels": channels,
        "batch": batch,
        "amp_bf16": dtype is not None,
        "channels_last": channels_last,
        "parameters": count_parameters(model),
        "train_images_per_s": train,
        "inference_images_per_s": inference,
    }


def bench_fit(device: torch.device, npix: int, hidden: int, channels: int, batch: int, n_maps: int, amp: bool) -> dict:
    """images/s of the real training loop (core.train.fit) on in-memory data, median over 2 epochs after one."""
    from cosmobench.core.train import fit
    from cosmobench.multifield.network import O3Err
    from cosmobench.multifield.train import make_loss_fn

    gen = np.random.default_rng(0)
    data = (
        gen.standard_normal((n_maps, channels, npix, npix), dtype=np.float32),
        torch.as_tensor(gen.random((n_maps, 6), dtype=np.float32)),
    )
    model = O3Err(channels, hidden, 0.2, npix).to(memory_format=torch.channels_last)
    hist = fit(
        model,
        data,
        None,
        loss_fn=make_loss_fn(range(6), True),
        epochs=3,
        batch_size=batch,
        lr=1e-3,
        amp=amp,
        device=device,
        progress=False,
    )
    return {
        "npix": npix,
        "hidden": hidden,
        "channels": channels,
        "batch": batch,
        "maps_per_epoch": n_maps,
        "amp_bf16": amp and device.type == "cuda",
        "fit_images_per_s": statistics.median(hist["samples_per_s"][1:]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--threads", type=int, default=None, help="compute threads (default: the usable cores)")
    parser.add_argument("--simulator-only", action="store_true", help="measure the simulator only (no CNN)")
    args = parser.parse_args()
    from cosmobench.core.runtime import apply_threads

    apply_threads(args.threads or "auto")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    steps = 3 if args.quick else 7
    result = {
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpu_threads": torch.get_num_threads(),
            "device": str(device),
            "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
        }
    }
    result["simulator"] = {"64": bench_simulator(64, 3 if args.quick else 7)}
    if args.simulator_only:
        print(json.dumps(result, indent=2))
        return
    cpu = torch.device("cpu")
    result["cpu"] = {
        "o3_err_64_h2_3fields_b32": bench_network(cpu, 64, 2, 3, 32, steps, False, True),
        "o3_err_64_h8_1field_b32": bench_network(cpu, 64, 8, 1, 32, steps, False, True),
        "o3_err_256_h8_1field_b8": bench_network(cpu, 256, 8, 1, 8, 2 if args.quick else 3, False, True),
        "fit_64_h2_3fields_b32": bench_fit(cpu, 64, 2, 3, 32, 256, False),
    }
    if device.type == "cuda":
        result["gpu"] = {
            "o3_err_256_h8_1field_b128_fp32": bench_network(device, 256, 8, 1, 128, 20, False, True),
            "o3_err_256_h8_1field_b128_bf16": bench_network(device, 256, 8, 1, 128, 20, True, True),
            "o3_err_256_h8_13fields_b128_bf16": bench_network(device, 256, 8, 13, 128, 20, True, True),
            "fit_256_h8_1field_b128_bf16": bench_fit(device, 256, 8, 1, 128, 4096, True),
            "target_train_images_per_s": 2 * 1477,
        }
    else:
        result["gpu"] = "unmeasured: no CUDA device (target: o3_err 256^2 batch 128 >= 2 x 1477 images/s on an H100)"
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
