"""Benchmark of the B-mode score model: training steps/s and sampling throughput (spectra x steps per second).

Prints one JSON object (medians over ``--repeats``). The network is the prototype's ScoreNet1D (5 linear layers of
256, time embedding 128, 30 multipoles), conditional (the observation is projected once per run, so conditioning
costs nothing per step); weights are random, which does not change the cost. Targets (TARGETS.md): 10^4 spectra x
1000 steps in <= 60 s on 2 CPU cores (prototype: about 115 s) and <= 0.1 s on an H100 (prototype: 0.74 s).

    python benchmarks/bench_bmodes.py                       # CPU, 10^4 x 1000 Euler-Maruyama and PC
    python benchmarks/bench_bmodes.py --n-steps 200         # quicker; "seconds_1e4x1000" extrapolates linearly
    python benchmarks/bench_bmodes.py --device cuda         # GPU: eager and CUDA-graph paths
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from cosmobench.bmodes.losses import dsm_loss
from cosmobench.bmodes.samplers import make_sampler
from cosmobench.bmodes.score_net import ScoreModel, ScoreNet1D
from cosmobench.bmodes.sde import VESDE


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_training(model: ScoreModel, device: torch.device, batch: int, steps: int, repeats: int) -> dict:
    """Adam steps of the conditional DSM loss on random data."""
    loss_fn = dsm_loss(model.sde, p_uncond=0.2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x, y = torch.randn(batch, 30, device=device), torch.randn(batch, 30, device=device)
    model.train()

    def run(n):
        for _ in range(n):
            loss = loss_fn(model, (x, y))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    run(5)
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        run(steps)
        _sync(device)
        times.append(time.perf_counter() - t0)
    sec = statistics.median(times)
    return {"batch_size": batch, "steps_per_s": steps / sec, "samples_per_s": steps * batch / sec}


def bench_sampler(
    model: ScoreModel,
    name: str,
    device: torch.device,
    n_spectra: int,
    n_steps: int,
    repeats: int,
    cuda_graph: bool,
    chunk: int | None = None,
) -> dict:
    """One full sampler run over ``n_spectra`` conditional spectra, in chunks of ``chunk`` spectra (all at once if
    None; on CPU chunks of ~1000 keep the activations in cache, as the ``sample`` stage's ``chunk_size`` does)."""
    model.eval()
    y = torch.randn(n_spectra, 30, device=device)
    step = chunk or n_spectra
    with torch.inference_mode():
        gen = torch.Generator(device=device).manual_seed(0)
        x_T = model.sde.prior_sampling((n_spectra, 30), generator=gen, device=device)
        warm = make_sampler(name, model.sde, model.score_fn(y[:step]), n_steps=3)
        warm(x_T[:step], generator=gen, cuda_graph=cuda_graph)
        times = []
        for _ in range(repeats):
            _sync(device)
            t0 = time.perf_counter()
            for i in range(0, n_spectra, step):  # one sampler per chunk, with its part of the conditions
                sampler = make_sampler(name, model.sde, model.score_fn(y[i : i + step]), n_steps=n_steps)
                res = sampler(x_T[i : i + step], generator=gen, cuda_graph=cuda_graph)
            _sync(device)
            times.append(time.perf_counter() - t0)
    sec = statistics.median(times)
    rate = n_spectra * n_steps / sec
    return {
        "sampler": name,
        "n_spectra": n_spectra,
        "n_steps": n_steps,
        "nfe_per_step": res.nfe // n_steps,
        "cuda_graph": cuda_graph,
        "chunk": step,
        "seconds": sec,
        "spectra_steps_per_s": rate,
        "seconds_1e4x1000": 1e7 / rate,
    }


def bench_gemm(device: torch.device, repeats: int) -> float:
    """GFLOP/s of a 4096 x 256 x 256 matrix product: the machine's reference speed for this network's layers
    (on a shared machine it tells how much of it the benchmark actually had)."""
    a, w = torch.randn(4096, 256, device=device), torch.randn(256, 256, device=device)
    b, out = torch.randn(256, device=device), torch.empty(4096, 256, device=device)
    for _ in range(3):
        torch.addmm(b, a, w, out=out)
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(50):
            torch.addmm(b, a, w, out=out)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return 50 * 2 * 4096 * 256 * 256 / statistics.median(times) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--n-spectra", type=int, default=10_000)
    parser.add_argument("--n-steps", type=int, default=1000)
    parser.add_argument("--samplers", default="em,pc")
    parser.add_argument("--chunks", default="all,1024", help="spectra per sampler call: comma list, 'all' = one call")
    parser.add_argument("--train-steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tf32", action="store_true", help="allow TF32 matmuls on CUDA")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = bool(args.tf32)
    torch.manual_seed(0)
    net = ScoreNet1D(30, hidden_dim=256, embed_dim=128, num_layers=5, cond_dim=30)
    model = ScoreModel(net, VESDE(0.01, 30.0)).to(device)
    gemm = bench_gemm(device, args.repeats)
    out = {
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "gemm_gflops": gemm,
        "network": net.arch,
        "training": bench_training(model, device, args.batch_size, args.train_steps, args.repeats),
        "sampling": [],
    }
    graph_modes = [False, True] if device.type == "cuda" else [False]
    chunks = [None if c == "all" else int(c) for c in args.chunks.split(",")]
    for name in args.samplers.split(","):
        for graph in graph_modes:
            for chunk in chunks:
                out["sampling"].append(
                    bench_sampler(model, name, device, args.n_spectra, args.n_steps, args.repeats, graph, chunk)
                )
    # matrix-product FLOPs of one score evaluation per spectrum (the time embedding is one row per step)
    flops = 2 * (30 * 256 + 3 * 256 * 256 + 256 * 30)
    for rec in out["sampling"]:
        rec["network_gflops"] = rec["spectra_steps_per_s"] * rec["nfe_per_step"] * flops / 1e9
        rec["fraction_of_gemm"] = rec["network_gflops"] / gemm
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
