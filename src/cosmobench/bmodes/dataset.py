"""Simulated B-mode power spectra: clean tensor spectra and observed spectra, from HEALPix maps.

One sample at tensor-to-scalar ratio r (all streams independent, from :func:`cosmobench.core.seeds.rng` with the
key ``(seed, "bmodes", split, i, <part>)``):

1. tensor B-mode alm from C_l^BB = r C_l^{t, r=1} (CAMB, n_t = 0 so the template scales linearly in r),
   stream ``"tensor"``; lensing B-mode alm from CAMB's lensed-scalar C_l^BB (a Gaussian field, fine at l < 50),
   stream ``"lensing"``. Both are pure B (E = T = 0).
2. **truth** (``dl_gt``): the tensor B alm times the beam b_l (FWHM 24.8'), synthesised to Q/U at ``nside``,
   analysed back with ``map2alm`` (3 Jacobi iterations) and turned into C_l^BB: the spectrum of the beam-convolved
   tensor map of this realisation (the prototype's ground truth), with its cosmic variance.
3. **observation** (``dl_noisy``): (tensor + lensing) alm times b_l, synthesised to Q/U, plus a foreground
   residual map, plus white Q/U noise of depth ``noise_depth`` uK arcmin added **after** the beam; analysed the same
   way (full sky), or multiplied by an apodised Galactic mask first (pseudo-C_l divided by mean(mask^2)).
4. Spectra are D_l = l(l+1) C_l / 2 pi in uK_CMB^2 on ``ell_min..ell_max`` (default 2..2 nside - 1 = 2..31,
   30 values). No pixel window is applied (the maps are band-limited syntheses; healpy's pixel-window files
   would need a download).

Foreground residual: the prototype added the raw 28 GHz PySM sky to every sample, which is orders of magnitude
above r = 0.001. Here each sample gets ``fg_fraction`` (an amplitude fraction) times a **new** B-mode foreground
sky at ``fg_freq_ghz`` (:func:`foreground_qu`, stream ``"foregrounds"``): dust and synchrotron calibrated on the
published BICEP/Keck BK18 levels at ell = 80 (:data:`FOREGROUND_BB`: dust D_80^BB = 4.4 uK^2 at 353 GHz,
synchrotron 1.4 uK^2 at 23 GHz, the level of a clean high-latitude field), with power-law spectra, a per-sample
amplitude, slope and spectral index, a per-pixel spectral-index field and a log-normal spatial modulation, so
that the residual is non-Gaussian and differs from sample to sample. The default (1 % of that amplitude at
95 GHz) is about 10 % of the noise power at l = 2 and below 1 % above l = 10: an assumption of very good
cleaning, not a prediction. Set ``fg_fraction`` higher to study foreground bias, 0 to switch the residual off.
Its mean spectrum (Monte Carlo over ``n_fg_mc`` skies) enters the likelihood model.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path

import numpy as np

from ..core.io import CorruptFileError, atomic_path
from ..core.seeds import rng as stream
from ..sky import sht

__all__ = [
    "DEFAULT_COSMOLOGY",
    "PROTOTYPE_COSMOLOGY",
    "FOREGROUND_BB",
    "foreground_qu",
    "ell_range",
    "dl_factor",
    "bb_templates",
    "BModeSimulator",
    "r_label",
]

#: Our default cosmology: the prototype's parameters (H0, ombh2, omch2, ns, tau 0.05431, tensor pivot 0.05 / Mpc)
#: with A_s = 2.1e-9 (ln(10^10 A_s) = ln 21, close to Planck 2018's 2.10e-9).
DEFAULT_COSMOLOGY = {
    "H0": 67.32,
    "ombh2": 0.0224,
    "omch2": 0.1201,
    "ns": 0.966,
    "tau": 0.05431,
    "ln10As": math.log(21.0),
}
#: The prototype's own cosmology: it never sets A_s, so CAMB's default 2.0e-9 applies (sigma(r) 3.6 % larger at
#: r = 0 than with :data:`DEFAULT_COSMOLOGY`, since r is relative to A_s).
PROTOTYPE_COSMOLOGY = {**DEFAULT_COSMOLOGY, "ln10As": math.log(20.0)}
# 2: lensing computed to ell >= 2000 (format 1 stopped near the map's lmax: lensing BB up to 30 % low);
# 3: tensors computed to ell >= TENSOR_LMAX (format 2 stopped at lmax, where CAMB writes past its arrays)
_TEMPLATE_FORMAT = 3


@functools.lru_cache(maxsize=8)
def _rj_to_cmb(freq_ghz: float) -> float:
    """uK_CMB per uK_RJ at ``freq_ghz`` (cached: astropy's equivalencies take milliseconds)."""
    from ..sky.units import unit_factor

    return float(unit_factor(freq_ghz, "uK_RJ", "uK_CMB"))


def r_label(r: float) -> str:
    """The r in file names, e.g. 0.001 -> ``"0.001"``, 0 -> ``"0"`` (``dl_gt_r0.001.npy``)."""
    return f"{float(r):g}"


def ell_range(nside: int, ell_min: int = 2, ell_max: int | None = None) -> np.ndarray:
    """Multipoles of the data vector: ``ell_min..ell_max`` (default 2..2 nside - 1), shape (n_ell,)."""
    ell_max = 2 * sht.check_nside(nside) - 1 if ell_max is None else int(ell_max)
    if not 2 <= ell_min <= ell_max <= sht.default_lmax(nside):
        raise ValueError(
            f"need 2 <= ell_min <= ell_max <= 3 nside - 1 = {sht.default_lmax(nside)}, "
            f"got ell_min={ell_min}, ell_max={ell_max}"
        )
    return np.arange(int(ell_min), ell_max + 1)


def dl_factor(ell: np.ndarray) -> np.ndarray:
    """l(l+1) / 2 pi: D_l = dl_factor * C_l."""
    ell = np.asarray(ell, dtype=float)
    return ell * (ell + 1) / (2 * np.pi)


def bb_templates(lmax: int, cosmology: dict | None = None, cache: Path | str | None = None) -> dict[str, np.ndarray]:
    """CAMB BB spectra: the tensor template at r = 1, n_t = 0, and the lensed-scalar (lensing) BB.

    The lensing BB comes from CAMB's lensing computed to ell >= 2000 with lens_potential_accuracy 1 and cut to
    ``lmax`` (:func:`~cosmobench.sky.cosmology.camb_spectra`): within 0.3 % of a run to ell 4000 with accuracy 2.

    Parameters
    ----------
    lmax : int
    cosmology : dict, optional
        :class:`~cosmobench.sky.cosmology.Cosmology` fields that replace those of :data:`DEFAULT_COSMOLOGY` (the
        others keep their default values), e.g. ``{"ln10As": 2.995732273553991}`` (ln 20: A_s = 2.0e-9, the
        prototype's). ``r`` and ``nt`` are set here (1 and 0).
    cache : path, optional
        ``.npz`` file reused when it holds the same lmax and cosmology (CAMB takes about a second per call).

    Returns
    -------
    dict
        ``cl_tensor`` and ``cl_lens``: C_l^BB in uK_CMB^2, shape (lmax + 1,); ``cosmology``: the fields used.
    """
    import json

    from ..sky.cosmology import Cosmology, camb_spectra

    fields = dict(cosmology or {})
    for key in ("r", "nt"):
        if key in fields:
            raise ValueError(
                f"cosmology must not set {key!r}: the tensor template is built at r = 1, n_t = 0 "
                "and scaled linearly; choose r with the dataset's r values"
            )
    cosmo = Cosmology(**{**DEFAULT_COSMOLOGY, **fields}, r=1.0, nt=0.0)
    meta = {"format": _TEMPLATE_FORMAT, "lmax": int(lmax), "cosmology": cosmo.to_dict()}
    if cache is not None and Path(cache).exists():
        try:
            with np.load(cache, allow_pickle=False) as f:
                if json.loads(str(f["meta"])) == meta:
                    return {"cl_tensor": f["cl_tensor"], "cl_lens": f["cl_lens"], "cosmology": meta["cosmology"]}
        except (OSError, ValueError, KeyError) as err:
            raise CorruptFileError(f"template cache {cache} is unreadable ({err}); delete it to rebuild") from err
    cl_tensor = camb_spectra(cosmo, lmax, kind="tensor")[2]
    cl_lens = camb_spectra(cosmo, lmax, kind="lensed_scalar")[2]
    if cache is not None:
        with atomic_path(cache) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, cl_tensor=cl_tensor, cl_lens=cl_lens, meta=np.array(json.dumps(meta, sort_keys=True)))
    return {"cl_tensor": cl_tensor, "cl_lens": cl_lens, "cosmology": meta["cosmology"]}


#: B-mode foreground levels and their per-sample spread. ``amp``: D_80^BB in uK_CMB^2 at ``nu_ref`` (GHz), the
#: BICEP/Keck BK18 values (BICEP/Keck Collaboration 2021, PRL 127, 151301, arXiv:2110.00483: dust A_d = 4.4 uK^2 at
#: 353 GHz; synchrotron A_sync < 1.4 uK^2 at 23 GHz, 95 %, taken as the level). ``alpha``: D_ell ~ ell^alpha
#: (dust: Planck 2018 XI, arXiv:1801.04945, C_ell^BB ~ ell^-2.54 over 71 % of the sky; synchrotron: BK18's
#: central -0.6). ``beta``, ``temp``: SED, a modified black body T_RJ ~ nu^(beta+1) / (exp(h nu / k temp) - 1)
#: (Planck 2018 XI: beta_d = 1.53, T_d = 19.6 K) or, with ``temp`` 0, a power law T_RJ ~ nu^beta (high-latitude
#: WMAP: -3.1, Fuskeland et al. 2014). ``eb``: C^EE / C^BB (dust: 1 / 0.53, Planck 2018 XI). The ``*_sd`` entries
#: are the per-sample standard deviations (``amp_sd`` of ln amplitude, ``beta_pix_sd`` of the per-pixel index
#: field).
FOREGROUND_BB: dict[str, dict[str, float]] = {
    "dust": {
        "amp": 4.4,
        "nu_ref": 353.0,
        "alpha": -0.54,
        "beta": 1.53,
        "temp": 19.6,
        "eb": 1 / 0.53,
        "amp_sd": 0.2,
        "alpha_sd": 0.1,
        "beta_sd": 0.05,
        "temp_sd": 1.0,
        "beta_pix_sd": 0.05,
    },
    "synchrotron": {
        "amp": 1.4,
        "nu_ref": 23.0,
        "alpha": -0.6,
        "beta": -3.1,
        "temp": 0.0,
        "eb": 2.0,
        "amp_sd": 0.3,
        "alpha_sd": 0.1,
        "beta_sd": 0.1,
        "temp_sd": 0.0,
        "beta_pix_sd": 0.1,
    },
}


def _sed_cmb(nu_ghz: float, beta: float | np.ndarray, temp: float) -> float | np.ndarray:
    """Foreground SED in uK_CMB up to a constant: T_RJ(nu) (modified black body if ``temp`` > 0, else a power
    law) times the uK_RJ -> uK_CMB factor."""
    from scipy import constants

    t_rj = nu_ghz**beta
    if temp > 0:
        t_rj = nu_ghz * t_rj / np.expm1(constants.h * nu_ghz * 1e9 / (constants.k * temp))
    return t_rj * _rj_to_cmb(nu_ghz)


def foreground_qu(
    nside: int,
    rng: np.random.Generator,
    freq_ghz: float,
    *,
    components: tuple[str, ...] = ("dust", "synchrotron"),
    modulation: float = 0.5,
    scatter: float = 1.0,
) -> np.ndarray:
    """One B-mode foreground sky at the calibrated level of :data:`FOREGROUND_BB`, Q and U in uK_CMB.

    Each component is a Gaussian E/B field with D_ell^BB = A (ell / 80)^alpha (EE = ``eb`` BB) at its reference
    frequency, multiplied by a log-normal modulation exp(m g - m^2) (g a unit-variance Gaussian field with
    C_L ~ L^-2.5 for 1 <= L <= 16: the mean power is kept, within 1 % at ell = 80, and the sky is patchy, with a
    Q/U kurtosis excess of about 2.5 at m = 0.5), and scaled to ``freq_ghz`` with
    its SED, whose index varies per pixel. Per sample, ln A, alpha, beta and the dust temperature are drawn around
    their central values with the standard deviations of :data:`FOREGROUND_BB` times ``scatter``.

    Parameters
    ----------
    nside : int
    rng : numpy.random.Generator
    freq_ghz : float
        Observing frequency, GHz.
    components : tuple of str
        Keys of :data:`FOREGROUND_BB`.
    modulation : float
        m, the standard deviation of the log modulation (0: Gaussian sky).
    scatter : float
        Scale of the per-sample and per-pixel spreads (0: the central values in every sample, new skies only).

    Returns
    -------
    ndarray, shape (2, npix), uK_CMB
        At ``freq_ghz`` equal to a component's reference frequency and ``scatter=0``, its mean D_80^BB is ``amp``.
    """
    from ..sky.foregrounds import gaussian_field

    unknown = [c for c in components if c not in FOREGROUND_BB]
    if unknown:
        raise ValueError(f"unknown foreground components {unknown}; expected some of {sorted(FOREGROUND_BB)}")
    if modulation < 0 or scatter < 0:
        raise ValueError(f"modulation and scatter must be >= 0, got {modulation}, {scatter}")
    lmax = sht.default_lmax(nside)
    ell = np.arange(lmax + 1, dtype=float)
    out = np.zeros((2, sht.npix(nside)))
    for name in components:
        p = FOREGROUND_BB[name]
        draw = rng.standard_normal(4) * scatter
        amp = p["amp"] * math.exp(draw[0] * p["amp_sd"] - (scatter * p["amp_sd"]) ** 2 / 2)  # mean amp
        alpha = p["alpha"] + draw[1] * p["alpha_sd"]
        beta = p["beta"] + draw[2] * p["beta_sd"]
        temp = p["temp"] + draw[3] * p["temp_sd"]
        bb = np.zeros(lmax + 1)
        bb[2:] = amp * (ell[2:] / 80.0) ** alpha / dl_factor(ell[2:])
        cls = np.stack([np.zeros(lmax + 1), p["eb"] * bb, bb, np.zeros(lmax + 1)])
        qu = sht.alm2map(sht.synalm(cls, lmax, rng), nside, lmax)[1:]
        if modulation > 0:
            qu *= np.exp(modulation * gaussian_field(nside, rng, alpha=2.5, lmax=16) - modulation**2)
        if scatter > 0 and p["beta_pix_sd"] > 0:
            beta = beta + scatter * p["beta_pix_sd"] * gaussian_field(nside, rng, alpha=2.5)
        out += qu * (_sed_cmb(freq_ghz, beta, temp) / _sed_cmb(p["nu_ref"], beta, temp))
    return out


@dataclasses.dataclass(frozen=True, kw_only=True)
class BModeSimulator:
    """Simulate clean and observed B-mode spectra at NSIDE ``nside`` (see the module docstring).

    Parameters
    ----------
    cl_tensor, cl_lens : ndarray, shape (>= 3 nside,)
        C_l^BB templates in uK_CMB^2 (tensor at r = 1), e.g. from :func:`bb_templates`.
    nside : int
    ell_min, ell_max : int
        Multipole range of the data vector (default 2..2 nside - 1).
    beam_fwhm_arcmin : float
        Gaussian beam.
    noise_depth : float
        White Q/U noise, uK_CMB arcmin (0 for none).
    fg_fraction : float
        Amplitude (map) fraction of the calibrated B-mode foreground (:func:`foreground_qu`) left as a residual;
        its power is ``fg_fraction**2`` times the foreground's (0 for none). The default 0.01 at 95 GHz gives
        a mean residual of about 10 % of the noise power at l = 2.
    fg_freq_ghz : float
        Frequency of the foreground sky, GHz.
    fg_components : tuple of str
        Keys of :data:`FOREGROUND_BB` ("dust", "synchrotron").
    fg_modulation : float
        Standard deviation of the log-normal spatial modulation of each component (0: Gaussian skies).
    fg_scatter : float
        Scale of the per-sample spread of amplitude, slope and spectral parameters (0: the same parameters in
        every sample, new spatial realisations only).
    mask : {"none", "galactic"}
        Full sky, or an apodised cut abs(b) > ``mask_bcut_deg`` with C1 apodisation ``mask_apod_deg``.
    mask_bcut_deg, mask_apod_deg : float
    """

    cl_tensor: np.ndarray
    cl_lens: np.ndarray
    nside: int = 16
    ell_min: int = 2
    ell_max: int | None = None
    beam_fwhm_arcmin: float = 24.8
    noise_depth: float = 11.9
    fg_fraction: float = 0.01
    fg_freq_ghz: float = 95.0
    fg_components: tuple[str, ...] = ("dust", "synchrotron")
    fg_modulation: float = 0.5
    fg_scatter: float = 1.0
    mask: str = "none"
    mask_bcut_deg: float = 20.0
    mask_apod_deg: float = 10.0

    def __post_init__(self):
        sht.check_nside(self.nside)
        if self.mask not in ("none", "galactic"):
            raise ValueError(f"unknown mask {self.mask!r}; expected 'none' or 'galactic'")
        if min(self.noise_depth, self.fg_fraction, self.beam_fwhm_arcmin, self.fg_modulation, self.fg_scatter) < 0:
            raise ValueError("noise_depth, fg_fraction, fg_modulation, fg_scatter and beam_fwhm_arcmin must be >= 0")
        unknown = [c for c in self.fg_components if c not in FOREGROUND_BB]
        if unknown:
            raise ValueError(f"unknown fg_components {unknown}; expected some of {sorted(FOREGROUND_BB)}")
        if len(self.cl_tensor) <= self.lmax or len(self.cl_lens) <= self.lmax:
            raise ValueError(f"templates must reach lmax = 3 nside - 1 = {self.lmax}")
        object.__setattr__(self, "fg_components", tuple(self.fg_components))

    # ------------------------------------------------------------------ geometry
    @property
    def lmax(self) -> int:
        """Band limit of the syntheses and analyses, 3 nside - 1."""
        return sht.default_lmax(self.nside)

    @property
    def ell(self) -> np.ndarray:
        """Multipoles of the data vector, shape (n_ell,)."""
        return ell_range(self.nside, self.ell_min, self.ell_max)

    @property
    def beam(self) -> np.ndarray:
        """B-mode beam transfer function b_l, shape (lmax + 1,)."""
        return sht.gauss_beam(self.beam_fwhm_arcmin, self.lmax, pol=True)[2]

    def mask_map(self) -> np.ndarray | None:
        """The analysis mask, shape (npix,), or None on the full sky."""
        if self.mask == "none":
            return None
        from ..cmb.masks import apodize, latitude_mask

        return apodize(latitude_mask(self.nside, self.mask_bcut_deg), self.mask_apod_deg)

    @property
    def fsky(self) -> float:
        """Effective sky fraction of the spectrum estimator: mean(mask^2), 1 on the full sky."""
        m = self.mask_map()
        return 1.0 if m is None else float(np.mean(m**2))

    @property
    def noise_cl(self) -> float:
        """White-noise C_l^BB = (depth in rad)^2, uK^2 sr."""
        return (self.noise_depth * math.pi / 10800) ** 2

    # ------------------------------------------------------------------ pieces
    def _b_alm(self, cl_bb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        cls = np.zeros((4, self.lmax + 1))
        cls[2] = cl_bb[: self.lmax + 1]
        return sht.synalm(cls, self.lmax, rng)

    def _spectrum(self, qu_maps: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        """C_l^BB of I=0, Q, U maps on the data ell range (pseudo-C_l / mean(mask^2) when masked)."""
        maps = np.zeros((3, qu_maps.shape[-1]))
        maps[1:] = qu_maps if mask is None else qu_maps * mask
        cl = sht.alm2cl(sht.map2alm(maps, lmax=self.lmax, iter=3)[2])
        if mask is not None:
            cl = cl / np.mean(mask**2)
        return cl[self.ell]

    def foreground_residual(self, rng: np.random.Generator) -> np.ndarray:
        """Q, U of ``fg_fraction`` times a new B-mode foreground sky at ``fg_freq_ghz`` (:func:`foreground_qu`),
        uK_CMB, shape (2, npix)."""
        qu = foreground_qu(
            self.nside,
            rng,
            self.fg_freq_ghz,
            components=self.fg_components,
            modulation=self.fg_modulation,
            scatter=self.fg_scatter,
        )
        return qu * self.fg_fraction

    def simulate(
        self, r: float, seed: int, split: str, index: int, mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """One sample: clean tensor D_l and observed D_l.

        Parameters
        ----------
        r : float
            Tensor-to-scalar ratio (>= 0).
        seed : int
            Dataset seed.
        split : str
            Split name (part of the stream key).
        index : int
            Sample index within the split.
        mask : ndarray, optional
            Precomputed :meth:`mask_map` (computed if None and a mask is configured).

        Returns
        -------
        dl_gt, dl_obs : ndarray, shape (n_ell,), uK_CMB^2
        """
        if r < 0:
            raise ValueError(f"r must be >= 0, got {r}")
        if mask is None and self.mask != "none":
            mask = self.mask_map()
        beam = self.beam
        key = ("bmodes", split, int(index))
        alm_t = sht.almxfl(self._b_alm(r * self.cl_tensor, stream(seed, *key, "tensor")), beam)
        alm_l = sht.almxfl(self._b_alm(self.cl_lens, stream(seed, *key, "lensing")), beam)
        tensor_qu = sht.alm2map(alm_t, self.nside, self.lmax)[1:]
        obs = tensor_qu + sht.alm2map(alm_l, self.nside, self.lmax)[1:]
        if self.fg_fraction > 0:
            obs = obs + self.foreground_residual(stream(seed, *key, "foregrounds"))
        if self.noise_depth > 0:
            from ..sky.noise import white_noise

            obs = obs + white_noise(self.nside, self.noise_depth, stream(seed, *key, "noise"), nfield=2)
        fac = dl_factor(self.ell)
        return fac * self._spectrum(tensor_qu, None), fac * self._spectrum(obs, mask)

    def simulate_many(self, r_values: np.ndarray, seed: int, split: str, start: int = 0) -> np.ndarray:
        """Samples ``start .. start + len(r_values) - 1`` of ``split``: array of shape (n, 2, n_ell) (gt, obs)."""
        mask = self.mask_map()
        return np.stack(
            [
                np.stack(self.simulate(float(r), seed, split, start + k, mask))
                for k, r in enumerate(np.asarray(r_values, dtype=float))
            ]
        )

    def clean_many(self, r: float, seed: int, split: str, n: int) -> np.ndarray:
        """``n`` clean tensor D_l at ``r`` (no lensing, noise or foregrounds drawn), shape (n, n_ell)."""
        fac = dl_factor(self.ell)
        out = np.empty((int(n), len(self.ell)))
        for i in range(int(n)):
            alm = sht.almxfl(self._b_alm(r * self.cl_tensor, stream(seed, "bmodes", split, i, "tensor")), self.beam)
            out[i] = fac * self._spectrum(sht.alm2map(alm, self.nside, self.lmax)[1:], None)
        return out

    def foreground_cl(self, n_mc: int, seed: int) -> np.ndarray:
        """Mean C_l^BB of the foreground residual over ``n_mc`` skies (estimated as the data), shape (n_ell,)."""
        if self.fg_fraction == 0 or n_mc == 0:
            return np.zeros(len(self.ell))
        mask = self.mask_map()
        return np.mean(
            [
                self._spectrum(self.foreground_residual(stream(seed, "bmodes", "fg_model", k, "foregrounds")), mask)
                for k in range(int(n_mc))
            ],
            axis=0,
        )

    def model(self, cl_fg: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Expected spectra of the data vector, C_l in uK^2 on :attr:`ell` (inputs of the exact likelihood).

        Returns
        -------
        dict
            ``ell``; ``cl_tensor_obs`` = C^t b^2 (r = 1, as in both truth and observation); ``cl_lens_obs`` =
            C^lens b^2; ``nl`` = white noise; ``cl_fg``; ``cl_other`` = lensing + noise + foreground; ``fsky``.
        """
        ell = self.ell
        b2 = self.beam[ell] ** 2
        cl_fg = np.zeros(len(ell)) if cl_fg is None else np.asarray(cl_fg, dtype=float)
        nl = np.full(len(ell), self.noise_cl)
        lens = self.cl_lens[ell] * b2
        return {
            "ell": ell,
            "cl_tensor_obs": self.cl_tensor[ell] * b2,
            "cl_lens_obs": lens,
            "nl": nl,
            "cl_fg": cl_fg,
            "cl_other": lens + nl + cl_fg,
            "fsky": self.fsky,
        }

    def settings(self) -> dict:
        """The scalar settings (JSON-ready), without the templates."""
        return {
            f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
            for f in dataclasses.fields(self)
            if f.name not in ("cl_tensor", "cl_lens")
        }
