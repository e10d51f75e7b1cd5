"""Commands of features built on the core; receiver.cli registers each module with register()."""
