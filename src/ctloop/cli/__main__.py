"""`python -m ctloop.cli`: the same entry point as the `ctloop` console script."""

from ctloop.cli import main

main()
