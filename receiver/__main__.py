"""`python -m receiver` is the `mms-receiver` command."""

from receiver.cli import main

main()
