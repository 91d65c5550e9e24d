"""Every machine code the code base can answer is declared once, with its status, in
handlers.errors; docs/errors.md is generated from that list."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from handlers import errors, numbers, spreadsheets
from handlers.errors import CODES, DomainError
from handlers.messages import compose

ROOT = Path(__file__).resolve().parents[2]


def _subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_subclasses(sub))
    return out


def _literal_codes() -> set[str]:
    """The first argument of every DomainError(...) written with a string literal."""
    found: set[str] = set()
    for path in [*(ROOT / "handlers").rglob("*.py"), *(ROOT / "daemon").rglob("*.py")]:
        text = path.read_text(encoding="utf-8")
        assert 'DomainError(f"' not in text, f"{path}: a code built at run time"
        found.update(re.findall(r'DomainError\(\s*"([a-z_]+)"', text))
        found.update(re.findall(r'super\(\).__init__\(\s*"([a-z_]+)"', text))
        for status, code in re.findall(r'problem\(\s*(\d{3}),\s*"([a-z_]+)"', text):
            assert CODES[code].status == int(status), f"{path}: {code} answered as {status}"
            found.add(code)
    return found


def test_every_code_raised_in_the_code_base_is_registered() -> None:
    raised = _literal_codes()
    raised |= {c.code for c in _subclasses(compose.ComposeError)}
    raised |= {c.code for c in _subclasses(spreadsheets.SpreadsheetError)}
    raised |= {rule.reason for rule in (*numbers.SENDER_POLICY, *numbers.RECIPIENT_POLICY)
               if rule.reason != "ok"}
    raised |= set(re.findall(r'NumberError\(\s*"([a-z_]+)"',
                             (ROOT / "handlers" / "numbers.py").read_text(encoding="utf-8")))
    missing = sorted(raised - set(CODES))
    assert not missing, f"not in handlers.errors.CODES: {missing}"


def test_spreadsheet_statuses_agree_with_the_registry() -> None:
    for cls in _subclasses(spreadsheets.SpreadsheetError):
        assert CODES[cls.code].status == cls.http_status, cls.code


def test_an_unregistered_code_cannot_be_raised() -> None:
    with pytest.raises(LookupError):
        DomainError("no_such_code_anywhere", "x")
    with pytest.raises(ValueError):
        DomainError("not_found", "x", status=422)  # registered as 404


def test_errors_md_is_generated_from_the_registry() -> None:
    on_disk = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    assert on_disk == errors.markdown(), \
        "docs/errors.md is stale: python -m handlers.errors > docs/errors.md"
