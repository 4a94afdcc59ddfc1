"""`python cli.py ...` from a checkout: the same command line as `miss-screen` (engine/cli.py)."""

from engine.cli import main

if __name__ == "__main__":
    main()
