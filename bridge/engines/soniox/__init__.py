"""Soniox real-time translation (``ENGINE=soniox``)."""
