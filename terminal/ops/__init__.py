"""What IT staff see: self-tests (health), faults, and the status report of every part.
"""
