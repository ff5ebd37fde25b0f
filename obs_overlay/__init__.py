"""The OBS browser-source overlay: an HTTP + WebSocket server and its page."""
