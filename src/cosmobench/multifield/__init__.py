"""Cosmological parameter inference from 2D multifield maps in the CAMELS Multifield Dataset (CMD) format.

Modules: :mod:`~cosmobench.multifield.cmd` (reader, names, split, normalisation), :mod:`~.simulate` (offline
simulator writing the same files) with :mod:`~.power` (CAMB HMcode P(k) table), :mod:`~.network` (``o3_err``),
:mod:`~.loss` (moment loss), :mod:`~.augment` (dihedral group), :mod:`~.train` (through ``core.train.fit``),
:mod:`~.search` (optuna, RDB storage), :mod:`~.evaluate`, :mod:`~.robustness`, :mod:`~.fields`,
:mod:`~.calibration` (coverage, TARP, NPE), :mod:`~.figures`, :mod:`~.report`, :mod:`~.dataset` (writing, sizing
and identifying a dataset), :mod:`~.settings` (every stage's settings) and :mod:`~.stages` (the ``cosmobench
multifield`` stages). Nothing is imported here, so ``import cosmobench.multifield`` stays cheap; see docs/multifield.md.
"""
