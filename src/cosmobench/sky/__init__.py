"""Physics of the microwave sky (cosmology, CMB, foregrounds, instrument, spherical transforms), usable alone."""
