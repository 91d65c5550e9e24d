"""Receipts that arrive in the same writer round as their submits' responses are folded into
those outcomes (one write per recipient instead of two); every other receipt is left for the
database's match, so none is dropped here."""

from __future__ import annotations

import uuid

from handlers.messages import carrier_ids
from handlers.messages.dispatch import Claimed, Outcome, PendingDeliver, _fold_receipts


def _ok(carrier: str, mid: str, idx: int = 0) -> Outcome:
    row = Claimed(uuid.uuid4(), idx, uuid.uuid4(), "01000000000", "t", "0212345678", 1)
    return Outcome(row, "submitted", carrier, message_id=mid)


def _receipt(carrier: str, rid: str, stat: str = "DELIVRD") -> PendingDeliver:
    return PendingDeliver(None, 1, carrier, carrier_ids.canonical(rid), stat, "000", None,
                          "01000000000", "0212345678", "")


def _fold(ok: list[Outcome], receipts: list[PendingDeliver]
          ) -> tuple[list[PendingDeliver | None], list[PendingDeliver]]:
    ids = [carrier_ids.canonical(o.message_id or "") for o in ok]
    return _fold_receipts(ok, ids, [carrier_ids.alternate(i) for i in ids], receipts)


def test_a_receipt_pairs_with_its_submit_by_id_or_its_other_base_reading() -> None:
    ok = [_ok("a", "00FF"), _ok("a", "1000"), _ok("a", "12345678")]
    same = _receipt("a", "ff")                     # the id as answered, spelt canonically
    other_base = _receipt("a", "3e8", "UNDELIV")    # 1000 read in hex
    digits_hex = _receipt("a", str(0x12345678))     # a hex id of digits, reported in decimal
    folded, rest = _fold(ok, [digits_hex, other_base, same])
    assert folded == [same, other_base, digits_hex]
    assert rest == []


def test_receipts_of_other_carriers_or_unknown_ids_and_repeats_are_left_for_the_database() -> None:
    ok = [_ok("a", "abc1")]
    first, again = _receipt("a", "abc1"), _receipt("a", "ABC1", "DELIVRD")
    elsewhere, unknown = _receipt("b", "abc1"), _receipt("a", "999")
    folded, rest = _fold(ok, [first, elsewhere, again, unknown])
    assert folded == [first]
    assert rest == [elsewhere, again, unknown]


def test_nothing_to_pair_leaves_every_receipt() -> None:
    receipts = [_receipt("a", "1"), _receipt("a", "2")]
    assert _fold([], receipts) == ([], receipts)
    assert _fold([_ok("a", "3")], []) == ([None], [])
