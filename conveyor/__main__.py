"""`python -m conveyor` is the `conveyor` command."""

from conveyor.cli import main

main()
