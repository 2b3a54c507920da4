"""The HTTP server (server.py) and its TLS and basic-auth configuration (config.py)."""
