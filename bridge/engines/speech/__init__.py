"""Text-to-speech backends that engines speaking translated text share."""
