"""`python -m raygenre.grid NAME`: the command (raygenre.sweep.cli holds it)."""

import sys

from raygenre.sweep.cli import main

if __name__ == "__main__":
    sys.exit(main())
