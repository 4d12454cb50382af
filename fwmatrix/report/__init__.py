"""Reports: findings, reviews and lab results in, text for people and machines out.

text writes the terminal tables, Markdown and versioned JSON; ci writes
JUnit XML and SARIF 2.1.0 from one neutral shape shared by every command.
"""

import json


def json_text(data: dict) -> str:
    """A report's JSON as every command writes it (`--format json`)."""
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
