"""The fingerprint feature: the capture service, the sensor's template slots kept in step with the roster, and a
match becoming a punch.
"""
