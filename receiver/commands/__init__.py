"""The `mms-receiver` subcommands beyond the core; receiver.cli registers each module."""
