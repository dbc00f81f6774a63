"""`python -m gearshift.cli`: the `gearshift` command."""

from gearshift.cli import main

main()
