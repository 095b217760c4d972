"""cosmobench: reproducible, comparable machine learning on cosmological data.

Three tasks share one core: CMB component separation on multi-frequency HEALPix skies (:mod:`cosmobench.cmb`),
score-based diffusion on B-mode power spectra (:mod:`cosmobench.bmodes`), and parameter inference from 2D
multifield maps (:mod:`cosmobench.multifield`). Sky physics lives in :mod:`cosmobench.sky`, seeds, executors,
I/O and the training loop in :mod:`cosmobench.core`. Importing the package loads neither Hydra nor matplotlib.
"""

__version__ = "0.1.0"
