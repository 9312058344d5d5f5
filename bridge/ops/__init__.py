"""Operating the bridge: logging and metrics."""
