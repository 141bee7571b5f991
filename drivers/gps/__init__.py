"""GPS time through gpsd (Debian's gpsd package): the receiver's fix time, read over gpsd's JSON protocol.

    gpsd.py       a small client of gpsd's documented JSON protocol on TCP 2947 (VERSION, ?WATCH, TPV)

There is no emulator here: tests run the real gpsd under gpsfake (Debian's gpsd-clients) replaying NMEA.
How far a fix time can be trusted at the moment it arrives (sentence latency) is terminal/timing/gps.py's
business; the driver reports what gpsd said and when each line arrived.
"""

from drivers.gps.gpsd import GpsError, GpsFix, read_fix

__all__ = ["GpsError", "GpsFix", "read_fix"]
