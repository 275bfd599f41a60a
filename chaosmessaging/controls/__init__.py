"""Chaos Toolkit controls: bring the embedded stack up before a run, revert faults after it."""
