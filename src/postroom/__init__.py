"""Postroom: a self-hosted email delivery platform with compliance archiving (Email BCC)."""

__version__ = "0.1.0"
__all__ = ["__version__"]
