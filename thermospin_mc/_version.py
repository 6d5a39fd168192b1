"""The package version, in one place (the package root and the metadata of every
result import it from here)."""

__version__ = "0.1.0"
