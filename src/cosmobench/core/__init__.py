"""Shared machinery with no physics: seeds, executors, atomic I/O and the training loop."""
