"""Reports: findings, reviews and lab results in, text for people and machines out.

text writes the terminal tables, Markdown and versioned JSON; ci writes
JUnit XML and SARIF 2.1.0 from one neutral shape shared by every command.
"""
