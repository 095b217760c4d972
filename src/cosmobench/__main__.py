"""``python -m cosmobench``: the same entry point as the ``cosmobench`` console script."""

import sys

from cosmobench.cli import main

if __name__ == "__main__":
    sys.exit(main())
