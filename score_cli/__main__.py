"""`python -m score_cli` (and `accelerate launch -m score_cli`) runs the CLI."""

from score_cli.cli import main

main()
