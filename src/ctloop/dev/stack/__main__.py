"""`python -m ctloop.dev.stack up | down | status` (the Makefile's `up`, `down`, `stack-status`)."""

from ctloop.dev.stack.cli import main

if __name__ == "__main__":
    main()
