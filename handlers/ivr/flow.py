"""A small declarative IVR: named steps (play, collect, branch, set, store, hang up) run as a
sans-I/O state machine.

A `Flow` is data: a dict of steps, each naming the step that follows. A `FlowRun` walks it
for one call. Its inputs are `start(now)`, `digit(d, now)`, `played(play_id, now)` (a prompt
finished) and `handle_timer(now)` when `get_timer()` says; it never reads a clock and never
touches the media. What it wants done comes out of `next_action()`: play one prompt (prompts
are played one after another, each with its own id, so a late `played` of a prompt that was
cut off is recognised and ignored), stop playing, store an entry, hang up. Tests drive it on
a fake clock; the call engine drives it with the media process's events.

Prompt references in steps are prompt names, or `{var}` for a variable's value read out digit
by digit (`digit_0` … `digit_9`), or `@var` for the prompt named by a variable.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

DIGITS = "0123456789*#ABCD"


# -- steps -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Play:
    """Play prompts in order, then go on; a key pressed during them is kept for the next
    `Collect` when `barge_in` (and cuts the prompts short)."""

    prompts: tuple[str, ...]
    next: str
    barge_in: bool = False


@dataclass(frozen=True, slots=True)
class Collect:
    """Play `prompts` (a key interrupts them) and gather keys into `into`.

    The entry ends with `terminator` (not kept), when `max_digits` keys were pressed, at once
    when what was entered matches `complete` (e.g. a one-key choice in a longer entry), or
    after `inter_digit_seconds` without a key. Nothing pressed `first_digit_seconds` after the
    prompts ended is a timeout. An entry not matching `valid`, or a timeout, is an attempt
    lost: `invalid_prompt` is played and the step starts again, up to `attempts` times, then
    the flow goes to `on_failure`.
    """

    prompts: tuple[str, ...]
    into: str
    next: str
    on_failure: str
    max_digits: int = 1
    terminator: str | None = "#"
    valid: str = r"^.+$"
    complete: str | None = None
    first_digit_seconds: float = 5.0
    inter_digit_seconds: float = 3.0
    attempts: int = 3
    invalid_prompt: str | None = None


@dataclass(frozen=True, slots=True)
class Branch:
    """Go to the step of the first pattern (a full-match regex) the variable's value matches."""

    var: str
    cases: tuple[tuple[str, str], ...]
    default: str


@dataclass(frozen=True, slots=True)
class Set:
    """`var` := `value`, where `{name}` in `value` is another variable's value."""

    var: str
    value: str
    next: str


@dataclass(frozen=True, slots=True)
class Store:
    """Hand the variables to the caller of the flow (`StoreEntry`) under `kind`."""

    kind: str
    next: str


@dataclass(frozen=True, slots=True)
class Hangup:
    """End the call; `outcome` says how, for the call record."""

    outcome: str


Step = Play | Collect | Branch | Set | Store | Hangup


@dataclass(frozen=True, slots=True)
class Flow:
    """A named set of steps and the one that starts."""

    name: str
    start: str
    steps: Mapping[str, Step]

    def __post_init__(self) -> None:
        missing = [(name, target) for name, step in self.steps.items()
                   for target in _targets(step) if target not in self.steps]
        if self.start not in self.steps:
            missing.append(("start", self.start))
        if missing:
            raise ValueError(f"flow {self.name}: steps lead to unknown steps {missing}")
        for name, step in self.steps.items():
            patterns = [step.valid, step.complete] if isinstance(step, Collect) else \
                [p for p, _ in step.cases] if isinstance(step, Branch) else []
            for pattern in patterns:
                if pattern is not None:
                    re.compile(pattern)  # a broken pattern fails here, not during a call
            if isinstance(step, Collect) and (step.max_digits < 1 or step.attempts < 1):
                raise ValueError(f"flow {self.name}: step {name} collects nothing")


def _targets(step: Step) -> list[str]:
    if isinstance(step, Play | Set | Store):
        return [step.next]
    if isinstance(step, Collect):
        return [step.next, step.on_failure]
    if isinstance(step, Branch):
        return [target for _, target in step.cases] + [step.default]
    return []


# -- actions ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlayPrompt:
    """Play the prompt `prompt`; `played(play_id)` is expected when it ends."""

    prompt: str
    play_id: int


@dataclass(frozen=True, slots=True)
class StopPlaying:
    """Cut the prompt in progress short (no `played` will matter for it)."""


@dataclass(frozen=True, slots=True)
class StoreEntry:
    """Keep what the caller entered (e.g. a callback request)."""

    kind: str
    values: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class EndCall:
    """The flow is over: hang up. `outcome` is the last `Hangup` step's, or `caller_hung_up`."""

    outcome: str


Action = PlayPrompt | StopPlaying | StoreEntry | EndCall


# -- the run ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _Collecting:
    step: Collect
    attempt: int = 1
    entered: str = ""
    prompts_done: bool = False


@dataclass(slots=True)
class FlowRun:
    """One call's walk through a flow."""

    flow: Flow
    variables: dict[str, str] = field(default_factory=dict)
    step_name: str = ""
    stored: list[str] = field(default_factory=list)  # kinds stored so far
    outcome: str | None = None  # set when the run is over
    _queue: deque[str] = field(default_factory=deque)  # prompts still to play
    _playing: int | None = None  # id of the prompt playing now
    _play_ids: int = 0
    _collect: _Collecting | None = None
    _typed_ahead: str = ""  # keys pressed during a barge-in Play, for the next Collect
    _timer: float | None = None
    _out: deque[Action] = field(default_factory=deque)
    _now: float = 0.0

    # -- outputs --------------------------------------------------------------------------

    def next_action(self) -> Action | None:
        """The next thing to do, or None."""
        return self._out.popleft() if self._out else None

    def get_timer(self) -> float | None:
        """When `handle_timer` should run next, or None."""
        return self._timer

    @property
    def finished(self) -> bool:
        return self.outcome is not None

    # -- inputs ---------------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Begin at the flow's first step."""
        self._now = now
        self._enter(self.flow.start)

    def digit(self, key: str, now: float) -> None:
        """The caller pressed `key` (RFC 4733 or SIP INFO)."""
        self._now = now
        if self.finished or key not in DIGITS:
            return
        step = self.flow.steps[self.step_name]
        collecting = self._collect
        if collecting is None:
            if isinstance(step, Play) and step.barge_in:
                self._typed_ahead += key
                self._stop_prompts()
                self._enter(step.next)
            return  # keys during a prompt without barge-in are ignored
        self._stop_prompts()  # barge-in: the first key cuts the prompts
        collecting.prompts_done = True
        self._key(collecting, key)

    def played(self, play_id: int, now: float) -> None:
        """The prompt `play_id` finished playing."""
        self._now = now
        if self.finished or play_id != self._playing:
            return  # cut short earlier, or not ours
        self._playing = None
        if self._queue:
            self._play_next()
            return
        step = self.flow.steps[self.step_name]
        if isinstance(step, Play):
            self._enter(step.next)
        elif self._collect is not None and not self._collect.prompts_done:
            self._collect.prompts_done = True
            self._timer = now + self._collect.step.first_digit_seconds
        elif isinstance(step, Hangup):
            self._finish(step.outcome)

    def handle_timer(self, now: float) -> None:
        """A deadline passed: an entry ended by silence, or no key at all."""
        self._now = now
        if self._timer is None or now < self._timer or self.finished:
            return
        self._timer = None
        collecting = self._collect
        if collecting is None:
            return
        if collecting.entered:
            self._judge(collecting)
        else:
            self._attempt_lost(collecting)

    def caller_hung_up(self, now: float) -> None:
        """The caller went away: the run ends where it is (nothing more is stored)."""
        self._now = now
        if not self.finished:
            self._playing = None
            self._queue.clear()
            self._timer = None
            self.outcome = "caller_hung_up"

    # -- steps ----------------------------------------------------------------------------

    def _enter(self, name: str) -> None:
        # Branch, Set and Store go straight on; a loop of them would never end, so count.
        for _ in range(len(self.flow.steps) + 1):
            self.step_name = name
            step = self.flow.steps[name]
            self._collect = None
            self._timer = None
            if isinstance(step, Play):
                self._prompts(step.prompts)
                if self._playing is None:  # nothing to play
                    name = step.next
                    continue
                return
            if isinstance(step, Collect):
                self._begin_collect(_Collecting(step))
                return
            if isinstance(step, Branch):
                value = self.variables.get(step.var, "")
                name = next((target for pattern, target in step.cases
                             if re.fullmatch(pattern, value)), step.default)
            elif isinstance(step, Set):
                self.variables[step.var] = _expand(step.value, self.variables)
                name = step.next
            elif isinstance(step, Store):
                self.stored.append(step.kind)
                self._out.append(StoreEntry(step.kind, dict(self.variables)))
                name = step.next
            else:  # Hangup: ends once its goodbye (if any) has played
                self._finish(step.outcome)
                return
        raise RuntimeError(f"flow {self.flow.name}: steps loop without playing or collecting")

    def _begin_collect(self, collecting: _Collecting) -> None:
        self._collect = collecting
        self._prompts(collecting.step.prompts)
        typed, self._typed_ahead = self._typed_ahead, ""
        if self._playing is None:
            collecting.prompts_done = True
            self._timer = self._now + collecting.step.first_digit_seconds
        for key in typed:
            if self._collect is not collecting:
                break
            self.digit(key, self._now)

    def _key(self, collecting: _Collecting, key: str) -> None:
        step = collecting.step
        if step.terminator is not None and key == step.terminator:
            if collecting.entered:
                self._judge(collecting)
            else:
                self._attempt_lost(collecting)
            return
        collecting.entered += key
        if len(collecting.entered) >= step.max_digits or (
                step.complete is not None and re.fullmatch(step.complete, collecting.entered)):
            self._judge(collecting)
        else:
            self._timer = self._now + step.inter_digit_seconds

    def _judge(self, collecting: _Collecting) -> None:
        step = collecting.step
        if re.fullmatch(step.valid, collecting.entered):
            self.variables[step.into] = collecting.entered
            self._enter(step.next)
        else:
            self._attempt_lost(collecting)

    def _attempt_lost(self, collecting: _Collecting) -> None:
        step = collecting.step
        self._timer = None
        if collecting.attempt >= step.attempts:
            self._enter(step.on_failure)
            return
        retry = _Collecting(step, collecting.attempt + 1)
        self._stop_prompts()
        if step.invalid_prompt is not None:
            self._queue.append(step.invalid_prompt)
        self._begin_collect(retry)

    def _finish(self, outcome: str) -> None:
        if self._playing is not None:
            return  # `played` finishes it
        self.outcome = outcome
        self._timer = None
        self._out.append(EndCall(outcome))

    # -- prompts --------------------------------------------------------------------------

    def _prompts(self, refs: tuple[str, ...]) -> None:
        for ref in refs:
            self._queue.extend(_resolve(ref, self.variables))
        if self._playing is None and self._queue:
            self._play_next()

    def _play_next(self) -> None:
        self._play_ids += 1
        self._playing = self._play_ids
        self._out.append(PlayPrompt(self._queue.popleft(), self._play_ids))

    def _stop_prompts(self) -> None:
        self._queue.clear()
        if self._playing is not None:
            self._playing = None
            self._out.append(StopPlaying())


def _expand(template: str, variables: Mapping[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: variables.get(m.group(1), ""), template)


def _resolve(ref: str, variables: Mapping[str, str]) -> list[str]:
    """Prompt names for one reference: a name, `{var}` read digit by digit, `@var` a name."""
    if ref.startswith("{") and ref.endswith("}"):
        return [f"digit_{ch}" for ch in variables.get(ref[1:-1], "") if ch.isdigit()]
    if ref.startswith("@"):
        name = variables.get(ref[1:], "")
        return [name] if name else []
    return [ref]
