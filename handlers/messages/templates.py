"""Message templates: `{변수}` placeholders, `{{` / `}}` for literal braces.

A placeholder is `{name}` where name is 1-30 characters without braces or white space.
`{{` and `}}` always stand for one literal brace; any other lone brace is kept as typed, so
text such as `:-}` needs no escaping. Pure and I/O-free.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["Template", "parse_template"]

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}\s]{1,30})\}")


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed template: literal parts interleaved with variable names."""

    # parts[i] is literal text when i is even, a variable name when i is odd.
    parts: tuple[str, ...]
    # Where each variable starts in the source text (for error positions), same order.
    positions: tuple[int, ...]

    @property
    def variables(self) -> tuple[str, ...]:
        """Variable names in order of first use, without repeats."""
        return tuple(dict.fromkeys(self.parts[1::2]))

    @property
    def literal(self) -> str:
        """The text with every variable removed (what is fixed for all recipients)."""
        return "".join(self.parts[0::2])

    def render(self, values: Mapping[str, str]) -> str:
        """Substitute every variable; a KeyError names a variable missing from `values`."""
        return "".join(
            part if i % 2 == 0 else values[part] for i, part in enumerate(self.parts)
        )


def parse_template(text: str) -> Template:
    """Split `text` into literal parts and `{name}` variables, resolving `{{` and `}}`."""
    parts: list[str] = []
    positions: list[int] = []
    literal: list[str] = []
    last = 0
    for match in _TOKEN.finditer(text):
        literal.append(text[last : match.start()])
        last = match.end()
        name = match.group(1)
        if name is None:
            literal.append(match.group(0)[0])
            continue
        parts.append("".join(literal))
        parts.append(name)
        positions.append(match.start())
        literal = []
    literal.append(text[last:])
    parts.append("".join(literal))
    return Template(tuple(parts), tuple(positions))
