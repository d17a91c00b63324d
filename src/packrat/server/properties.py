"""Read Java `.properties` text (TorchServe's config.properties) into a dict of strings.

The format is `java.util.Properties.load`'s, which is what TorchServe reads its config with:

- a logical line ends at an end of line not preceded by an odd number of backslashes; a line
  ending in `\\` continues on the next, whose leading whitespace is dropped (so the JSON of
  `models={\\` ... `}` spans lines);
- blank lines, and lines whose first non-blank character is `#` or `!`, are skipped (a
  comment line does not continue, whatever it ends with);
- the key runs to the first unescaped `=`, `:` or whitespace; then whitespace, at most one
  `=` or `:`, and whitespace again are skipped; the rest of the line is the value;
- escapes, in keys and values: `\\t`, `\\n`, `\\r`, `\\f`, `\\uXXXX`; a backslash before any
  other character stands for that character (`\\=`, `\\:`, `\\ `, `\\\\`, `\\#`).

No library on PyPI is needed for forty lines of a stable format (jproperties exists, but it
keeps metadata and comments we have no use for). A key given twice keeps its last value, as
in Java; `duplicates()` lists such keys so the caller can say so.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from packrat.errors import PackratError

_LINE_ENDS = re.compile(r"\r\n|\r|\n")
_WHITESPACE = " \t\f"
_SEPARATORS = "=:"
_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


class PropertiesError(PackratError):
    """The text is not valid properties syntax (a bad `\\u` escape); says the line."""


def parse_properties(text: str) -> dict[str, str]:
    """Every key and value of `text`, in order; the last value of a key given twice."""
    return dict(_pairs(text))


def duplicates(text: str) -> list[str]:
    """Keys given more than once in `text` (each once, in order of their second use)."""
    seen: set[str] = set()
    repeated: list[str] = []
    for key, _ in _pairs(text):
        if key in seen and key not in repeated:
            repeated.append(key)
        seen.add(key)
    return repeated


def _pairs(text: str) -> Iterator[tuple[str, str]]:
    for number, line in _logical_lines(text):
        try:
            yield _split(line)
        except ValueError as exc:
            raise PropertiesError(f"line {number}: {exc}") from None


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """(first physical line number, logical line) for every line that is not blank or a
    comment, continuations joined."""
    lines = _LINE_ENDS.split(text)  # not str.splitlines: Java ends lines at \n, \r only
    index = 0
    while index < len(lines):
        start = index
        line = lines[index].lstrip(_WHITESPACE)
        index += 1
        if not line or line[0] in "#!":
            continue
        while _continues(line) and index < len(lines):
            line = line[:-1] + lines[index].lstrip(_WHITESPACE)
            index += 1
        if _continues(line):  # a last line ending in a backslash: the backslash is dropped
            line = line[:-1]
        yield start + 1, line


def _continues(line: str) -> bool:
    trailing = len(line) - len(line.rstrip("\\"))
    return trailing % 2 == 1


def _split(line: str) -> tuple[str, str]:
    """The key and value of one logical line, escapes decoded."""
    position = 0
    while position < len(line):
        char = line[position]
        if char == "\\":
            position += 2
            continue
        if char in _SEPARATORS or char in _WHITESPACE:
            break
        position += 1
    key = line[:position]
    rest = line[position:].lstrip(_WHITESPACE)
    if rest and rest[0] in _SEPARATORS:
        rest = rest[1:].lstrip(_WHITESPACE)
    return _unescape(key), _unescape(rest)


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    out: list[str] = []
    position = 0
    while position < len(text):
        char = text[position]
        if char != "\\":
            out.append(char)
            position += 1
            continue
        if position + 1 == len(text):  # a lone trailing backslash stands for nothing
            break
        code = text[position + 1]
        if code == "u":
            digits = text[position + 2 : position + 6]
            if len(digits) != 4 or any(d not in "0123456789abcdefABCDEF" for d in digits):
                raise ValueError(f"malformed \\uXXXX escape {text[position : position + 6]!r}")
            out.append(chr(int(digits, 16)))
            position += 6
            continue
        out.append(_ESCAPES.get(code, code))
        position += 2
    return "".join(out)
