"""Forward SDEs of score-based diffusion (Song et al., ICLR 2021): VE, VP and sub-VP.

Every SDE here is linear in x, dx = a(t) x dt + g(t) dw on t in [0, T = 1], so its transition kernel is Gaussian,
x_t | x_0 ~ N(m(t) x_0, s(t)^2 I), with the mean coefficient m(t) and the standard deviation s(t) known in closed
form. The methods carry the paper's names (:meth:`SDE.sde`, :meth:`SDE.marginal_prob`, :meth:`SDE.prior_sampling`,
:meth:`SDE.prior_logp`, :meth:`SDE.discretize`, :meth:`SDE.reverse`); the scalar coefficient functions
(:meth:`SDE.drift_coeff`, :meth:`SDE.diffusion`, :meth:`SDE.mean_coeff`, :meth:`SDE.marginal_std`) take a Python
float, a NumPy array or a torch tensor of times and return the same kind, so samplers can precompute their
per-step constants once.

Code is rank-agnostic: x has shape (B, ...) (spectra (B, n_ell), maps (B, C, H, W)), t has shape () or (B,),
and per-sample factors are broadcast with :func:`per_sample`.

The VE standard deviation is the exact one, s(t) = sigma_min sqrt((sigma_max/sigma_min)^(2t) - 1), which is zero
at t = 0 (score_sde's code uses sigma_min (sigma_max/sigma_min)^t instead); training and sampling both use it.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable

import numpy as np
import torch

__all__ = ["SDE", "VESDE", "VPSDE", "SubVPSDE", "ReverseSDE", "SDES", "get_sde", "per_sample"]

ScoreFn = Callable[[torch.Tensor, "float | torch.Tensor"], torch.Tensor]


def per_sample(v: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor | float:
    """Broadcast per-sample values against ``like``.

    Parameters
    ----------
    v : float, 0-d tensor or tensor of shape (B,)
    like : tensor, shape (B, ...)

    Returns
    -------
    float, or tensor of shape (B, 1, ..., 1) with ``like.ndim`` axes (a 0-d tensor is returned unchanged).
    """
    if not isinstance(v, torch.Tensor) or v.ndim == 0:
        return v
    return v.reshape((-1,) + (1,) * (like.ndim - 1))


def _xp(t):
    """The array module for ``t``: torch for tensors, NumPy otherwise."""
    return torch if isinstance(t, torch.Tensor) else np


def _out(v, t):
    """Return a Python float when the time was a Python number."""
    return float(v) if isinstance(t, (int, float)) else v


class SDE(abc.ABC):
    """A linear forward SDE dx = a(t) x dt + g(t) dw on [0, T].

    Parameters
    ----------
    N : int
        Number of discretisation steps used by :meth:`discretize` and as the default sampler step count.
    """

    #: End time of the forward process.
    T: float = 1.0
    #: Smallest time used when sampling (reverse integration stops there).
    sampling_eps: float = 1e-3
    #: Registry name.
    name: str = ""

    def __init__(self, N: int = 1000):
        if int(N) < 1:
            raise ValueError(f"N (number of discretisation steps) must be >= 1, got {N}")
        self.N = int(N)

    # ---- scalar coefficients (float, ndarray or tensor in, same kind out) ----
    @abc.abstractmethod
    def drift_coeff(self, t):
        """a(t): the drift is f(x, t) = a(t) x."""

    @abc.abstractmethod
    def diffusion(self, t):
        """g(t), the diffusion coefficient."""

    @abc.abstractmethod
    def mean_coeff(self, t):
        """m(t): E[x_t | x_0] = m(t) x_0."""

    @abc.abstractmethod
    def marginal_std(self, t):
        """s(t): the standard deviation of x_t | x_0."""

    @property
    def prior_std(self) -> float:
        """Standard deviation of the prior N(0, prior_std^2 I) that stands for p_T."""
        return 1.0

    def config(self) -> dict:
        """Constructor arguments and ``name``: ``get_sde(**cfg)`` rebuilds the SDE."""
        return {"name": self.name, "N": self.N}

    # ---- the paper's API ----
    def sde(self, x: torch.Tensor, t: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | float]:
        """Drift f(x, t) and diffusion g(t) (the latter per sample, broadcastable against ``x``)."""
        return per_sample(self.drift_coeff(t), x) * x, per_sample(self.diffusion(t), x)

    def marginal_prob(self, x: torch.Tensor, t: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | float]:
        """Mean m(t) x_0 and standard deviation s(t) of p_0t(x_t | x_0 = x)."""
        return per_sample(self.mean_coeff(t), x) * x, per_sample(self.marginal_std(t), x)

    def prior_sampling(
        self, shape: tuple[int, ...], generator: torch.Generator | None = None, device=None, dtype=torch.float32
    ) -> torch.Tensor:
        """Draw from the prior N(0, prior_std^2 I), tensor of ``shape``."""
        return torch.randn(shape, generator=generator, device=device, dtype=dtype) * self.prior_std

    def prior_logp(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; 0, prior_std^2 I) per sample, shape (B,)."""
        d = z[0].numel()
        s2 = self.prior_std**2
        return -0.5 * d * math.log(2 * math.pi * s2) - z.flatten(1).pow(2).sum(1) / (2 * s2)

    def transition(self, t_from, t_to) -> tuple[float, float]:
        """Exact Gaussian transition x_{t_to} | x_{t_from} (t_to > t_from): mean ratio rho and std.

        rho = m(t_to) / m(t_from), std^2 = s(t_to)^2 - rho^2 s(t_from)^2 (exact for any linear SDE).
        """
        rho = float(self.mean_coeff(t_to) / self.mean_coeff(t_from))
        var = float(self.marginal_std(t_to)) ** 2 - rho**2 * float(self.marginal_std(t_from)) ** 2
        return rho, math.sqrt(max(var, 0.0))

    def discretize(self, x: torch.Tensor, t: float, dt: float | None = None) -> tuple[torch.Tensor, float]:
        """Discrete forward step from t - dt to t: x_t = x + f + G z with f = (rho - 1) x (exact kernel).

        Parameters
        ----------
        x : tensor, shape (B, ...)
        t : float
            End time of the step.
        dt : float, optional
            Step length; defaults to T / N.

        Returns
        -------
        f : tensor like ``x``
        G : float
        """
        dt = self.T / self.N if dt is None else dt
        rho, g = self.transition(max(t - dt, 0.0), t)
        return (rho - 1.0) * x, g

    def reverse(self, score_fn: ScoreFn, probability_flow: bool = False) -> ReverseSDE:
        """The reverse-time SDE (or its probability-flow ODE) driven by ``score_fn(x, t)``."""
        return ReverseSDE(self, score_fn, probability_flow)


class ReverseSDE:
    """Reverse-time process dx = [f - c g^2 score] dt + (1 - c) g dw_bar, integrated with dt < 0.

    c = 1 for the reverse SDE, c = 1/2 (and no noise) for the probability-flow ODE.
    """

    def __init__(self, forward: SDE, score_fn: ScoreFn, probability_flow: bool = False):
        self.forward, self.score_fn, self.probability_flow = forward, score_fn, probability_flow
        self.T, self.N = forward.T, forward.N

    def sde(self, x: torch.Tensor, t: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | float]:
        """Reverse drift and diffusion at (x, t)."""
        drift, g = self.forward.sde(x, t)
        c = 0.5 if self.probability_flow else 1.0
        drift = drift - c * g**2 * self.score_fn(x, t)
        return drift, 0.0 * g if self.probability_flow else g

    def discretize(self, x: torch.Tensor, t: float, dt: float | None = None) -> tuple[torch.Tensor, float]:
        """Reverse-diffusion step from t to t - dt: returns (rev_f, G) with x_{t-dt} = x - rev_f + G z."""
        f, g = self.forward.discretize(x, t, dt)
        c = 0.5 if self.probability_flow else 1.0
        rev_f = f - c * g**2 * self.score_fn(x, t)
        return rev_f, 0.0 if self.probability_flow else g


class VESDE(SDE):
    """Variance exploding: dx = g(t) dw, g = sigma_min r^t sqrt(2 ln r), r = sigma_max / sigma_min.

    Parameters
    ----------
    sigma_min, sigma_max : float
        Noise scales; s(t) = sigma_min sqrt(r^(2t) - 1) runs from 0 to about sigma_max. Choose sigma_max near the
        largest distance between two training points (Song & Ermon 2020).
    N : int
        Discretisation steps.
    """

    sampling_eps = 1e-5
    name = "ve"

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 20.0, N: int = 1000):
        super().__init__(N)
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)

    def config(self) -> dict:
        """Constructor arguments and ``name``."""
        return {"name": self.name, "sigma_min": self.sigma_min, "sigma_max": self.sigma_max, "N": self.N}

    def drift_coeff(self, t):
        """a(t) = 0."""
        return 0.0 * t

    def diffusion(self, t):
        """g(t) = sigma_min r^t sqrt(2 ln r)."""
        xp = _xp(t)
        return _out(self.sigma_min * xp.exp(t * self._log_ratio) * math.sqrt(2 * self._log_ratio), t)

    def mean_coeff(self, t):
        """m(t) = 1."""
        return 0.0 * t + 1.0

    def marginal_std(self, t):
        """s(t) = sigma_min sqrt(r^(2t) - 1), computed with expm1 so small t keeps its precision."""
        xp = _xp(t)
        return _out(self.sigma_min * xp.sqrt(xp.expm1(2 * t * self._log_ratio)), t)

    @property
    def prior_std(self) -> float:
        """s(T) = sigma_min sqrt(r^2 - 1), about sigma_max."""
        return float(self.marginal_std(self.T))


class VPSDE(SDE):
    """Variance preserving: dx = -beta(t) x / 2 dt + sqrt(beta(t)) dw, beta linear from beta_min to beta_max.

    Parameters
    ----------
    beta_min, beta_max : float
        Ends of the linear schedule beta(t) = beta_min + t (beta_max - beta_min).
    N : int
        Discretisation steps.
    """

    sampling_eps = 1e-3
    name = "vp"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, N: int = 1000):
        super().__init__(N)
        if not 0 <= beta_min < beta_max:
            raise ValueError(f"need 0 <= beta_min < beta_max, got beta_min={beta_min}, beta_max={beta_max}")
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)

    def config(self) -> dict:
        """Constructor arguments and ``name``."""
        return {"name": self.name, "beta_min": self.beta_min, "beta_max": self.beta_max, "N": self.N}

    def beta(self, t):
        """beta(t) = beta_min + t (beta_max - beta_min)."""
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def _log_mean(self, t):
        """log m(t) = -t^2 (beta_max - beta_min) / 4 - t beta_min / 2."""
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def drift_coeff(self, t):
        """a(t) = -beta(t) / 2."""
        return -0.5 * self.beta(t)

    def diffusion(self, t):
        """g(t) = sqrt(beta(t))."""
        return _out(_xp(t).sqrt(self.beta(t)), t)

    def mean_coeff(self, t):
        """m(t) = exp(-int_0^t beta / 2)."""
        return _out(_xp(t).exp(self._log_mean(t)), t)

    def marginal_std(self, t):
        """s(t) = sqrt(1 - m(t)^2)."""
        xp = _xp(t)
        return _out(xp.sqrt(-xp.expm1(2 * self._log_mean(t))), t)


class SubVPSDE(VPSDE):
    """Sub-VP: the VP drift with g(t)^2 = beta(t) (1 - exp(-2 int_0^t beta)); s(t) = 1 - m(t)^2 (no square root)."""

    name = "subvp"

    def diffusion(self, t):
        """g(t) = sqrt(beta(t) (1 - m(t)^4))."""
        xp = _xp(t)
        return _out(xp.sqrt(self.beta(t) * -xp.expm1(4 * self._log_mean(t))), t)

    def marginal_std(self, t):
        """s(t) = 1 - m(t)^2."""
        return _out(-_xp(t).expm1(2 * self._log_mean(t)), t)


#: Registry of SDE classes by name.
SDES: dict[str, type[SDE]] = {"ve": VESDE, "vp": VPSDE, "subvp": SubVPSDE}


def get_sde(name: str, **kwargs) -> SDE:
    """Build an SDE by registry name (``"ve"``, ``"vp"``, ``"subvp"``) with its constructor arguments.

    Unknown names or arguments raise with the valid choices.
    """
    key = str(name).lower().replace("-", "").replace("_", "")
    if key not in SDES:
        raise ValueError(f"unknown SDE {name!r}; expected one of {sorted(SDES)}")
    cls = SDES[key]
    try:
        return cls(**kwargs)
    except TypeError as err:
        import inspect

        valid = [p for p in inspect.signature(cls).parameters]
        raise TypeError(f"bad arguments {sorted(kwargs)} for SDE {key!r}: {err}; valid arguments: {valid}") from None
