"""`python -m raygenre.grid NAME`: the command (raygenre.sweep.cli holds it)."""

from raygenre.sweep.cli import exit_now, main

if __name__ == "__main__":
    exit_now(main())
