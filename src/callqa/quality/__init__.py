"""Quality models (VAD, DNSMOS, NISQA) and fault detectors."""
