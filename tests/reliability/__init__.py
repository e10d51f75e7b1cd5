"""The reliability suite: `python -m tests.reliability.suite --mode short|full`."""
