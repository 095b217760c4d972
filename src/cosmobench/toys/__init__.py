"""Toy problems with exact answers, used to test samplers and posterior estimators without training data.

- :class:`GaussianSpectra` (in :mod:`cosmobench.toys.gaussian_spectra`): Gaussian vectors with their exact
  score at every diffusion time of an SDE.
- :class:`LinearGaussian` (in :mod:`cosmobench.toys.linear_gaussian`): a linear-Gaussian simulator with its
  exact posterior.
"""

from .gaussian_spectra import GaussianSpectra
from .linear_gaussian import LinearGaussian

__all__ = ["GaussianSpectra", "LinearGaussian"]
