"""The IVR flow on a fake clock: what the caller hears and what is stored, for every way a
caller can press keys (or not)."""

from __future__ import annotations

import pytest

from handlers.ivr.callback_flow import CALLBACK
from handlers.ivr.flow import (
    Action,
    Collect,
    EndCall,
    Flow,
    FlowRun,
    Hangup,
    Play,
    PlayPrompt,
    StopPlaying,
    StoreEntry,
)


class Caller:
    """Drives a run like the media process would: prompts end when their time comes."""

    def __init__(self, run: FlowRun, prompt_seconds: float = 2.0) -> None:
        self.run = run
        self.now = 0.0
        self.prompt_seconds = prompt_seconds
        self.heard: list[str] = []  # prompts started, in order
        self.cut: list[str] = []  # prompts stopped before their end
        self.stored: list[StoreEntry] = []
        self.ended: str | None = None
        self.playing: PlayPrompt | None = None
        self.play_ends = 0.0

    def start(self) -> Caller:
        self.run.start(self.now)
        self._take()
        return self

    def _take(self) -> None:
        while (action := self.run.next_action()) is not None:
            self._do(action)

    def _do(self, action: Action) -> None:
        if isinstance(action, PlayPrompt):
            self.playing = action
            self.heard.append(action.prompt)
            self.play_ends = self.now + self.prompt_seconds
        elif isinstance(action, StopPlaying):
            assert self.playing is not None
            self.cut.append(self.playing.prompt)
            self.playing = None
        elif isinstance(action, StoreEntry):
            self.stored.append(action)
        elif isinstance(action, EndCall):
            self.ended = action.outcome

    def wait(self, seconds: float) -> None:
        """Let time pass: prompts end and timers fire in order."""
        until = self.now + seconds
        while True:
            due = [t for t in (self.play_ends if self.playing else None, self.run.get_timer())
                   if t is not None and t <= until]
            if not due:
                break
            self.now = min(due)
            if self.playing is not None and self.play_ends <= self.now:
                done, self.playing = self.playing, None
                self.run.played(done.play_id, self.now)
            else:
                self.run.handle_timer(self.now)
            self._take()
        self.now = until

    def press(self, keys: str, gap: float = 0.3) -> None:
        for key in keys:
            self.run.digit(key, self.now)
            self._take()
            self.wait(gap)


def callback_run(caller: str = "01012345678") -> Caller:
    return Caller(FlowRun(CALLBACK, {"announcement": "callback_closed", "caller": caller})).start()


def test_one_key_takes_the_callers_own_number_after_reading_it_back():
    c = callback_run()
    c.wait(5)  # announcement and menu heard to the end
    assert c.heard == ["callback_closed", "callback_menu"]
    c.press("1")
    assert c.run.step_name == "confirm"
    c.wait(30)  # the read-back: every digit of 010-1234-5678
    assert c.heard[2:] == ["callback_number_is", *[f"digit_{d}" for d in "01012345678"],
                           "callback_confirm"]
    c.press("1")
    c.wait(5)
    assert [s.values["number"] for s in c.stored] == ["01012345678"]
    assert c.heard[-1] == "callback_saved" and c.ended == "callback_requested"


def test_a_typed_number_ended_by_hash_is_the_one_stored():
    c = callback_run()
    c.wait(1)
    c.press("0212345678#")  # barge-in during the announcement
    assert c.cut == ["callback_closed"]
    assert "callback_menu" not in c.heard
    c.wait(1)
    c.press("1")  # confirm during the read-back
    c.wait(5)
    assert [s.values["number"] for s in c.stored] == ["0212345678"]
    assert c.ended == "callback_requested"


def test_a_typed_number_ends_by_silence_too():
    c = callback_run()
    c.wait(5)
    c.press("01099998888", gap=0.5)
    c.wait(4.0)  # inter-digit timeout: the entry is complete
    assert c.run.step_name == "confirm"
    assert c.run.variables["number"] == "01099998888"


def test_two_at_the_confirmation_asks_for_the_number_again():
    c = callback_run()
    c.wait(5)
    c.press("1")
    c.press("2")
    assert c.run.step_name == "menu"
    assert c.heard[-1] == "callback_closed"
    c.press("0311112222#")
    c.press("1")
    c.wait(5)
    assert [s.values["number"] for s in c.stored] == ["0311112222"]


def test_a_wrong_key_is_told_and_the_menu_played_again():
    c = callback_run()
    c.wait(5)
    c.press("5#")  # neither 1 nor a number
    assert c.heard[-1] == "callback_invalid"
    c.wait(10)
    assert c.heard[-2:] == ["callback_closed", "callback_menu"]
    assert not c.stored


def test_no_key_three_times_says_goodbye_and_hangs_up_storing_nothing():
    c = callback_run()
    c.wait(200)
    assert c.heard.count("callback_menu") == 3
    assert c.heard.count("callback_invalid") == 2
    assert c.heard[-1] == "callback_goodbye"
    assert c.ended == "no_input" and not c.stored


def test_the_wait_for_a_first_key_starts_when_the_prompts_end():
    c = callback_run()
    c.wait(4.0)  # both prompts played (2 s each)
    c.wait(5.9)  # just short of first_digit_seconds (6 s)
    assert c.heard.count("callback_menu") == 1
    c.press("1")
    assert c.run.step_name == "confirm"


def test_a_withheld_caller_id_cannot_be_taken_and_a_number_is_asked_for():
    c = callback_run(caller="")
    c.wait(5)
    c.press("1")
    assert c.heard[-1] == "callback_invalid"
    c.wait(2)
    assert c.run.step_name == "menu" and c.heard[-1] == "callback_closed"
    assert not c.stored


def test_caller_hanging_up_mid_prompt_ends_the_run_with_nothing_stored():
    c = callback_run()
    c.wait(1)
    c.run.caller_hung_up(c.now)
    assert c.run.finished and c.run.outcome == "caller_hung_up"
    assert c.run.get_timer() is None and c.run.next_action() is None
    c.run.digit("1", c.now + 1)  # late keys and prompt ends change nothing
    c.run.played(1, c.now + 2)
    assert c.run.next_action() is None and not c.stored


def test_a_late_played_of_a_cut_prompt_is_ignored():
    c = callback_run()
    c.wait(0.5)
    first = c.playing
    assert first is not None
    c.press("0")  # cuts the announcement; collecting now
    c.run.played(first.play_id, c.now)
    assert c.run.next_action() is None
    assert c.run.step_name == "menu" and c.run._collect is not None
    assert c.run._collect.entered == "0"


def test_keys_during_a_prompt_without_barge_in_are_ignored():
    flow = Flow("t", "hello", {
        "hello": Play(("welcome",), next="ask"),
        "ask": Collect(("question",), into="x", next="bye", on_failure="bye"),
        "bye": Hangup("done"),
    })
    c = Caller(FlowRun(flow)).start()
    c.press("7")
    assert c.cut == [] and c.run.step_name == "hello"
    c.wait(3)
    c.press("4")
    assert c.run.variables == {"x": "4"} and c.ended == "done"


def test_a_flow_naming_a_step_that_does_not_exist_is_refused_at_once():
    with pytest.raises(ValueError, match="unknown steps"):
        Flow("broken", "a", {"a": Play(("x",), next="b")})
