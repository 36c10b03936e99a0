"""Command-line interface: one module per command group; each only parses and calls the library."""
