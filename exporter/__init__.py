"""Prometheus exporter for the archive downloads of a VMS Client API."""

__version__ = "0.1.0"
