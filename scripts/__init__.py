"""Tools for people who run a stack: the smoke test (smoke_test.py and smoke/)."""
