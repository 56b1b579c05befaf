"""Audio decoding and signal measurements (levels, silences, resampling)."""
