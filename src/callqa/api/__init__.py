"""The HTTP service: FastAPI app (``main``), dependencies (``deps``), one router per resource (``routes``)."""
