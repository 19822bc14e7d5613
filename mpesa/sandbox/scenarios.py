"""What the simulated customer does, chosen by the last two digits of ``input_CustomerMSISDN`` (C2B only).

========  ==========================================================================  =========  =====
Suffix    Behaviour                                                                   Code       HTTP
========  ==========================================================================  =========  =====
``00``    waits for a person to approve or decline on the phone page, else expires    INS-0/5/9  201/401/408
``01``    success after the answer delay (also every suffix not listed here)          INS-0      201
``02``    insufficient balance after the answer delay                                 INS-2006   422
``03``    cancelled by the customer after the answer delay                            INS-5      401
``04``    never answered: request timeout when the push window closes                 INS-9      408
``05``    transaction failed after the answer delay                                   INS-6      401
``06``    internal error after the answer delay                                       INS-1      500
``07``    gateway overloaded, answered at once, nothing recorded                      INS-16     503
``08``    paid (recorded Completed) but the connection is dropped before the answer   (none)     (none)
``09``    success after the long wait (default 95 s, beyond a 90 s client timeout)    INS-0      201
========  ==========================================================================  =========  =====
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Wait(Enum):
    """Which configurable delay a scenario waits for before its answer."""

    NONE = "none"
    ANSWER_DELAY = "answer_delay"
    PUSH_WINDOW = "push_window"
    LONG_WAIT = "long_wait"
    PERSON = "person"
    """Until a person answers on the phone page, at most the push window."""


@dataclass(frozen=True, slots=True)
class Scenario:
    suffix: str
    name: str
    code: str
    """The answer when the wait ends (for ``PERSON``: when the push window closes unanswered)."""
    wait: Wait
    drop_connection: bool = False
    recorded: bool = True
    """``False``: the gateway never took the request (overload); the reference stays free."""


SCENARIOS: dict[str, Scenario] = {
    s.suffix: s
    for s in (
        Scenario("00", "approve or decline on the phone page", "INS-9", Wait.PERSON),
        Scenario("01", "success", "INS-0", Wait.ANSWER_DELAY),
        Scenario("02", "insufficient balance", "INS-2006", Wait.ANSWER_DELAY),
        Scenario("03", "cancelled by customer", "INS-5", Wait.ANSWER_DELAY),
        Scenario("04", "never answered (push window expires)", "INS-9", Wait.PUSH_WINDOW),
        Scenario("05", "transaction failed", "INS-6", Wait.ANSWER_DELAY),
        Scenario("06", "internal error", "INS-1", Wait.ANSWER_DELAY),
        Scenario("07", "overloaded", "INS-16", Wait.NONE, recorded=False),
        Scenario("08", "paid, connection dropped before the answer", "INS-0", Wait.ANSWER_DELAY, drop_connection=True),
        Scenario("09", "success after the long wait", "INS-0", Wait.LONG_WAIT),
    )
}
DEFAULT_SCENARIO = SCENARIOS["01"]


def scenario_for(msisdn: str) -> Scenario:
    """The scenario for a (valid, 12-digit) customer number."""
    return SCENARIOS.get(msisdn[-2:], DEFAULT_SCENARIO)
