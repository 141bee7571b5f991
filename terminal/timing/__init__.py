"""Time that is right and provably so: raw clock readings at a punch, trusted samples, the per-boot fit and every
punch's UTC interval.
"""
