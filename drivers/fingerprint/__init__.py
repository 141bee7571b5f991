"""ZhianTec-family UART fingerprint sensors: the driver over pyfingerprint (sensor.py) and a pty emulator
(emulator.py, with the module logic in sensorsim.py and the wire format in protocol.py)."""
