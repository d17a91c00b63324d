"""A user's choice among the values of a `StrEnum`: the member, or an error naming the choices.

Settings such as the plan policy or the profile kind arrive as text (a flag, a TOML value, a
management call); each enum's `parse` reads its text here, so every such setting refuses a
misspelling the same way: `unknown plan policy 'fast': choose one of auto, follow, fixed`.
"""

from __future__ import annotations

import enum
from typing import TypeVar

Choice = TypeVar("Choice", bound=enum.StrEnum)


def parse_choice(kinds: type[Choice], text: str, what: str) -> Choice:
    """The member of `kinds` whose value is `text`; ValueError naming `what` and the choices."""
    try:
        return kinds(text)
    except ValueError:
        choices = ", ".join(kind.value for kind in kinds)
        raise ValueError(f"unknown {what} {text!r}: choose one of {choices}") from None
