"""The package's version, in a module of its own: the drivers record it in a run's journal
without importing the package's public face (which imports them)."""

__version__ = "0.1.0"
