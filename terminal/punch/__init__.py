"""One punch path for every method: the punch service, the schedule rules (kinds, lateness, windows, holidays),
the punch history the rules look at, and the roster of who may punch.
"""
