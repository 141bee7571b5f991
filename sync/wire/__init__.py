"""What both sides agree on: the formats and signatures of the messages between a terminal and the central server
(roster bundles, time samples, offline exports). Imports nothing of the terminal but the chain code.
"""
