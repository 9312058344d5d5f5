"""GPT Translator's Realtime Translation API (``ENGINE=gpt-translator``)."""
