"""Audio as the bridge carries it: PCM16 and μ-law, resamplers, mixing, playout."""
