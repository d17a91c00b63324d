"""Java properties syntax as `java.util.Properties.load` reads it (TorchServe's config)."""

from __future__ import annotations

import pytest

from packrat.server.properties import PropertiesError, duplicates, parse_properties


def test_separators_and_whitespace() -> None:
    text = "a=1\nb: 2\nc 3\n  d = 4 \ne\t:\t5\nf\ng=\n"
    assert parse_properties(text) == {
        "a": "1",
        "b": "2",
        "c": "3",
        "d": "4 ",  # trailing whitespace is kept, as in Java
        "e": "5",
        "f": "",
        "g": "",
    }


def test_only_the_first_separator_splits() -> None:
    assert parse_properties("url=http://h:8080/x=y\nk:a:b\n") == {
        "url": "http://h:8080/x=y",
        "k": "a:b",
    }


def test_comments_and_blank_lines() -> None:
    text = "# comment\n! also\n   # indented\n\nkey=value # not a comment\n"
    assert parse_properties(text) == {"key": "value # not a comment"}


def test_continuation_lines_drop_leading_whitespace() -> None:
    text = 'models={\\\n  "m": {\\\n      "1.0": {"batchSize": 4}\\\n  }\\\n}\nnext=1\n'
    assert parse_properties(text) == {"models": '{"m": {"1.0": {"batchSize": 4}}}', "next": "1"}


def test_comment_lines_do_not_continue_and_even_backslashes_do_not_either() -> None:
    text = "# comment \\\nkey=a\\\\\nother=b\n"
    assert parse_properties(text) == {"key": "a\\", "other": "b"}


def test_escapes_in_keys_and_values() -> None:
    text = "a\\=b\\ c=x\\ty\\u0041\\n\\:z\nwin=C:\\\\temp\n"
    assert parse_properties(text) == {"a=b c": "x\tyA\n:z", "win": "C:\\temp"}


def test_bad_unicode_escape_names_the_line() -> None:
    with pytest.raises(PropertiesError, match="line 2"):
        parse_properties("ok=1\nbad=\\u12\n")


def test_last_value_wins_and_duplicates_are_listed() -> None:
    text = "a=1\nb=2\na=3\na=4\n"
    assert parse_properties(text) == {"a": "4", "b": "2"}
    assert duplicates(text) == ["a"]


def test_crlf_line_ends() -> None:
    assert parse_properties("a=1\r\nb=\\\r\n  2\r\n") == {"a": "1", "b": "2"}


def test_only_java_line_ends_end_lines() -> None:
    assert parse_properties("a=x\u2028y\x0bz\rb=1") == {"a": "x\u2028y\x0bz", "b": "1"}
