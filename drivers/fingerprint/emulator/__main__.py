"""`python -m drivers.fingerprint.emulator`: the emulator as a program (console.py holds it)."""

from drivers.fingerprint.emulator.console import main

raise SystemExit(main())
