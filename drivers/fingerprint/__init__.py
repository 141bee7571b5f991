"""Fingerprint sensors with on-sensor 1:N search: the driver over pyfingerprint (sensor.py), and in
emulator/ a ZhianTec module emulated on a real pty (its state machine, wire format and console)."""
