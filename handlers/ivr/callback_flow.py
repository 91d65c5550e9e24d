"""The callback-capture IVR (seed 002 §15): the caller hears why nobody answers, then leaves
the number to be called back on — their own with one key, or another one typed in — hears it
read back, confirms, and the request lands on the tenant's callback list.

Variables the engine sets before the start: `announcement` (the prompt saying why: closed or
busy) and `caller` (the caller ID's digits, empty when withheld). The run stores one
`callback` entry whose `number` is the number to call back.
"""

from __future__ import annotations

from handlers.ivr.flow import Branch, Collect, Flow, Hangup, Play, Set, Store

# A number a callback can reach: a Korean mobile, landline or representative number.
CALLBACK_NUMBER = r"^(0[0-9]{8,10}|1[5-9][0-9]{6})$"

CALLBACK = Flow(
    name="callback",
    start="menu",
    steps={
        # "1" alone takes the caller's own number; anything else is a number ended by #.
        "menu": Collect(prompts=("@announcement", "callback_menu"), into="entry", next="which",
                        on_failure="goodbye", max_digits=12, terminator="#",
                        valid=rf"^1$|{CALLBACK_NUMBER}", complete=r"^1$",
                        first_digit_seconds=6.0, inter_digit_seconds=4.0, attempts=3,
                        invalid_prompt="callback_invalid"),
        "which": Branch("entry", (("1", "own_number"),), default="typed_number"),
        "own_number": Branch("caller", ((CALLBACK_NUMBER[1:-1], "take_caller"),),
                             default="caller_unusable"),
        # A withheld or foreign caller ID cannot be called back: ask for a number instead.
        "caller_unusable": Play(("callback_invalid",), next="menu"),
        "take_caller": Set("number", "{caller}", next="confirm"),
        "typed_number": Set("number", "{entry}", next="confirm"),
        "confirm": Collect(prompts=("callback_number_is", "{number}", "callback_confirm"),
                           into="answer", next="decide", on_failure="goodbye", max_digits=1,
                           terminator=None, valid=r"^[12]$", first_digit_seconds=6.0,
                           attempts=3, invalid_prompt="callback_invalid"),
        "decide": Branch("answer", (("1", "store"),), default="menu"),
        "store": Store("callback", next="saved"),
        "saved": Play(("callback_saved",), next="done"),
        "done": Hangup("callback_requested"),
        "goodbye": Play(("callback_goodbye",), next="gave_up"),
        "gave_up": Hangup("no_input"),
    },
)
