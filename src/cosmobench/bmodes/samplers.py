"""Reverse-time samplers: Euler-Maruyama, probability-flow ODE (fixed-step and adaptive) and predictor-corrector.

All samplers integrate from t = T down to t = eps with **negative** time steps (dt < 0): the prototype used
dt > 0 and integrated against the score. The time grid is t_i = linspace(T, eps, n_steps + 1).

- :class:`EulerMaruyama`: x <- x + [f - g^2 s] dt + g sqrt(-dt) z; the last step adds no noise.
- :class:`ProbabilityFlowODE`: dx = [f - g^2 s / 2] dt with fixed-step Euler, Heun or RK4, or adaptive RK45
  (:func:`scipy.integrate.solve_ivp`); the end point is denoised with Tweedie's formula
  x_0 = (x + s(eps)^2 score) / m(eps).
- :class:`PredictorCorrector`: at each level, ``n_corrector_steps`` Langevin steps with the signal-to-noise step
  size eps_L = 2 alpha (snr ||z|| / ||score||)^2 computed **per sample** (alpha = m(t_i)^2 / m(t_{i+1})^2, 1 for VE),
  then a predictor step (Euler-Maruyama or reverse diffusion).

Every sampler takes a score function ``score(x, t)`` (t a float or a 0-d tensor shared by the batch) and works on
any rank (B, ...). Each step is a fixed sequence of in-place tensor operations whose per-step constants are
precomputed, so on a GPU the step can be captured once as a CUDA graph and replayed (``cuda_graph=True``), which
removes the kernel-launch overhead that bounds the prototype. The registry :data:`SAMPLERS` maps names to classes.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .sde import SDE, per_sample

__all__ = [
    "SampleResult",
    "Sampler",
    "EulerMaruyama",
    "ProbabilityFlowODE",
    "PredictorCorrector",
    "SAMPLERS",
    "get_sampler",
    "make_sampler",
]

ScoreFn = Callable[[torch.Tensor, "float | torch.Tensor"], torch.Tensor]


@dataclass
class SampleResult:
    """Output of a sampler.

    Attributes
    ----------
    x : tensor, shape (B, ...)
        Samples at t = eps (denoised when the sampler's ``denoise`` is true).
    trajectory : tensor, shape (n_keep, B, ...), or None
        States along the reverse path (first: the initial state at T; last: ``x``), on the CPU.
    times : ndarray, shape (n_keep,), or None
        Times of the trajectory states (the last one is eps).
    nfe : int
        Number of score evaluations.
    """

    x: torch.Tensor
    trajectory: torch.Tensor | None = None
    times: np.ndarray | None = None
    nfe: int = 0


class Sampler(abc.ABC):
    """A reverse-time sampler on the grid t_i = linspace(T, eps, n_steps + 1).

    Parameters
    ----------
    sde : SDE
        Forward process.
    score_fn : callable
        ``score(x, t)``, the (approximate) score of p_t.
    n_steps : int, optional
        Number of steps (default ``sde.N``).
    eps : float, optional
        End time (default ``sde.sampling_eps``: 1e-5 for VE, 1e-3 for VP and sub-VP).
    denoise : bool
        Return the noise-free mean of the last step.
    """

    #: Number of standard-normal draws per step (shape of x each).
    n_noise: int = 0
    #: Score evaluations per step.
    nfe_per_step: int = 1

    def __init__(
        self, sde: SDE, score_fn: ScoreFn, *, n_steps: int | None = None, eps: float | None = None, denoise: bool = True
    ):
        self.sde, self.score_fn = sde, score_fn
        self.n_steps = int(sde.N if n_steps is None else n_steps)
        self.eps = float(sde.sampling_eps if eps is None else eps)
        if self.n_steps < 1:
            raise ValueError(f"n_steps must be >= 1, got {self.n_steps}")
        if not 0 < self.eps < sde.T:
            raise ValueError(f"eps must lie in (0, T={sde.T}), got {self.eps}")
        self.denoise = bool(denoise)

    def time_grid(self) -> np.ndarray:
        """t_0 = T > t_1 > ... > t_n = eps, shape (n_steps + 1,)."""
        return np.linspace(self.sde.T, self.eps, self.n_steps + 1)

    @abc.abstractmethod
    def coefficients(self, ts: np.ndarray) -> np.ndarray:
        """Per-step constants, shape (n_steps, k)."""

    @abc.abstractmethod
    def step(self, x: torch.Tensor, t, c, z: torch.Tensor | None) -> None:
        """Advance ``x`` in place by one step from time ``t`` with constants ``c`` (row of :meth:`coefficients`)
        and noise ``z`` of shape (n_noise, *x.shape)."""

    def finish(self, x: torch.Tensor) -> int:
        """Final in-place correction after the last step; returns its number of score evaluations."""
        return 0

    def __call__(
        self,
        x_T: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        trajectory_every: int = 0,
        cuda_graph: bool | None = None,
    ) -> SampleResult:
        """Integrate from ``x_T`` (at t = T) to t = eps.

        Parameters
        ----------
        x_T : tensor, shape (B, ...)
            Initial state, e.g. ``sde.prior_sampling(shape)``; not modified.
        generator : torch.Generator, optional
            Source of the sampler's noise (on ``x_T``'s device).
        trajectory_every : int
            Keep the state every this many steps (0: no trajectory).
        cuda_graph : bool, optional
            Capture one step as a CUDA graph and replay it (default: on when ``x_T`` is on a CUDA device).

        Returns
        -------
        SampleResult
        """
        ts = self.time_grid()
        coef = torch.as_tensor(self.coefficients(ts), dtype=x_T.dtype, device=x_T.device)
        if cuda_graph is None:
            cuda_graph = x_T.device.type == "cuda"
        keep = int(trajectory_every)
        traj, times = ([x_T.detach().cpu().clone()], [ts[0]]) if keep else (None, None)
        with torch.inference_mode():
            x = x_T.detach().clone()
            if cuda_graph:
                self._run_graph(x, ts, coef, generator, keep, traj, times)
            else:
                z = torch.empty((self.n_noise,) + x.shape, dtype=x.dtype, device=x.device) if self.n_noise else None
                for i in range(self.n_steps):
                    if z is not None:
                        z.normal_(generator=generator)
                    self.step(x, float(ts[i]), coef[i], z)
                    if keep and ((i + 1) % keep == 0 or i + 1 == self.n_steps):
                        traj.append(x.cpu().clone())
                        times.append(ts[i + 1])
            nfe = self.n_steps * self.nfe_per_step + self.finish(x)
        if keep:
            traj[-1] = x.cpu().clone()
            return SampleResult(x, torch.stack(traj), np.asarray(times), nfe)
        return SampleResult(x, None, None, nfe)

    def _run_graph(self, x, ts, coef, generator, keep, traj, times, block: int = 64) -> None:
        """Replay one captured step per time level; noise is drawn outside the graph, ``block`` steps at a time."""
        t_dev = torch.as_tensor(ts[:-1], dtype=x.dtype, device=x.device)
        t_s, c_s = t_dev[0].clone(), coef[0].clone()
        z_s = torch.zeros((self.n_noise,) + x.shape, dtype=x.dtype, device=x.device) if self.n_noise else None
        probe = x.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up outside capture (allocations, lazy init)
            for _ in range(3):
                self.step(probe, t_s, c_s, z_s)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.step(x, t_s, c_s, z_s)
        zbuf = None
        for i in range(self.n_steps):
            if z_s is not None:
                j = i % block
                if j == 0:
                    n = min(block, self.n_steps - i)
                    zbuf = torch.randn((n,) + z_s.shape, generator=generator, dtype=x.dtype, device=x.device)
                z_s.copy_(zbuf[j])
            t_s.copy_(t_dev[i])
            c_s.copy_(coef[i])
            graph.replay()
            if keep and ((i + 1) % keep == 0 or i + 1 == self.n_steps):
                traj.append(x.cpu().clone())
                times.append(ts[i + 1])


class EulerMaruyama(Sampler):
    """Euler-Maruyama on the reverse SDE: x <- (1 + a dt) x - g^2 dt s + g sqrt(-dt) z, dt < 0.

    Constants per step: (1 + a dt, -g^2 dt, g sqrt(-dt)); the noise of the last step is dropped when ``denoise``.
    """

    n_noise = 1

    def coefficients(self, ts: np.ndarray) -> np.ndarray:
        """Per-step (A, B, C) with x <- A x + B s + C z."""
        t, dt = ts[:-1], np.diff(ts)
        a, g = self.sde.drift_coeff(t), self.sde.diffusion(t)
        c = np.stack([1 + a * dt, -(g**2) * dt, g * np.sqrt(-dt)], axis=1)
        if self.denoise:
            c[-1, 2] = 0.0
        return c

    def step(self, x, t, c, z) -> None:
        """One Euler-Maruyama step in place."""
        s = self.score_fn(x, t)
        x.mul_(c[0]).addcmul_(s, c[1]).addcmul_(z[0], c[2])


class ProbabilityFlowODE(Sampler):
    """Probability-flow ODE dx = [a x - g^2 s / 2] dt, from T to eps.

    Parameters
    ----------
    solver : {"euler", "heun", "rk4", "rk45"}
        Fixed-step Euler (1 NFE/step), Heun (2), classical Runge-Kutta (4), or adaptive Dormand-Prince RK45
        through :func:`scipy.integrate.solve_ivp` (``rtol``, ``atol``; one step size for the whole batch).
    rtol, atol : float
        Tolerances of the adaptive solver.
    **kwargs
        As :class:`Sampler`.
    """

    SOLVERS = {"euler": 1, "heun": 2, "rk4": 4, "rk45": 0}

    def __init__(
        self, sde: SDE, score_fn: ScoreFn, *, solver: str = "rk45", rtol: float = 1e-5, atol: float = 1e-5, **kwargs
    ):
        super().__init__(sde, score_fn, **kwargs)
        if solver not in self.SOLVERS:
            raise ValueError(f"unknown ODE solver {solver!r}; expected one of {sorted(self.SOLVERS)}")
        self.solver, self.rtol, self.atol = solver, float(rtol), float(atol)
        self.nfe_per_step = self.SOLVERS[solver]

    def drift(self, x: torch.Tensor, t) -> torch.Tensor:
        """ODE drift a(t) x - g(t)^2 score(x, t) / 2."""
        a, g = self.sde.drift_coeff(t), self.sde.diffusion(t)
        s = self.score_fn(x, t)
        if isinstance(t, torch.Tensor):
            return a * x - 0.5 * g**2 * s
        return s.mul_(-0.5 * g**2).add_(x, alpha=a)

    def coefficients(self, ts: np.ndarray) -> np.ndarray:
        """Per-step (dt, t_next)."""
        return np.stack([np.diff(ts), ts[1:]], axis=1)

    def step(self, x, t, c, z) -> None:
        """One fixed step of the chosen Runge-Kutta scheme, in place."""
        dt, t1 = c[0], c[1]
        if not isinstance(t, torch.Tensor):
            dt, t1 = float(dt), float(t1)
        k1 = self.drift(x, t)
        if self.solver == "euler":
            x.add_(k1 * dt)
        elif self.solver == "heun":
            k2 = self.drift(x + k1 * dt, t1)
            x.add_((k1 + k2) * (0.5 * dt))
        else:
            tm = t + 0.5 * dt
            k2 = self.drift(x + k1 * (0.5 * dt), tm)
            k3 = self.drift(x + k2 * (0.5 * dt), tm)
            k4 = self.drift(x + k3 * dt, t1)
            x.add_((k1 + 2 * k2 + 2 * k3 + k4) * (dt / 6))

    def finish(self, x: torch.Tensor) -> int:
        """Tweedie denoising at eps: x <- (x + s(eps)^2 score) / m(eps) (1 NFE), when ``denoise``."""
        if not self.denoise:
            return 0
        m, s = self.sde.mean_coeff(self.eps), self.sde.marginal_std(self.eps)
        x.add_(self.score_fn(x, self.eps), alpha=s**2).div_(m)
        return 1

    def __call__(
        self, x_T: torch.Tensor, *, generator=None, trajectory_every: int = 0, cuda_graph: bool | None = None
    ) -> SampleResult:
        """Integrate the ODE (see :meth:`Sampler.__call__`; ``generator`` is unused, the ODE is deterministic)."""
        if self.solver != "rk45":
            return super().__call__(x_T, generator=generator, trajectory_every=trajectory_every, cuda_graph=cuda_graph)
        from scipy.integrate import solve_ivp

        shape, dtype, device = x_T.shape, x_T.dtype, x_T.device
        t_eval = None
        if trajectory_every:
            t_eval = self.time_grid()[:: int(trajectory_every)]
            if t_eval[-1] != self.eps:
                t_eval = np.append(t_eval, self.eps)

        def fun(t, y):
            with torch.inference_mode():
                x = torch.as_tensor(y, dtype=dtype, device=device).reshape(shape)
                return self.drift(x, float(t)).reshape(-1).double().cpu().numpy()

        y0 = x_T.detach().reshape(-1).double().cpu().numpy()
        sol = solve_ivp(fun, (self.sde.T, self.eps), y0, method="RK45", rtol=self.rtol, atol=self.atol, t_eval=t_eval)
        if not sol.success:
            raise RuntimeError(f"probability-flow ODE solver failed: {sol.message}")
        with torch.inference_mode():
            x = torch.as_tensor(sol.y[:, -1], dtype=dtype, device=device).reshape(shape).clone()
            nfe = int(sol.nfev) + self.finish(x)
        if trajectory_every:
            traj = torch.as_tensor(sol.y.T, dtype=dtype).reshape((len(sol.t),) + tuple(shape))
            traj[-1] = x.cpu()
            return SampleResult(x, traj, np.asarray(sol.t), nfe)
        return SampleResult(x, None, None, nfe)


class PredictorCorrector(Sampler):
    """Predictor-corrector sampling: Langevin corrector(s) at t_i, then a predictor step to t_{i+1}.

    Parameters
    ----------
    predictor : {"euler_maruyama", "reverse_diffusion"}
        Euler-Maruyama on the reverse SDE, or the reverse of the exact discrete forward step
        (x <- (2 - rho) x + G^2 s + G z with rho, G the exact transition from t_{i+1} to t_i).
    snr : float
        Signal-to-noise ratio of the Langevin step size (0.16 in Song et al. for VE on CIFAR-10).
    n_corrector_steps : int
        Langevin steps per level (0 gives the bare predictor).
    step_norm : {"batch", "sample", "sigma"}
        How ||z|| / ||score|| in the step size is measured. ``"batch"``: norms averaged over the batch (score_sde's
        rule; the step then hardly depends on the state). ``"sample"``: per-sample norms, so a sample's step does
        not depend on its batch; but the step then depends on the sample's own state, which biases Langevin
        dynamics: on Gaussian toys with 8-30 dimensions it inflates variances by 20-60 % (see the tests), so it is
        kept only for comparison. ``"sigma"``: the noise-dominated value ||z|| / ||score|| = s(t) (NCSN's annealed
        step eps ~ s(t)^2), independent of the state and of the batch.
    **kwargs
        As :class:`Sampler`.
    """

    PREDICTORS = ("euler_maruyama", "reverse_diffusion")

    STEP_NORMS = ("batch", "sample", "sigma")

    def __init__(
        self,
        sde: SDE,
        score_fn: ScoreFn,
        *,
        predictor: str = "euler_maruyama",
        snr: float = 0.16,
        n_corrector_steps: int = 1,
        step_norm: str = "batch",
        **kwargs,
    ):
        super().__init__(sde, score_fn, **kwargs)
        if predictor not in self.PREDICTORS:
            raise ValueError(f"unknown predictor {predictor!r}; expected one of {list(self.PREDICTORS)}")
        if step_norm not in self.STEP_NORMS:
            raise ValueError(f"unknown step_norm {step_norm!r}; expected one of {list(self.STEP_NORMS)}")
        self.step_norm = step_norm
        if snr <= 0 or int(n_corrector_steps) < 0:
            raise ValueError(f"need snr > 0 and n_corrector_steps >= 0, got {snr}, {n_corrector_steps}")
        self.predictor, self.snr, self.n_corrector_steps = predictor, float(snr), int(n_corrector_steps)
        self.n_noise = self.n_corrector_steps + 1
        self.nfe_per_step = self.n_corrector_steps + 1

    def coefficients(self, ts: np.ndarray) -> np.ndarray:
        """Per-step (2 alpha snr^2, A, B, C): Langevin prefactor and predictor x <- A x + B s + C z."""
        t, dt = ts[:-1], np.diff(ts)
        rho = self.sde.mean_coeff(t) / self.sde.mean_coeff(ts[1:])  # forward mean ratio t_{i+1} -> t_i
        lang = 2 * rho**2 * self.snr**2
        if self.step_norm == "sigma":
            lang = lang * self.sde.marginal_std(t) ** 2
        if self.predictor == "euler_maruyama":
            a, g = self.sde.drift_coeff(t), self.sde.diffusion(t)
            abc = np.stack([1 + a * dt, -(g**2) * dt, g * np.sqrt(-dt)], axis=1)
        else:
            trans = [self.sde.transition(t1, t0) for t0, t1 in zip(t, ts[1:])]
            abc = np.array([[2.0 - r, g**2, g] for r, g in trans])
        c = np.concatenate([lang[:, None], abc], axis=1)
        if self.denoise:
            c[-1, 3] = 0.0
        return c

    def step(self, x, t, c, z) -> None:
        """Langevin corrector steps, then the predictor, in place."""
        for j in range(self.n_corrector_steps):
            s = self.score_fn(x, t)
            zj = z[j]
            if self.step_norm == "sigma":
                eps_l = c[0]
            else:
                zn, sn = zj.flatten(1).norm(dim=1), s.flatten(1).norm(dim=1)
                if self.step_norm == "batch":
                    zn, sn = zn.mean(), sn.mean()
                eps_l = per_sample((zn / sn.clamp_min(1e-30)).square_().mul_(c[0]), x)  # 2 alpha (snr |z|/|s|)^2
            x.addcmul_(s, eps_l).addcmul_(zj, eps_l.mul(2.0).sqrt_())
        s = self.score_fn(x, t)
        x.mul_(c[1]).addcmul_(s, c[2]).addcmul_(z[-1], c[3])


#: Registry of samplers by name (the prototype's ``sde`` method is ``em``).
SAMPLERS: dict[str, type[Sampler]] = {"em": EulerMaruyama, "ode": ProbabilityFlowODE, "pc": PredictorCorrector}


def get_sampler(name: str) -> type[Sampler]:
    """The sampler class registered as ``name``."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; expected one of {sorted(SAMPLERS)}")
    return SAMPLERS[name]


def make_sampler(name: str, sde: SDE, score_fn: ScoreFn, **kwargs) -> Sampler:
    """Build the sampler ``name`` with its keyword arguments; unknown arguments raise naming the valid ones."""
    cls = get_sampler(name)
    try:
        return cls(sde, score_fn, **kwargs)
    except TypeError as err:
        import inspect

        valid = sorted(
            {p for k in cls.__mro__ if k is not object for p in inspect.signature(k.__init__).parameters}
            - {"self", "sde", "score_fn", "kwargs"}
        )
        raise TypeError(f"bad options {sorted(kwargs)} for sampler {name!r} ({err}); valid options: {valid}") from None
