"""presensi-edge: the terminal daemon, its punch log, clocks, recognition, schedule, health and CLI."""

__version__ = "0.1.0"
