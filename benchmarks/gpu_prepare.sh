#!/usr/bin/env bash
# Fills .device/ (git-ignored) with what benchmarks/gpu_check.sh needs on the lent GPU machine, which reaches no
# package registry and whose image (Python 3.12, its own PyTorch) lacks some of cosmobench's dependencies:
#   .device/wheels  the missing packages as x86-64 CPython 3.12 wheels, at the versions installed here;
#   .device/cache   the CAMB-built caches (bench128's spectrum emulator, the multifield P(k) table), built here when
#                   missing (about 5 min of one core for the emulator), so the device spends no time on CAMB.
# About 45 MB; the working tree that travels may hold 64 MiB. Run it here, in the repository's virtual environment,
# then on the device: bash benchmarks/gpu_check.sh, with carry [".device"] (docs/execution.md, "GPU checks").
set -euo pipefail
cd "$(dirname "$0")/.."
# what the device image lacks (its package list: the device tool's KINDS.md); the rest of the dependencies are there
missing=(healpy ducc0 camb pysm3 astropy pyerfa astropy-iers-data hydra-core omegaconf toml)
rm -rf .device/wheels .device/cache
mkdir -p .device/wheels .device/cache/multifield
pins() {  # name==version of each package as installed here
    python - "$@" <<'EOF'
import sys
from importlib.metadata import version

print(*(f"{name}=={version(name)}" for name in sys.argv[1:]))
EOF
}
platforms=()
for tag in manylinux_2_35 manylinux_2_34 manylinux_2_31 manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 \
           manylinux2014 manylinux1; do
    platforms+=(--platform "${tag}_x86_64")
done
# shellcheck disable=SC2046  # pins prints a list of name==version
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d .device/wheels $(pins "${missing[@]}")
# hydra-core's parser runtime is published as a source archive only (pure Python): build its wheel here
python -m pip wheel -q --no-deps -w .device/wheels "$(pins antlr4-python3-runtime)"
python - <<'EOF'
import shutil

import numpy as np

from cosmobench.cli import load_config
from cosmobench.multifield.power import load_or_build_power_table
from cosmobench.sky.cosmology import SpectrumEmulator, default_cache_dir, draw_cosmology

# the emulator that bench128's simulate stage loads (built into the user's cache when missing), and the P(k) table
config = load_config("cmb", ["preset=bench128"])
cosmo = draw_cosmology(np.random.default_rng(0), r=config["simulate"]["r"])
emulator = SpectrumEmulator.for_cosmology(cosmo, 3 * config["nside"] - 1).cache_path(None)
shutil.copy2(emulator, ".device/cache")
load_or_build_power_table(default_cache_dir() / "multifield")
for table in (default_cache_dir() / "multifield").glob("power_table_*.npz"):
    shutil.copy2(table, ".device/cache/multifield")
EOF
du -sh .device/wheels .device/cache
