"""OpenAI engines: realtime translation and prompted realtime voice models."""
