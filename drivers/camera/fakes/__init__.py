"""Test doubles of third-party camera libraries, shipped with the package like gpiozero's mock pins.

This folder is meant to be put on ``sys.path`` (``FAKES_DIR``), so that ``import picamera2`` finds the
emulation in ``picamera2/`` exactly where Raspberry Pi OS's python3-picamera2 would be: the source in
drivers/camera/picamera2.py runs unchanged against it, in tests and in a daemon started with
``PYTHONPATH=<FAKES_DIR>``. Nothing in the project imports it otherwise.
"""

from pathlib import Path

FAKES_DIR = Path(__file__).resolve().parent
