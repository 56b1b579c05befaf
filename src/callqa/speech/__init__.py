"""Speech content: transcription per leg, conversation metrics, phrase rules and redaction."""
