"""`python -m bnjobs`: the same command line as the `bnjobs` console script."""

from bnjobs.cli import main

main()
