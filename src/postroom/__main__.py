"""`python -m postroom` runs the CLI."""

from postroom.cli.app import main

main()
