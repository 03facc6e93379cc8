"""A small hand-written reader for AliEn-style JDL: ``Key = value;`` statements.

Grammar (whitespace and newlines are allowed between any two tokens)::

    document  := statement*
    statement := KEY '=' value ';'
    value     := STRING | NUMBER | BOOLEAN | '{' [scalar (',' scalar)*] '}'
    scalar    := STRING | NUMBER | BOOLEAN

- ``KEY`` is a letter or ``_`` followed by letters, digits or ``_``; keys are compared
  case-insensitively and may appear only once.
- ``STRING`` is double-quoted on one line, with the escapes ``\\"``, ``\\\\``, ``\\n``, ``\\t``.
- ``NUMBER`` is an optional ``-`` then digits, an optional fraction and exponent; integers stay
  ``int``, anything with ``.`` or an exponent is a ``float``.
- ``BOOLEAN`` is ``true`` or ``false`` in any case.
- ``#`` and ``//`` start a comment to the end of the line (not inside strings).

Every syntax error is a :class:`~config.request_errors.RequestError` with line and column.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from podgrid.config.request_errors import RequestError

JdlScalar = str | int | float | bool
JdlValue = JdlScalar | tuple[JdlScalar, ...]
TokenKind = Literal["key", "string", "number", "bool", "punct", "end"]

_SPACE_OR_COMMENT = re.compile(r"(?:\s+|#[^\n]*|//[^\n]*)*")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"-?\d+(\.\d+)?([eE][+-]?\d+)?")
_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t"}
_PUNCT = "={},;"


@dataclass(frozen=True)
class Token:
    """One lexical token with its 1-based position and the position just after it."""

    kind: TokenKind
    value: JdlScalar
    text: str
    line: int
    column: int
    end_line: int
    end_column: int


@dataclass(frozen=True)
class JdlEntry:
    """One ``Key = value;`` statement: the key as written, its value and where the key is."""

    key: str
    value: JdlValue
    line: int
    column: int


class _Lexer:
    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source
        self.pos = 0
        self.line = 1
        self.line_start = 0

    def error(self, problem: str, line: int, column: int) -> RequestError:
        return RequestError.single(self.source, problem, line=line, column=column)

    def _advance(self, new_pos: int) -> None:
        chunk = self.text[self.pos : new_pos]
        newlines = chunk.count("\n")
        if newlines:
            self.line += newlines
            self.line_start = self.pos + chunk.rindex("\n") + 1
        self.pos = new_pos

    def _column(self) -> int:
        return self.pos - self.line_start + 1

    def tokens(self) -> list[Token]:
        """The whole text as tokens, ending with one ``end`` token."""
        result: list[Token] = []
        while True:
            match = _SPACE_OR_COMMENT.match(self.text, self.pos)
            self._advance(match.end() if match else self.pos)
            line, column = self.line, self._column()
            if self.pos >= len(self.text):
                result.append(Token("end", "", "end of input", line, column, line, column))
                return result
            kind, value, end = self._one(line, column)
            text = self.text[self.pos : end]
            self._advance(end)
            result.append(Token(kind, value, text, line, column, self.line, self._column()))

    def _one(self, line: int, column: int) -> tuple[TokenKind, JdlScalar, int]:
        char = self.text[self.pos]
        if char in _PUNCT:
            return "punct", char, self.pos + 1
        if char == '"':
            return self._string(line, column)
        if number := _NUMBER.match(self.text, self.pos):
            return "number", self._number(number.group(), line, column), number.end()
        if key := _KEY.match(self.text, self.pos):
            word = key.group()
            if word.lower() in ("true", "false"):
                return "bool", word.lower() == "true", key.end()
            return "key", word, key.end()
        raise self.error(f"unexpected character {char!r}", line, column)

    def _string(self, line: int, column: int) -> tuple[TokenKind, JdlScalar, int]:
        chars: list[str] = []
        pos = self.pos + 1
        while pos < len(self.text):
            char = self.text[pos]
            if char == '"':
                return "string", "".join(chars), pos + 1
            if char == "\n":
                break
            if char == "\\":
                escaped = self.text[pos + 1 : pos + 2]
                if escaped not in _ESCAPES:
                    where = pos - self.line_start + 1
                    raise self.error(f"unknown escape '\\{escaped}' in string", line, where)
                chars.append(_ESCAPES[escaped])
                pos += 2
                continue
            chars.append(char)
            pos += 1
        raise self.error("unterminated string (strings end on the same line)", line, column)

    def _number(self, text: str, line: int, column: int) -> int | float:
        try:
            return float(text) if any(c in text for c in ".eE") else int(text)
        except ValueError as e:  # more digits than Python's int() accepts
            raise self.error(f"number {text[:20]}... is too long", line, column) from e


class _Parser:
    def __init__(self, tokens: list[Token], source: str) -> None:
        self.tokens = tokens
        self.source = source
        self.index = 0

    def _peek(self) -> Token:
        return self.tokens[self.index]

    def _take(self) -> Token:
        token = self.tokens[self.index]
        self.index = min(self.index + 1, len(self.tokens) - 1)
        return token

    def _fail(self, problem: str, token: Token) -> RequestError:
        return RequestError.single(self.source, problem, line=token.line, column=token.column)

    def _expect_punct(self, char: str, what: str) -> Token:
        token = self._peek()
        if token.kind != "punct" or token.value != char:
            raise self._fail(f"expected '{char}' {what}, found {_describe(token)}", token)
        return self._take()

    def document(self) -> list[JdlEntry]:
        entries: list[JdlEntry] = []
        seen: dict[str, JdlEntry] = {}
        while self._peek().kind != "end":
            key = self._take()
            if key.kind != "key":
                raise self._fail(f"expected a key, found {_describe(key)}", key)
            self._expect_punct("=", f"after key {key.text}")
            value, last = self._value(key.text)
            after = self._peek()
            if after.kind != "punct" or after.value != ";":
                problem = f"expected ';' after value of {key.text}, found {_describe(after)}"
                raise RequestError.single(
                    self.source, problem, line=last.end_line, column=last.end_column
                )
            self._take()
            folded = key.text.lower()
            if folded in seen:
                first = seen[folded]
                problem = f"duplicate key {key.text} (first set on line {first.line})"
                raise self._fail(problem, key)
            seen[folded] = JdlEntry(key.text, value, key.line, key.column)
            entries.append(seen[folded])
        return entries

    def _value(self, key: str) -> tuple[JdlValue, Token]:
        token = self._take()
        if token.kind in ("string", "number", "bool"):
            return token.value, token
        if token.kind == "punct" and token.value == "{":
            return self._list(key)
        raise self._fail(f"expected a value for {key}, found {_describe(token)}", token)

    def _list(self, key: str) -> tuple[JdlValue, Token]:
        items: list[JdlScalar] = []
        token = self._take()
        if token.kind == "punct" and token.value == "}":
            return (), token
        while True:
            if token.kind not in ("string", "number", "bool"):
                problem = f"expected a string, number or boolean in the list of {key}"
                raise self._fail(f"{problem}, found {_describe(token)}", token)
            items.append(token.value)
            token = self._take()
            if token.kind == "punct" and token.value == "}":
                return tuple(items), token
            if token.kind != "punct" or token.value != ",":
                problem = f"expected ',' or '}}' in the list of {key}, found {_describe(token)}"
                raise self._fail(problem, token)
            token = self._take()


def _describe(token: Token) -> str:
    if token.kind == "end":
        return "end of input"
    text = token.text if len(token.text) <= 20 else token.text[:17] + "..."
    return f"'{text}'"


def parse_jdl(text: str, *, source: str = "<jdl>") -> list[JdlEntry]:
    """Read JDL text into its statements, in order; raise ``RequestError`` on a syntax error."""
    return _Parser(_Lexer(text, source).tokens(), source).document()
