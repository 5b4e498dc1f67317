"""Composition roots: each service wires settings and the core together."""
