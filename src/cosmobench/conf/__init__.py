"""Packaged YAML configurations (read only by cosmobench.cli)."""
