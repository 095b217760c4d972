"""Task 2: score-based diffusion on CMB B-mode power spectra and inference of the tensor-to-scalar ratio r.

Modules (imported on demand, so ``import cosmobench.bmodes`` loads neither torch nor CAMB):

- :mod:`~cosmobench.bmodes.dataset`: simulated clean and observed spectra from HEALPix maps.
- :mod:`~cosmobench.bmodes.sde`: VE, VP and sub-VP SDEs; :mod:`~cosmobench.bmodes.samplers`: Euler-Maruyama,
  probability-flow ODE and predictor-corrector samplers.
- :mod:`~cosmobench.bmodes.score_net`, :mod:`~cosmobench.bmodes.losses`, :mod:`~cosmobench.bmodes.train`: the
  (conditional) ScoreNet1D, denoising score matching and training through :func:`cosmobench.core.train.fit`.
- :mod:`~cosmobench.bmodes.conditional`: posterior sampling of clean spectra given observed ones.
- :mod:`~cosmobench.bmodes.likelihood`, :mod:`~cosmobench.bmodes.infer`: exact likelihood, Fisher bound, r estimates.
- :mod:`~cosmobench.bmodes.stages`: the ``cosmobench bmodes`` stages (simulate, train, sample, infer, run).
"""
