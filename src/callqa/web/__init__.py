"""The web pages: sign-in sessions, call list, call detail, trends (server-rendered, every asset in the package)."""
