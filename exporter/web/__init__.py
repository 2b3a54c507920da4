"""The HTTP server (server.py), its routes table (routes.py) and its TLS and basic-auth
configuration (config.py)."""
