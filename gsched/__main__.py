"""`python -m gsched` runs the CLI."""

from gsched.cli import main

main()
