"""ZKTeco port-4370 protocol, device side: codec, sessions, TCP+UDP server (see server.py)."""
