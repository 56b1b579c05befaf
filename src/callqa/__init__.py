"""callqa: objective quality analysis of VoIP calls."""

__version__ = "0.1.0"
