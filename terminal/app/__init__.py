"""Wiring and lifecycle: the daemon, its workers and periodic jobs, the web server, the event bus for the kiosk,
sd_notify, and the demo. Only this wing and the CLI join terminal/, drivers/ and sync/ together.
"""
