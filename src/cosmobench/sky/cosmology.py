"""Cosmological parameters, the Planck 2018 prior, and CMB power spectra from CAMB or a fast emulator.

One :class:`Cosmology` per simulation, drawn with :func:`draw_cosmology` from independent Gaussians around the
Planck 2018 means (TT,TE,EE+lowE+lensing, Table 2 of Planck 2018 VI). The amplitude ``A_s`` and the pivot
scales are always passed to CAMB together, so ``ln10As`` and ``ns`` mean what they mean in the chain.

Spectra are C_ell (not D_ell) in uK_CMB^2, shape (4, lmax+1) for TT, EE, BB, TE with ell = 0..lmax and
ell = 0, 1 set to zero. Lensed spectra are always computed by CAMB to ``max(lmax, LENSING_LMAX = 2000)`` with
``lens_potential_accuracy >= 1`` and then cut to ``lmax``: the lensing B modes at low ell come from E modes and
lenses up to ell of thousands, and a lensing calculation stopped near the map's lmax (CAMB's ``set_for_lmax(47)``
for nside 16) gives a lensed BB 19-30 % too low at ell <= 31.

:func:`camb_spectra` calls CAMB directly (1.5 s for any lmax up to 2000 on one core, lensing included);
:func:`cmb_spectra` defaults to :class:`SpectrumEmulator`, an interpolation of CAMB runs around the fiducial
cosmology built once per lmax and cached on disk, which reproduces CAMB's lensed TT and EE to better than
0.1 % across the prior in a few milliseconds (``docs/sky_cmb.md`` has the design and the measured errors).

The lensed spectra here are the *final* sky spectra: they must never be fed to a code that lenses again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.io import CorruptFileError, atomic_path

__all__ = [
    "Cosmology",
    "PLANCK2018_PRIOR",
    "VARIED_PARAMS",
    "draw_cosmology",
    "camb_spectra",
    "cmb_spectra",
    "SpectrumEmulator",
    "default_cache_dir",
    "theta_and_zre",
    "LENSING_LMAX",
]


@dataclass(frozen=True, kw_only=True)
class Cosmology:
    """Flat LambdaCDM + massive neutrinos + tensors, as passed to CAMB.

    Unknown keyword arguments raise ``TypeError`` naming them. Defaults are the Planck 2018 means.

    Parameters
    ----------
    H0 : float
        Hubble constant, km/s/Mpc.
    ombh2, omch2 : float
        Physical baryon and cold dark matter densities.
    tau : float
        Optical depth to reionisation.
    ln10As : float
        ln(10^10 A_s), A_s the scalar amplitude at ``pivot_scalar``.
    ns : float
        Scalar spectral index at ``pivot_scalar``.
    r : float
        Tensor-to-scalar ratio at ``pivot_tensor``.
    nt : float
        Tensor spectral index (set explicitly: CAMB's consistency relation n_t = -r/8 is *not* used).
    mnu : float
        Sum of neutrino masses, eV (one massive eigenstate, CAMB's default).
    pivot_scalar, pivot_tensor : float
        Pivot scales, Mpc^-1.
    """

    H0: float = 67.36
    ombh2: float = 0.02237
    omch2: float = 0.1200
    tau: float = 0.0544
    ln10As: float = 3.044
    ns: float = 0.9649
    r: float = 0.0
    nt: float = 0.0
    mnu: float = 0.06
    pivot_scalar: float = 0.05
    pivot_tensor: float = 0.05

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, (int, float, np.integer, np.floating)) or not np.isfinite(value):
                raise TypeError(f"Cosmology.{f.name} must be a finite number, got {value!r}")
            object.__setattr__(self, f.name, float(value))
        if self.tau <= 0 or self.H0 <= 0 or self.ombh2 <= 0 or self.omch2 <= 0:
            raise ValueError(f"H0, ombh2, omch2 and tau must be positive, got {self}")
        if self.r < 0 or self.mnu < 0:
            raise ValueError(f"r and mnu must be non-negative, got r={self.r}, mnu={self.mnu}")
        if self.pivot_scalar <= 0 or self.pivot_tensor <= 0:
            raise ValueError("pivot scales must be positive (Mpc^-1)")

    @property
    def As(self) -> float:
        """Scalar amplitude A_s at ``pivot_scalar``: exp(ln10As) / 1e10."""
        return float(np.exp(self.ln10As) / 1e10)

    def to_dict(self) -> dict[str, float]:
        """All fields as a plain dict (JSON-ready); ``Cosmology(**c.to_dict()) == c``."""
        return dataclasses.asdict(self)


#: Planck 2018 TT,TE,EE+lowE+lensing means and standard deviations of the six varied parameters.
PLANCK2018_PRIOR: dict[str, tuple[float, float]] = {
    "H0": (67.36, 0.54),
    "ombh2": (0.02237, 0.00015),
    "omch2": (0.1200, 0.0012),
    "tau": (0.0544, 0.0073),
    "ln10As": (3.044, 0.014),
    "ns": (0.9649, 0.0042),
}

#: The parameters drawn per simulation (and the axes of the emulator), in a fixed order.
VARIED_PARAMS: tuple[str, ...] = tuple(PLANCK2018_PRIOR)

#: Lower bound on tau for draws: a draw below it is redrawn (truncated Gaussian).
TAU_MIN = 0.01


def draw_cosmology(
    rng: np.random.Generator,
    *,
    prior: dict[str, tuple[float, float]] = PLANCK2018_PRIOR,
    fixed: dict[str, float] | None = None,
    r: float = 0.0,
    nt: float = 0.0,
) -> Cosmology:
    """Draw one cosmology from independent Gaussians.

    Parameters are drawn in the order of ``prior`` (one normal deviate each, whether fixed or not, so fixing one
    parameter does not change the draws of the others). ``tau`` is redrawn until it exceeds ``TAU_MIN`` = 0.01
    (a truncated Gaussian; at the Planck prior this happens with probability 1e-9).

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness (e.g. ``cosmobench.core.seeds.rng(seed, "cosmology", i)``).
    prior : dict
        Name -> (mean, std); names must be :class:`Cosmology` fields. Defaults to :data:`PLANCK2018_PRIOR`.
    fixed : dict, optional
        Name -> value for parameters held fixed (any :class:`Cosmology` field, e.g. ``{"H0": 70.0}``).
    r, nt : float
        Tensor-to-scalar ratio and tensor index (not drawn).

    Returns
    -------
    Cosmology
    """
    valid = sorted(f.name for f in dataclasses.fields(Cosmology))
    fixed = dict(fixed or {})
    for name in list(prior) + list(fixed):
        if name not in valid:
            raise ValueError(f"unknown cosmological parameter {name!r}; valid names are {valid}")
    for name, (_mean, std) in prior.items():
        if not std >= 0:
            raise ValueError(f"prior std of {name!r} must be >= 0, got {std}")
    values: dict[str, float] = {"r": r, "nt": nt}
    for name, (mean, std) in prior.items():
        values[name] = mean + std * rng.standard_normal()
        while name == "tau" and values[name] <= TAU_MIN and name not in fixed:
            values[name] = mean + std * rng.standard_normal()
    values.update(fixed)
    return Cosmology(**values)


_CAMB_KINDS = ("total", "lensed_scalar", "unlensed_scalar", "tensor", "lens_potential")

#: Smallest multipole to which CAMB computes the spectra that enter the lensing calculation, whatever the
#: requested lmax: against a run to ell 4000 with lens_potential_accuracy 2, lensed BB at ell <= 31 is 0.28 % low
#: with 2000 (and accuracy 1) and 19-30 % low with the lmax of an nside-16 map (``tests/sky/test_cosmology.py``).
LENSING_LMAX = 2000

#: Smallest multipole to which CAMB computes tensor spectra, whatever the requested lmax: with ``max_l_tensor``
#: below 39 CAMB 2.0.5's l-sampling (``lSamples_init``) writes past its arrays (valgrind), which aborted the
#: emulator's build at lmax 23 and 30 (heap corruption) and went unnoticed at nside 16's lmax 31. From 40 to 300
#: the tensor spectra at ell <= 31 agree within 3e-7 (TT, EE, BB); stopping at lmax 31 itself changed them by up
#: to 6e-5 (TT), 3e-4 (EE), 1.2e-4 (BB).
TENSOR_LMAX = 100


def _check_lens_accuracy(lens_potential_accuracy: int) -> int:
    """``lens_potential_accuracy`` as an int, refusing values below 1 (accuracy 0 leaves lensed BB 8 % low)."""
    if int(lens_potential_accuracy) < 1:
        raise ValueError(
            f"lens_potential_accuracy must be >= 1 for lensed spectra (0 leaves the lensed BB 8 % low), "
            f"got {lens_potential_accuracy}"
        )
    return int(lens_potential_accuracy)


def _camb_params(
    cosmo: Cosmology,
    lmax: int,
    *,
    tensors: bool,
    scalars: bool = True,
    lens_potential_accuracy: int = 1,
    theta: float | None = None,
    zre: float | None = None,
):
    """CAMBparams for ``cosmo``; ``theta`` (CosmoMC's theta_MC) replaces H0 and ``zre`` (the reionisation
    mid-point redshift) replaces tau when given (CAMB then solves for H0 and tau). Scalars are computed to
    ``max(lmax, LENSING_LMAX)`` (lensing needs them; it costs about 10 % more than stopping at a small lmax)."""
    import camb

    p = camb.CAMBparams()
    h0 = {"H0": cosmo.H0} if theta is None else {"H0": None, "cosmomc_theta": theta}
    reion = {"tau": cosmo.tau} if zre is None else {"tau": None, "zrei": zre}
    p.set_cosmology(ombh2=cosmo.ombh2, omch2=cosmo.omch2, mnu=cosmo.mnu, omk=0.0, **h0, **reion)
    p.InitPower.set_params(
        As=cosmo.As,
        ns=cosmo.ns,
        r=cosmo.r if tensors else 0.0,
        nt=cosmo.nt,
        pivot_scalar=cosmo.pivot_scalar,
        pivot_tensor=cosmo.pivot_tensor,
    )
    p.set_for_lmax(max(lmax, LENSING_LMAX), lens_potential_accuracy=lens_potential_accuracy)
    p.WantScalars = scalars
    p.WantTensors = tensors
    if tensors:
        # Tensors are not lensed: lmax suffices, from TENSOR_LMAX up. A too-small max_eta_k_tensor aborts the
        # whole process in CAMB's Fortran, so keep CAMB's default ratio k*eta/l = 2 or more.
        p.max_l_tensor = max(lmax, TENSOR_LMAX)
        p.max_eta_k_tensor = max(1200.0, 2.5 * p.max_l_tensor)
    return p


def _camb_results(params):
    """``camb.get_results`` on one OpenMP thread.

    CAMB's threaded sums change the last bits of the spectra with the thread count, and a dataset's bytes must
    not depend on the executor or the number of workers (the emulator caches hide the cost).
    """
    import camb
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="openmp"):
        return camb.get_results(params)


def theta_and_zre(cosmo: Cosmology) -> tuple[float, float]:
    """CosmoMC's theta_MC (approximate angular size of the sound horizon) and CAMB's mid-point redshift of
    hydrogen reionisation for ``cosmo``'s tau (CAMB background only, about 2 ms)."""
    import camb

    p = camb.CAMBparams()
    p.set_cosmology(H0=cosmo.H0, ombh2=cosmo.ombh2, omch2=cosmo.omch2, mnu=cosmo.mnu, omk=0.0, tau=cosmo.tau)
    theta = camb.get_background(p, no_thermo=True).cosmomc_theta()
    return float(theta), float(p.Reion.get_zre(p, cosmo.tau))


def camb_spectra(cosmo: Cosmology, lmax: int, *, kind: str = "total", lens_potential_accuracy: int = 1) -> np.ndarray:
    """CMB power spectra from a direct CAMB run.

    Parameters
    ----------
    cosmo : Cosmology
    lmax : int
        Highest multipole returned (CAMB computes to ``max(lmax, LENSING_LMAX)`` plus its lensing margin).
    kind : str
        ``"total"`` (lensed scalar + tensor at ``cosmo.r``, ``cosmo.nt``: the sky spectra for simulations),
        ``"lensed_scalar"``, ``"unlensed_scalar"``, ``"tensor"`` (tensor only; zero if r = 0; with r = 1 and
        nt = 0 the template that scales linearly in r) or ``"lens_potential"``.
    lens_potential_accuracy : int
        CAMB's lensing accuracy, >= 1 (1 gives lensed BB within 0.3 % of accuracy 2 at ell <= 31).

    Returns
    -------
    ndarray, shape (4, lmax+1), C_ell in uK_CMB^2
        TT, EE, BB, TE for ell = 0..lmax (ell 0, 1 are zero). For ``kind="lens_potential"``, shape (3, lmax+1):
        C_ell^{phi phi} (dimensionless), C_ell^{phi T} and C_ell^{phi E} (uK_CMB).
    """

    if kind not in _CAMB_KINDS:
        raise ValueError(f"unknown spectrum kind {kind!r}; expected one of {list(_CAMB_KINDS)}")
    lmax = int(lmax)
    if lmax < 2:
        raise ValueError(f"lmax must be >= 2, got {lmax}")
    if kind == "tensor" and cosmo.r == 0:
        return np.zeros((4, lmax + 1))
    lens_potential_accuracy = _check_lens_accuracy(lens_potential_accuracy)
    tensors = kind == "tensor" or (kind == "total" and cosmo.r > 0)
    p = _camb_params(
        cosmo, lmax, tensors=tensors, scalars=kind != "tensor", lens_potential_accuracy=lens_potential_accuracy
    )
    p.DoLensing = kind in ("total", "lensed_scalar", "lens_potential")
    results = _camb_results(p)
    unit = {"CMB_unit": "muK", "raw_cl": True}
    if kind == "tensor":
        out = results.get_tensor_cls(lmax, **unit)
    elif kind == "unlensed_scalar":
        out = results.get_unlensed_scalar_cls(lmax, **unit)
    elif kind == "lens_potential":
        out = results.get_lens_potential_cls(lmax, **unit)
    else:
        out = results.get_lensed_scalar_cls(lmax, **unit)
        if tensors:
            out = out + results.get_tensor_cls(lmax, **unit)
    out = np.ascontiguousarray(out.T)
    out[..., :2] = 0.0
    return out


def default_cache_dir() -> Path:
    """``$COSMOBENCH_CACHE`` if set, else ``~/.cache/cosmobench``."""
    env = os.environ.get("COSMOBENCH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "cosmobench"


def cmb_spectra(
    cosmo: Cosmology, lmax: int, *, method: str = "fast", cache_dir: str | Path | None = None
) -> np.ndarray:
    """Total (lensed scalar + tensor) CMB spectra for a simulation.

    Parameters
    ----------
    cosmo : Cosmology
    lmax : int
        Highest multipole (e.g. 3 nside - 1).
    method : str
        ``"fast"``: :class:`SpectrumEmulator` (built once per ``lmax`` and non-varied parameters, then loaded
        from ``cache_dir``; error < 0.1 % on TT and EE across the prior); a cosmology outside the emulator's
        range (more than ``max_sigma`` prior standard deviations from the mean) falls back to CAMB with a
        warning. ``"camb"``: direct CAMB run, as :func:`camb_spectra` with ``kind="total"``.
    cache_dir : path, optional
        Emulator cache folder; defaults to :func:`default_cache_dir`.

    Returns
    -------
    ndarray, shape (4, lmax+1), C_ell in uK_CMB^2 (TT, EE, BB, TE; ell 0, 1 zero)
    """
    if method == "camb":
        return camb_spectra(cosmo, lmax, kind="total")
    if method != "fast":
        raise ValueError(f"unknown spectrum method {method!r}; expected one of ['camb', 'fast']")
    emu = SpectrumEmulator.for_cosmology(cosmo, lmax, cache_dir=cache_dir)
    if not emu.in_range(cosmo):
        warnings.warn(
            f"{cosmo} lies more than {emu.max_sigma} prior sigmas from the emulator centre; using direct CAMB",
            stacklevel=2,
        )
        return camb_spectra(cosmo, lmax, kind="total", lens_potential_accuracy=emu.lens_potential_accuracy)
    return emu.predict(cosmo)


# 3: CAMB runs computed to max(lmax, LENSING_LMAX) (format 2 stopped near lmax: lensed BB up to 30 % low);
# 4: tensors computed to max(lmax, TENSOR_LMAX) (format 3 corrupted CAMB's heap below lmax 39)
_EMULATOR_FORMAT = 4
_FIXED_FIELDS = ("nt", "mnu", "pivot_scalar", "pivot_tensor")
# Parameters whose pair interactions depend on the reionisation variable (they set the background distances).
_PAIR_COUPLED = ("H0", "ombh2", "omch2")
_MEMO: dict[str, SpectrumEmulator] = {}


class SpectrumEmulator:
    """Fast CMB spectra: an interpolation of CAMB's lensed-scalar and tensor spectra around a fiducial cosmology.

    Variables. Each varied parameter p becomes x = (p - p_fid) / sigma_p (sigma_p its prior standard
    deviation), except that H0 is replaced by CosmoMC's theta_MC (at fixed theta the acoustic peaks stay in
    place, so the high-ell spectra are close to quadratic in the other parameters) and tau by CAMB's
    reionisation mid-point redshift z_re (which sets the shape of the low-ell E/B bump); theta is scaled by the
    spread that H0, ombh2 and omch2 induce together, z_re by the spread that tau induces. Both come from CAMB's
    background code (about 2 ms per prediction).

    Model. With t the z_re variable and j, k the other variables, every emulated quantity y is

        y(x) = y(0) + A(t) + sum_j [x_j G_j(t) + x_j^2 H_j(t) / 2] + sum_{j<k} c_jk(t) x_j x_k,

    where A is a cubic spline of CAMB runs along the t axis (spacing ``tau_spacing``), G_j and H_j are central
    first and second differences (step ``step``) along axis j taken at t nodes every ``coupling_spacing`` and
    spline-interpolated in t (how the other parameters move the low-ell E modes depends strongly on the
    reionisation history), and c_jk comes from runs at (+step, +step): at every coupling node for pairs of the
    background parameters (theta, ombh2, omch2), at t = 0 for the other pairs. It is exact for any function of
    this form. The emulated quantities are log C_ell for TT, EE and BB and the correlation TE / sqrt(TT EE)
    (TE crosses zero), for the lensed scalar spectra and for the tensor spectra at r = 1. The tensor part enters
    linearly in r (``total = lensed_scalar + r * tensor(r=1)``), so the emulator is exact in r; ``nt``, ``mnu``
    and the pivots are fixed at the fiducial values (one emulator per combination; :meth:`for_cosmology` picks
    it). :meth:`n_runs` gives the number of CAMB runs.

    Parameters
    ----------
    lmax : int
        Highest multipole.
    fiducial : Cosmology, optional
        Centre for the varied parameters (Planck 2018 means by default); its ``nt``, ``mnu`` and pivots are held
        fixed, its ``r`` is ignored.
    prior : dict
        Name -> (mean, std): the varied parameters (``tau`` and a subset of the others in
        :data:`VARIED_PARAMS`) and their scales; the means are not used (the centre is ``fiducial``).
    step : float
        Finite-difference step of the non-tau axes and of the pair runs, in (scaled) standard deviations.
    max_sigma : float
        Range: :meth:`predict` refuses cosmologies further than this many prior sigmas from the centre in any
        varied parameter, and :meth:`in_range` says so.
    tau_spacing, coupling_spacing : float
        Spline node spacings along t for A(t) and for G_j, H_j, c_jk, in units of the z_re scale;
        ``coupling_spacing`` must be a whole multiple of ``tau_spacing``.
    lens_potential_accuracy : int
        CAMB lensing accuracy of the runs (and of the CAMB spectra the emulator reproduces), >= 1. The runs
        compute the lensing to ``max(lmax, LENSING_LMAX)`` (recorded in the settings and the cache key).
    """

    def __init__(
        self,
        lmax: int,
        *,
        fiducial: Cosmology | None = None,
        prior: dict[str, tuple[float, float]] = PLANCK2018_PRIOR,
        step: float = 2.0,
        max_sigma: float = 4.0,
        tau_spacing: float = 0.5,
        coupling_spacing: float = 1.0,
        lens_potential_accuracy: int = 1,
    ):
        import camb

        self.lmax = int(lmax)
        if self.lmax < 2:
            raise ValueError(f"lmax must be >= 2, got {lmax}")
        self.fiducial = dataclasses.replace(fiducial or Cosmology(), r=0.0)
        self.params = tuple(prior)
        unknown = [p for p in self.params if p not in VARIED_PARAMS]
        if unknown or "tau" not in self.params:
            raise ValueError(f"the emulator varies tau and a subset of {list(VARIED_PARAMS)}; got {self.params}")
        self.sigma = np.array([float(prior[p][1]) for p in self.params])
        if np.any(self.sigma <= 0):
            raise ValueError("prior standard deviations must be positive")
        self.step, self.max_sigma = float(step), float(max_sigma)
        self.tau_spacing, self.coupling_spacing = float(tau_spacing), float(coupling_spacing)
        if not 0 < self.step <= self.max_sigma:
            raise ValueError(f"need 0 < step <= max_sigma, got step={step}, max_sigma={max_sigma}")
        ratio = self.coupling_spacing / self.tau_spacing if self.tau_spacing > 0 else 0.0
        if not (self.tau_spacing > 0 and ratio >= 1 and abs(ratio - round(ratio)) < 1e-9):
            raise ValueError("need tau_spacing > 0 and coupling_spacing a whole multiple of it")
        self.lens_potential_accuracy = _check_lens_accuracy(lens_potential_accuracy)
        self.settings = {
            "format": _EMULATOR_FORMAT,
            "camb_version": camb.__version__,
            "lmax": self.lmax,
            "fiducial": self.fiducial.to_dict(),
            "params": list(self.params),
            "sigma": self.sigma.tolist(),
            "step": self.step,
            "max_sigma": self.max_sigma,
            "tau_spacing": self.tau_spacing,
            "coupling_spacing": self.coupling_spacing,
            "lens_potential_accuracy": self.lens_potential_accuracy,
            "lensing_lmax": max(self.lmax, LENSING_LMAX),
            "tensor_lmax": max(self.lmax, TENSOR_LMAX),
        }
        self._it = self.params.index("tau")
        self._others = [i for i in range(len(self.params)) if i != self._it]
        self._coordinates()
        self.runs: np.ndarray | None = None
        self.build_info: dict = {}

    # ---------------------------------------------------------- coordinates
    def _coordinates(self) -> None:
        """Centres and scales of theta_MC and z_re, the range of every variable, and the tau node grids."""
        fid = self.fiducial
        self._derived0 = np.array(theta_and_zre(fid))
        # theta_MC is scaled by the spread that H0, ombh2 and omch2 together induce (so that the prior box maps to
        # about +-max_sigma), z_re by the spread that tau induces (the spline grid covers the rest).
        sources = (("H0", "ombh2", "omch2"), ("tau",))
        self._derived_sigma = np.ones(2)
        for k, name in enumerate(("H0", "tau")):
            if name in self.params:
                var = 0.0
                for p in sources[k]:
                    if p in self.params:
                        s = self.sigma[self.params.index(p)]
                        up = theta_and_zre(dataclasses.replace(fid, **{p: getattr(fid, p) + s}))[k]
                        down = theta_and_zre(dataclasses.replace(fid, **{p: getattr(fid, p) - s}))[k]
                        var += ((up - down) / 2) ** 2
                self._derived_sigma[k] = np.sqrt(var)
        # theta and z_re are monotonic in H0, ombh2, omch2, tau: their extremes over the box lie at its corners
        movers = [i for i, p in enumerate(self.params) if p in ("H0", "ombh2", "omch2", "tau")]
        corners = np.array(np.meshgrid(*[[-1.0, 1.0]] * len(movers))).reshape(len(movers), -1).T
        xs = []
        for signs in corners * self.max_sigma:
            values = {self.params[i]: getattr(fid, self.params[i]) + g * self.sigma[i] for i, g in zip(movers, signs)}
            values["tau"] = max(values["tau"], TAU_MIN)
            xs.append(self._x(dataclasses.replace(fid, **values)))
        lo, hi = np.min(xs, axis=0)[self._it], np.max(xs, axis=0)[self._it]
        d = self.tau_spacing
        self._tau_nodes = np.arange(np.floor(lo / d), np.ceil(hi / d) + 1) * d
        dc = self.coupling_spacing
        self._coupling_nodes = np.arange(np.ceil(lo / dc), np.floor(hi / dc) + 1) * dc

    def _x(self, cosmo: Cosmology) -> np.ndarray:
        """Interpolation variables of ``cosmo``, shape (nparams,): prior sigmas from the centre, with theta_MC
        in place of H0 and z_re in place of tau (each scaled by the sigma its parameter induces)."""
        x = self._sigmas(cosmo)
        derived = (np.array(theta_and_zre(cosmo)) - self._derived0) / self._derived_sigma
        for k, name in enumerate(("H0", "tau")):
            if name in self.params:
                x[self.params.index(name)] = derived[k]
        return x

    def _sigmas(self, cosmo: Cosmology) -> np.ndarray:
        """Distance of each varied parameter of ``cosmo`` from the centre, in prior sigmas."""
        return np.array([(getattr(cosmo, p) - getattr(self.fiducial, p)) / s for p, s in zip(self.params, self.sigma)])

    def _run_at(self, x: np.ndarray) -> tuple[Cosmology, dict[str, float]]:
        """The cosmology (r = 1) of the run at ``x`` and the theta / zre that replace its H0 / tau in CAMB."""
        values, derived = {}, {}
        for p, xi, s in zip(self.params, x, self.sigma):
            if p == "H0":
                derived["theta"] = self._derived0[0] + xi * self._derived_sigma[0]
            elif p == "tau":
                derived["zre"] = self._derived0[1] + xi * self._derived_sigma[1]
            else:
                values[p] = getattr(self.fiducial, p) + xi * s
        return dataclasses.replace(self.fiducial, r=1.0, **values), derived

    # ----------------------------------------------------------------- design
    def n_runs(self) -> int:
        """Number of CAMB runs of :meth:`build`."""
        return len(self._design())

    def _pair_nodes(self, j: int, k: int) -> np.ndarray:
        """t nodes of the pair coefficient c_jk(t): the coupling nodes for pairs of background parameters."""
        coupled = self.params[j] in _PAIR_COUPLED and self.params[k] in _PAIR_COUPLED
        return self._coupling_nodes if coupled else np.zeros(1)

    def _pairs_index(self) -> list[tuple[int, int]]:
        return [(j, k) for a, j in enumerate(self._others) for k in self._others[a + 1 :]]

    def _design(self) -> np.ndarray:
        """Design points: centre; tau axis; (t, +-step) along each other axis at the coupling nodes; pairs
        (+step, +step) at t = 0, or at every coupling node for pairs of background parameters."""
        n, h, it = len(self.params), self.step, self._it
        e = np.eye(n)
        points = [np.zeros(n)]
        points += [e[it] * t for t in self._tau_nodes if t != 0]
        for j in self._others:
            for t in self._coupling_nodes:
                points += [e[it] * t + e[j] * h, e[it] * t - e[j] * h]
        for j, k in self._pairs_index():
            points += [e[it] * t + (e[j] + e[k]) * h for t in self._pair_nodes(j, k)]
        return np.array(points)

    def _setup(self) -> None:
        """Splines of the model terms from ``self.runs`` (in the order of :meth:`_design`)."""
        runs, h = iter(self.runs), self.step
        self._centre = next(runs)
        axis = np.array([next(runs) - self._centre if t != 0 else np.zeros_like(self._centre) for t in self._tau_nodes])
        self._tau_axis = _spline(self._tau_nodes, axis)
        nodes = self._coupling_nodes
        mid = self._centre + self._tau_axis(nodes)
        self._grad, self._curv, single = {}, {}, {}
        for j in self._others:
            plus, minus = np.array([[next(runs), next(runs)] for _ in nodes]).transpose(1, 0, 2, 3)
            self._grad[j] = _spline(nodes, (plus - minus) / (2 * h))
            self._curv[j] = _spline(nodes, (plus - 2 * mid + minus) / h**2)
        self._pairs = []
        for j, k in self._pairs_index():
            t = self._pair_nodes(j, k)
            single = [self._grad[i](t) * h + self._curv[i](t) * h**2 / 2 for i in (j, k)]
            values = np.array([next(runs) for _ in t])
            c = (values - self._centre - self._tau_axis(t) - single[0] - single[1]) / h**2
            self._pairs.append((j, k, _spline(t, c)))

    def _evaluate(self, x: np.ndarray) -> np.ndarray:
        """The emulated variables at ``x``, shape (8, lmax-1)."""
        t = x[self._it]
        y = self._centre + self._tau_axis(t)
        for j in self._others:
            y = y + x[j] * self._grad[j](t) + 0.5 * x[j] ** 2 * self._curv[j](t)
        for j, k, c in self._pairs:
            y = y + c(t) * (x[j] * x[k])
        return y

    @staticmethod
    def _transform(scalar: np.ndarray, tensor: np.ndarray) -> np.ndarray:
        """(4, L) lensed scalar and tensor C_ell (ell >= 2) -> (8, L) smooth emulated variables."""
        out = []
        for cl in (scalar, tensor):
            tt, ee, bb, te = cl
            out += [np.log(tt), np.log(ee), np.log(bb), te / np.sqrt(tt * ee)]
        return np.array(out)

    @staticmethod
    def _untransform(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        parts = []
        for k in (0, 4):
            tt, ee, bb = np.exp(y[k : k + 3])
            parts.append(np.array([tt, ee, bb, y[k + 3] * np.sqrt(tt * ee)]))
        return parts[0], parts[1]

    def _camb_run(self, x: np.ndarray) -> np.ndarray:

        cosmo, derived = self._run_at(x)
        p = _camb_params(
            cosmo, self.lmax, tensors=True, lens_potential_accuracy=self.lens_potential_accuracy, **derived
        )
        res = _camb_results(p)
        unit = {"CMB_unit": "muK", "raw_cl": True}
        scalar = res.get_lensed_scalar_cls(self.lmax, **unit).T[:, 2:]
        tensor = res.get_tensor_cls(self.lmax, **unit).T[:, 2:]
        if np.any(scalar[:3] <= 0) or np.any(tensor[:3] <= 0):
            raise RuntimeError(f"CAMB returned non-positive auto spectra at {cosmo}; cannot emulate in log")
        return self._transform(scalar, tensor)

    # ------------------------------------------------------------------ build
    def build(self, progress: bool = False) -> SpectrumEmulator:
        """Run CAMB at the design points (serially: CAMB uses all cores) and set up the interpolants.

        ``build_info`` records the number of CAMB calls and the wall time.
        """
        import time

        from tqdm.auto import tqdm

        design = self._design()
        t0 = time.perf_counter()
        self.runs = np.array([self._camb_run(x) for x in tqdm(design, desc="CAMB runs", disable=not progress)])
        self.build_info = {"camb_calls": len(design), "build_seconds": time.perf_counter() - t0}
        self._setup()
        return self

    # ---------------------------------------------------------------- predict
    def in_range(self, cosmo: Cosmology) -> bool:
        """Whether every varied parameter of ``cosmo`` lies within ``max_sigma`` of the centre."""
        return bool(np.all(np.abs(self._sigmas(cosmo)) <= self.max_sigma))

    def predict(self, cosmo: Cosmology, kind: str = "total") -> np.ndarray:
        """Emulated spectra.

        Parameters
        ----------
        cosmo : Cosmology
            Its ``nt``, ``mnu`` and pivots must equal the fiducial's; ``r`` is free.
        kind : str
            ``"total"`` (lensed scalar + r * tensor), ``"lensed_scalar"`` or ``"tensor"`` (at ``cosmo.r``).

        Returns
        -------
        ndarray, shape (4, lmax+1), C_ell in uK_CMB^2 (TT, EE, BB, TE; ell 0, 1 zero)
        """
        if self.runs is None:
            raise RuntimeError("emulator not built: call build() or load()")
        if kind not in ("total", "lensed_scalar", "tensor"):
            raise ValueError(f"unknown kind {kind!r}; expected one of ['total', 'lensed_scalar', 'tensor']")
        for name in _FIXED_FIELDS:
            if getattr(cosmo, name) != getattr(self.fiducial, name):
                raise ValueError(
                    f"this emulator holds {name} = {getattr(self.fiducial, name)}, the cosmology has "
                    f"{getattr(cosmo, name)}; use SpectrumEmulator.for_cosmology(cosmo, lmax) or method='camb'"
                )
        if not self.in_range(cosmo):
            raise ValueError(
                f"{cosmo} is outside the emulator range ({self.max_sigma} sigma in {list(self.params)}); "
                "use method='camb'"
            )
        scalar, tensor = self._untransform(self._evaluate(self._x(cosmo)))
        cl = {"total": scalar + cosmo.r * tensor, "lensed_scalar": scalar, "tensor": cosmo.r * tensor}[kind]
        out = np.zeros((4, self.lmax + 1))
        out[:, 2:] = cl
        return out

    # ------------------------------------------------------------------ cache
    def key(self) -> str:
        """Short hash of the build settings (names the cache file)."""
        blob = json.dumps(self.settings, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def cache_path(self, cache_dir: str | Path | None = None) -> Path:
        """``<cache_dir>/cmb_emulator_lmax<lmax>_<key>.npz``."""
        folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        return folder / f"cmb_emulator_lmax{self.lmax}_{self.key()}.npz"

    def save(self, path: str | Path) -> Path:
        """Write the CAMB runs, settings and a checksum to ``path`` (.npz), atomically."""
        if self.runs is None:
            raise RuntimeError("emulator not built: call build() first")
        path = Path(path)
        meta = json.dumps({"settings": self.settings, "build_info": self.build_info}, sort_keys=True)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, runs=self.runs, meta=np.array(meta), checksum=np.array(_checksum(self.runs, meta)))
        return path

    def load(self, path: str | Path) -> SpectrumEmulator:
        """Read the CAMB runs from ``path``; raise :class:`CorruptFileError` if it is unreadable, fails its
        checksum, or was built with other settings."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as f:
                runs, meta, checksum = f["runs"], str(f["meta"]), str(f["checksum"])
            info = json.loads(meta)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            raise CorruptFileError(f"emulator cache {path} is unreadable ({err}); delete it to rebuild") from err
        if checksum != _checksum(runs, meta):
            raise CorruptFileError(f"emulator cache {path} fails its checksum; delete it to rebuild")
        if info.get("settings") != json.loads(json.dumps(self.settings)):
            raise CorruptFileError(f"emulator cache {path} was built with other settings; delete it to rebuild")
        expected = (len(self._design()), 8, self.lmax - 1)
        if runs.shape != expected or not np.all(np.isfinite(runs)):
            raise CorruptFileError(f"emulator cache {path} has bad contents {runs.shape}; delete it to rebuild")
        self.runs, self.build_info = runs, info.get("build_info", {})
        self._setup()
        return self

    def load_or_build(self, cache_dir: str | Path | None = None, progress: bool = False) -> SpectrumEmulator:
        """Load from the cache, or build and save (under a file lock, so parallel workers build once).

        A corrupt or mismatched cache file is rebuilt with a warning, never used.
        """
        path = self.cache_path(cache_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(path.with_name(path.name + ".lock")):
            if path.exists():
                try:
                    return self.load(path)
                except CorruptFileError as err:
                    warnings.warn(f"{err}; rebuilding it", stacklevel=2)
            self.build(progress=progress)
            self.save(path)
        return self

    @classmethod
    def for_cosmology(
        cls, cosmo: Cosmology, lmax: int, *, cache_dir: str | Path | None = None, **kwargs
    ) -> SpectrumEmulator:
        """The emulator (memoised in the process, cached on disk) for ``cosmo``'s fixed parameters at ``lmax``.

        The centre is the prior mean (Planck 2018) with ``cosmo``'s ``nt``, ``mnu`` and pivots. A first build
        shows a progress bar (144 CAMB runs by default).
        """
        fixed = {name: getattr(cosmo, name) for name in _FIXED_FIELDS}
        emu = cls(lmax, fiducial=Cosmology(**fixed), **kwargs)
        memo_key = f"{emu.cache_path(cache_dir)}"
        if memo_key not in _MEMO:
            _MEMO[memo_key] = emu.load_or_build(cache_dir, progress=True)
        return _MEMO[memo_key]


def _spline(nodes: np.ndarray, values: np.ndarray):
    """Cubic spline (not-a-knot; a parabola through three nodes) of ``values`` over ``nodes`` along axis 0, or
    the constant ``values[0]`` for a single node."""
    from scipy.interpolate import CubicSpline

    if len(nodes) == 1:
        return lambda t, v=values[0]: v
    return CubicSpline(nodes, values, axis=0)


def _checksum(runs: np.ndarray, meta: str) -> str:
    h = hashlib.sha256(np.ascontiguousarray(runs).tobytes())
    h.update(meta.encode())
    return h.hexdigest()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (POSIX ``flock``; no lock where fcntl is missing)."""
    with open(path, "a") as fh:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - non-POSIX
            yield
            return
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield
