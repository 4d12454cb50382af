"""Reviewing a matrix: a change between two matrices, and the matrix on its own.

diff compares two matrices' intents as packet spaces (what a change opens
and closes, per firewall and opening); lint reports findings about one
matrix (DMZ towards the internet, redundant, too broad, unused).
"""
