"""Words for people, decided once: counts with their nouns."""

from __future__ import annotations


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """'1 epoch', '3 epochs', '1,000 samples', '2 runs': the count with its noun, agreed."""
    return f"{count:,} {noun if count == 1 else plural_form or noun + 's'}"
