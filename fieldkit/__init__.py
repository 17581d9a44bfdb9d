"""fieldkit: neural fields from posed photos."""
__version__ = "0.1.0"
