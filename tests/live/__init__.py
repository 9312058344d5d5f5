"""Live tests against the real services: marked ``live``, skipped without keys."""
