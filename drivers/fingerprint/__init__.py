"""Fingerprint sensors with on-sensor 1:N search, behind one interface chosen by `[fingerprint] model`:

    base.py       the interface (FingerprintSensor, Capture, SensorError, EnrolmentError)
    registry.py   model name -> class, and from_config(): the only way callers get a sensor
    zhiantec.py   ZhianTec/GROW modules over the unmodified pyfingerprint ("zhiantec", the default)
    capture.py    the capture loop, over any model
    emulator/     a ZhianTec module emulated on a real pty, and the "emulator" model over it
"""
