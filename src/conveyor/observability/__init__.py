"""Logs and metrics, attached to the worker through its hooks."""
