"""Throughput of the learned separators: training and inference maps/s, and the input pipeline's maps/s.

Trains each configuration through the real path (``core.train.fit`` on memory-mapped float32 arrays, as
``LearnedMethod.fit`` does) on random maps, and times inference like ``LearnedMethod.predict``. Prints one JSON
object with medians over epochs / repeats. Device-aware: on CUDA it uses bfloat16 autocast, channels-last and
arrays resident on the GPU (as ``fit`` does when they fit), and adds the reference sizes (UNet5 at nside 128,
UNet8 at nside 256/512).

    python benchmarks/bench_unet.py                      # CPU: tiny/unet5/patch at nside 32, 64 (+128 tiny)
    python benchmarks/bench_unet.py --nsides 32 --configs sphere_tiny sphere --threads 1   # deepsphere
    python benchmarks/bench_unet.py --nsides 128 --configs unet5 --maps 8
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cosmobench.cmb.learned import Standardised, place_arrays
from cosmobench.cmb.methods.deepsphere import DeepSphereUNet
from cosmobench.cmb.methods.unet_fullsky import FullSkyUNet
from cosmobench.cmb.methods.unet_patch import PatchUNet
from cosmobench.core.runtime import resolve_device
from cosmobench.core.seeds import rng
from cosmobench.core.train import fit, iterate_batches

# name -> (method class, settings); "tiny" is the embedded-default CPU configuration, "sphere_tiny" deepsphere's
CONFIGS = {
    "tiny": (FullSkyUNet, {"levels": 4, "base_channels": 8, "batch_size": 4}),
    "unet5": (FullSkyUNet, {"levels": 5, "batch_size": 12}),
    "unet8": (FullSkyUNet, {"levels": 8, "batch_size": 12}),
    "patch_tiny": (PatchUNet, {"levels": 3, "base_channels": 8, "batch_size": 16}),
    "patch": (PatchUNet, {"batch_size": 32}),
    "sphere_tiny": (DeepSphereUNet, {"levels": 4, "base_channels": 16, "batch_size": 4}),
    "sphere": (DeepSphereUNet, {"batch_size": 12}),
}


def bench_one(name: str, nside: int, n_maps: int, epochs: int, device: torch.device, amp: bool, folder: Path):
    cls, settings = CONFIGS[name]
    method = cls(**settings, bands=["100", "143", "217", "353"], progress=False)
    layout = method._layout(nside)
    n_images = n_maps * layout.images_per_map
    nbands = len(method.settings.bands)
    g = rng(0, "bench", name, nside)
    maps = g.standard_normal((n_maps, nbands, 12 * nside**2)).astype(np.float32) * 100
    inputs = np.lib.format.open_memmap(
        folder / f"{name}_{nside}_in.npy", "w+", np.float32, (n_images, nbands, *layout.image_shape)
    )
    targets = np.lib.format.open_memmap(
        folder / f"{name}_{nside}_t.npy", "w+", np.float32, (n_images, 1, *layout.target_shape)
    )
    layout.images(maps[0])  # builds the cached index
    t0 = time.perf_counter()
    for i, m in enumerate(maps):
        k = layout.images_per_map
        inputs[i * k : (i + 1) * k] = layout.images(m)
        targets[i * k : (i + 1) * k] = layout.target_images(m[:1])
    tiling_maps_per_s = n_maps / (time.perf_counter() - t0)
    inputs.flush()
    targets.flush()
    inputs, targets = (np.load(folder / f"{name}_{nside}_{s}.npy", mmap_mode="r") for s in ("in", "t"))

    batch = method.settings.batch_size
    data = place_arrays(inputs, targets, device)
    t0 = time.perf_counter()
    for _ in range(3):
        for b in iterate_batches(data, batch, shuffle=True):
            tuple(x.to(device, non_blocking=True) for x in b)
    if device.type == "cuda":
        torch.cuda.synchronize()
    loader_maps_per_s = 3 * n_maps / (time.perf_counter() - t0)

    net = method._network(nbands, nside)
    model = Standardised(net, np.zeros(nbands), np.full(nbands, 100.0), 100.0)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    hist = fit(
        model,
        data,
        None,
        loss_fn=lambda m, b: torch.nn.functional.l1_loss(m(b[0]), b[1] / m.target_scale),
        epochs=epochs,
        batch_size=batch,
        lr=1e-3,
        amp=amp,
        device=device,
        progress=False,
    )
    train = statistics.median(hist["samples_per_s"][1:] or hist["samples_per_s"]) / layout.images_per_map

    model.eval()
    x = torch.from_numpy(np.array(inputs[:batch])).to(device)
    times = []
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
        for _ in range(4):
            t0 = time.perf_counter()
            model(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    infer = len(x) / statistics.median(times[1:]) / layout.images_per_map
    return {
        "config": name,
        "nside": nside,
        "image": list(layout.image_shape),
        "images_per_map": layout.images_per_map,
        "batch_size": batch,
        "n_params": sum(p.numel() for p in net.parameters()),
        "train_maps_per_s": round(train, 3),
        "infer_maps_per_s": round(infer, 3),
        "loader_maps_per_s": round(loader_maps_per_s, 1),
        "tiling_maps_per_s": round(tiling_maps_per_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--nsides", type=int, nargs="*", default=None)
    parser.add_argument("--configs", nargs="*", default=None, choices=sorted(CONFIGS))
    parser.add_argument("--maps", type=int, default=None, help="maps per epoch (default: 4 batches)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs; the first is warm-up")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--no-amp", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    runs = []
    for nside in args.nsides or ([128, 256, 512] if cuda else [32, 64, 128]):
        for name in args.configs or (["unet5", "unet8", "patch"] if cuda else ["tiny", "unet5", "patch_tiny"]):
            if not cuda and nside >= 128 and name not in ("tiny", "patch_tiny") and args.nsides is None:
                continue  # minutes per step on 2 cores: ask for it explicitly
            if cuda and name == "unet8" and nside < 256 and args.configs is None:
                continue
            runs.append((name, nside))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, nside in runs:
            batch = CONFIGS[name][1]["batch_size"]
            n_maps = args.maps or (max(2, batch // 4) if CONFIGS[name][0] is PatchUNet else 4 * batch)
            results.append(bench_one(name, nside, n_maps, args.epochs, device, not args.no_amp, Path(tmp)))
    print(
        json.dumps(
            {
                "benchmark": "bench_unet",
                "device": str(device),
                "device_name": torch.cuda.get_device_name(device) if cuda else "cpu",
                "threads": torch.get_num_threads(),
                "amp_bf16": cuda and not args.no_amp,
                "results": results,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
