"""PDUs stay frozen values with the dataclass signature, whatever builds their __init__."""

from __future__ import annotations

import dataclasses

import pytest

from protocols.smpp import pdu as P


def _pdu_classes() -> list[type]:
    return [v for v in vars(P).values()
            if isinstance(v, type) and issubclass(v, P.Pdu) and not v.__name__.startswith("_")]


@pytest.mark.parametrize("cls", _pdu_classes(), ids=lambda c: c.__name__)
def test_every_pdu_is_frozen_and_built_from_its_field_defaults(cls: type) -> None:
    made = cls()
    for f in dataclasses.fields(cls):
        assert getattr(made, f.name) == f.default, f.name
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(made, f.name, f.default)
    assert made == cls() and hash(made) == hash(cls())


def test_fields_are_keyword_only_and_checked() -> None:
    with pytest.raises(TypeError):
        P.SubmitSm(1)  # type: ignore[misc]
    with pytest.raises(TypeError, match="bogus"):
        P.SubmitSm(bogus=1)  # type: ignore[call-arg]


def test_a_built_submit_sm_carries_what_it_was_given_and_replace_copies_it() -> None:
    tlvs = (P.Tlv(0x0424, b"payload"),)
    sm = P.SubmitSm(sequence_number=7, source_addr="15880000", destination_addr="01012345678",
                    esm_class=0x40, registered_delivery=1, short_message=b"hi", tlvs=tlvs)
    assert (sm.sequence_number, sm.source_addr, sm.destination_addr, sm.esm_class,
            sm.registered_delivery, sm.short_message, sm.tlvs) == \
        (7, "15880000", "01012345678", 0x40, 1, b"hi", tlvs)
    other = dataclasses.replace(sm, destination_addr="01099998888")
    assert other.destination_addr == "01099998888" and sm.destination_addr == "01012345678"
    assert other.short_message == b"hi" and other.tlvs == tlvs


def test_tlv_keeps_its_positional_signature() -> None:
    assert P.Tlv(1, b"a") == P.Tlv(tag=1, value=b"a")
    with pytest.raises(TypeError):
        P.Tlv(1)  # type: ignore[call-arg]
