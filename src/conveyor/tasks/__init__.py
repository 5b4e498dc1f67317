"""Built-in task catalogues."""
