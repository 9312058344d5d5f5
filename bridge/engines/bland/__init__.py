"""Bland's Live Translation API (``ENGINE=bland``)."""
