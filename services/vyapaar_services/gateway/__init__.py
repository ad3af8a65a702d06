"""The gateway: the public HTTP API in front of the Order resources (see app.py)."""
