"""Several instances over Redis: shared call state and cross-instance audio."""
