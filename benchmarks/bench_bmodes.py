"""Benchmark of the B-mode score model: training steps/s, sampling throughput, and the prototype side by side.

Prints one JSON object (medians over ``--repeats``). The network is the prototype's ScoreNet1D (5 linear layers of
256, time embedding 128, 30 multipoles), conditional (the observation is projected once per run, so conditioning
costs nothing per step); weights are random, which does not change the cost. Targets (TARGETS.md): Euler-Maruyama
at >= 2x the prototype's spectra x steps per CPU-second on one thread (``vs_prototype``), and <= 0.1 s for
10^4 spectra x 1000 steps on an H100 (prototype: 0.74 s).

``vs_prototype`` runs our Euler-Maruyama sampler and a re-implementation of the prototype's (astropi-b/cmb_score_model,
``sample.py`` / ``model.py``: an unconditional MLP on the concatenation [x, time embedding] with the embedding
computed for every row, swish as x * sigmoid(x), per-step SDE coefficient tensors, batches of 256, ``no_grad``)
alternately in the same process on one thread, and reports CPU seconds (``time.process_time``) next to wall
seconds: on a shared machine wall time measures the neighbours, CPU time the code.

    python benchmarks/bench_bmodes.py                       # CPU, 10^4 x 1000 Euler-Maruyama and PC
    python benchmarks/bench_bmodes.py --n-steps 200         # quicker; "seconds_1e4x1000" extrapolates linearly
    python benchmarks/bench_bmodes.py --only-prototype      # just the side-by-side comparison (one thread)
    python benchmarks/bench_bmodes.py --device cuda         # GPU: eager and CUDA-graph paths
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import torch
from torch import nn

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


class PrototypeScoreNet(nn.Module):
    """The prototype's score network, re-implemented for timing: [x, swish(Linear(Fourier(t)))] -> 5 linear layers
    with swish written as h * sigmoid(h) -> divided by the VE std per row (sigma_min 0.1, sigma_max 10)."""

    def __init__(self, n: int = 30, hidden: int = 256, embed: int = 128, layers: int = 5):
        super().__init__()
        self.register_buffer("w", torch.randn(embed // 2) * 30.0)
        self.embed = nn.Linear(embed, embed)
        self.layers = nn.ModuleList(
            [nn.Linear(n + embed, hidden)] + [nn.Linear(hidden, hidden) for _ in range(layers - 2)]
        )
        self.out = nn.Linear(hidden, n)
        self.sigma_min, self.sigma_max = 0.1, 10.0

    def std(self, t: torch.Tensor) -> torch.Tensor:
        return self.sigma_min * torch.sqrt((self.sigma_max / self.sigma_min) ** (2.0 * t) - 1.0)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        proj = t[:, None] * self.w[None, :] * 2.0 * math.pi
        e = self.embed(torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1))
        h = torch.cat([x, e * torch.sigmoid(e)], dim=1)
        for layer in self.layers:
            h = layer(h)
            h = h * torch.sigmoid(h)
        return self.out(h) / self.std(t).unsqueeze(-1)


def prototype_em(net: PrototypeScoreNet, x_init: torch.Tensor, n_steps: int, eps: float = 1e-5) -> torch.Tensor:
    """The prototype's Euler-Maruyama loop (its per-step work, with the sign of dt corrected, which costs nothing)."""
    x = x_init.clone()
    times = torch.linspace(1.0, eps, n_steps)
    dt = times[1] - times[0]
    log_ratio = math.log(net.sigma_max / net.sigma_min)
    x_mean = x
    for t in times:
        t_batch = torch.ones(len(x)) * t
        drift = torch.zeros_like(x)
        g = net.sigma_min * (net.sigma_max / net.sigma_min) ** t_batch * math.sqrt(2.0 * log_ratio)
        x_mean = x + (drift - g.unsqueeze(-1) ** 2 * net(x, t_batch)) * dt
        x = x_mean + g.unsqueeze(-1) * torch.sqrt(torch.abs(dt)) * torch.randn_like(x)
    return x_mean


def bench_vs_prototype(
    model: ScoreModel, n_spectra: int, n_steps: int, repeats: int, chunk: int, reduced_precision: bool = True
) -> dict:
    """Our Euler-Maruyama (chunks of ``chunk``) and the prototype's (batches of 256, as its ``sample.py``) on the
    same spectra, alternately, one thread; medians of CPU and wall seconds and the ratio of spectra x steps per
    CPU-second. ``reduced_precision`` adds our sampler with bfloat16-rounded matrix products
    (``score_fn(reduced_precision=True)``), where the CPU has bfloat16 arithmetic."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    proto = PrototypeScoreNet().eval()
    x_T = torch.randn(n_spectra, 30)
    y = torch.randn(n_spectra, 30)

    def ours(reduced: bool):
        def run():
            with torch.inference_mode():
                for i in range(0, n_spectra, chunk):
                    score = model.score_fn(y[i : i + chunk], reduced_precision=reduced)
                    make_sampler("em", model.sde, score, n_steps=n_steps)(x_T[i : i + chunk])

        return run

    def prototype():
        with torch.no_grad():
            for i in range(0, n_spectra, 256):
                prototype_em(proto, x_T[i : i + 256], n_steps)

    runs = {"ours": ours(False), "prototype": prototype}
    if reduced_precision:
        runs["ours_reduced_precision"] = ours(True)
    cpu, wall = {k: [] for k in runs}, {k: [] for k in runs}
    model.eval()
    for _ in range(repeats + 1):  # the first round warms up and is dropped
        for name, fn in runs.items():
            c0, w0 = time.process_time(), time.perf_counter()
            fn()
            cpu[name].append(time.process_time() - c0)
            wall[name].append(time.perf_counter() - w0)
    torch.set_num_threads(threads)
    med = {k: {"cpu_s": statistics.median(cpu[k][1:]), "wall_s": statistics.median(wall[k][1:])} for k in runs}
    for rec in med.values():
        rec["spectra_steps_per_cpu_s"] = n_spectra * n_steps / rec["cpu_s"]
    return {
        "threads": 1,
        "n_spectra": n_spectra,
        "n_steps": n_steps,
        "chunk": chunk,
        **med,
        **{
            f"speedup_per_cpu_s{k[4:]}": med["prototype"]["cpu_s"] / med[k]["cpu_s"]
            for k in runs
            if k.startswith("ours")
        },
        "speedup_wall": med["prototype"]["wall_s"] / med["ours"]["wall_s"],
        "cpu_s_rounds": {k: [round(v, 3) for v in cpu[k][1:]] for k in runs},
    }


def _bf16_cpu() -> bool:
    """Whether this CPU has bfloat16 arithmetic for oneDNN (AVX512-BF16 or AMX)."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


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
    parser.add_argument("--proto-spectra", type=int, default=2048, help="spectra of the side-by-side comparison")
    parser.add_argument("--proto-steps", type=int, default=200, help="steps of the side-by-side comparison")
    parser.add_argument("--proto-chunk", type=int, default=1024, help="our chunk size in the comparison")
    parser.add_argument("--only-prototype", action="store_true", help="run only the side-by-side comparison")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = bool(args.tf32)
    torch.manual_seed(0)
    net = ScoreNet1D(30, hidden_dim=256, embed_dim=128, num_layers=5, cond_dim=30)
    model = ScoreModel(net, VESDE(0.01, 30.0)).to(device)
    if args.only_prototype:
        rec = bench_vs_prototype(
            model, args.proto_spectra, args.proto_steps, args.repeats, args.proto_chunk, _bf16_cpu()
        )
        print(json.dumps({"torch": torch.__version__, "network": net.arch, "vs_prototype": rec}, indent=2))
        return
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
    if device.type == "cpu":
        out["vs_prototype"] = bench_vs_prototype(
            model, args.proto_spectra, args.proto_steps, args.repeats, args.proto_chunk, _bf16_cpu()
        )
    # matrix-product FLOPs of one score evaluation per spectrum (the time embedding is one row per step)
    flops = 2 * (30 * 256 + 3 * 256 * 256 + 256 * 30)
    for rec in out["sampling"]:
        rec["network_gflops"] = rec["spectra_steps_per_s"] * rec["nfe_per_step"] * flops / 1e9
        rec["fraction_of_gemm"] = rec["network_gflops"] / gemm
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
