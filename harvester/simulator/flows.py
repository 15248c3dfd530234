"""The call-flow graphs: three small VoiceXML applications that the simulated calls walk through.

Why it exists: a reply's rows are the items of these graphs, so their shape (which item hands a
caller to which, how menus end a visit, how often transfers connect) decides which identities of
the API notes the data satisfies. Each graph is written as readable rows and compiled once into
:class:`Application`; every edge points forward, so a day's calls are walked in a single pass.

Menu items end each visit in exactly one of filled / nomatch / noinput / disconnect and re-prompt
on nomatch / noinput until their attempts are spent, then hand the caller to a fallback item.
Transfer items and terminal goodbye items end every call that reaches them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harvester.simulator.sampling import conditional

MENU, TRANSFER, TERMINAL = "menu", "transfer", "terminal"  # the kinds of FlowItem


@dataclass(frozen=True, slots=True)
class FlowItem:
    """One VoiceXML form item of a graph; indices point forward, so a graph is walked in order."""

    page: str
    form: str
    item: str
    kind: str  # MENU, TRANSFER or TERMINAL
    # menu: how a visit ends (filled, nomatch, noinput, disconnect), as `conditional` shares
    outcomes: tuple[float, ...] = ()
    attempts: int = 1  # visits before a caller who keeps failing is handed to `fallback`
    targets: tuple[int, ...] = ()  # where filled callers go (item indices) ...
    routes: tuple[float, ...] = ()  # ... in these `conditional` shares
    fallback: int = -1
    connect: float = 0.0  # transfer: share of transfer attempts that connect


@dataclass(frozen=True, slots=True)
class Application:
    """One VoiceXML application: its URL (the reply's key) and its items, entry item first."""

    url: str
    items: tuple[FlowItem, ...]


_MENU_OUTCOMES = (0.90, 0.04, 0.03, 0.03)  # a typical well-tuned menu
_ENTRY_OUTCOMES = (0.955, 0.03, 0.015, 0.0)  # callers rarely hang up on the greeting menu
_INPUT_OUTCOMES = (0.86, 0.07, 0.04, 0.03)  # digit strings (numbers, amounts) fail more often
_RE_PROMPTS = 3  # attempts per menu: the usual VoiceXML "three strikes" before an operator


def _graph(url: str, spec: Sequence[tuple[Any, ...]]) -> Application:
    """Build an application from readable rows, resolving item names to forward indices.

    Rows: ``(name, page, form, item, "menu", outcomes, attempts, {next: weight}, fallback)``,
    ``(name, page, form, item, "transfer", connect)`` or ``(name, page, form, item, "terminal")``.
    """
    index = {row[0]: i for i, row in enumerate(spec)}
    items: list[FlowItem] = []
    for i, row in enumerate(spec):
        name, page, form, item, kind = row[:5]
        if kind == "menu":
            outcomes, attempts, routes, fallback = row[5:]
            targets = tuple(index[k] for k in routes)
            if min((index[fallback], *targets)) <= i:
                raise ValueError(f"{url}: {name} routes backwards; graphs must be acyclic")
            chances, shares = conditional(outcomes), conditional(routes.values())
            fb = index[fallback]
            items.append(FlowItem(page, form, item, MENU, chances, attempts, targets, shares, fb))
        elif kind == "transfer":
            items.append(FlowItem(page, form, item, TRANSFER, connect=row[5]))
        else:
            items.append(FlowItem(page, form, item, TERMINAL))
    return Application(url, tuple(items))


# fmt: off
APPLICATIONS: tuple[Application, ...] = (
    # The seed's example application, rearranged so every edge points forward.
    _graph(
        "https://demos.plumgroup.com/vxml/start.php",
        [
            ("main", "main.php", "main_menu", "selection", "menu", _ENTRY_OUTCOMES, 1,
             {"sales": 0.30, "customer": 0.42, "billing": 0.28}, "helpdesk"),
            ("sales", "sales.php", "product_menu", "selection", "menu", _MENU_OUTCOMES, _RE_PROMPTS,
             {"insight": 0.35, "fuse": 0.20, "dev": 0.45}, "helpdesk"),
            ("customer", "customer.php", "enter_customer_number", "customer_number", "menu",
             _INPUT_OUTCOMES, _RE_PROMPTS, {"confirm": 1.0}, "helpdesk"),
            ("confirm", "customer.php", "confirm_customer_number", "confirmation", "menu",
             _MENU_OUTCOMES, _RE_PROMPTS, {"division": 1.0}, "helpdesk"),
            ("division", "support.php", "select_division", "selection", "menu", _MENU_OUTCOMES,
             _RE_PROMPTS, {"tier1": 0.65, "tier3": 0.35}, "helpdesk"),
            ("helpdesk", "helpdesk.php", "helpdesk_transfer", "transfer", "transfer", 0.45),
            ("tier1", "tier_one.php", "tier_one_transfer", "transfer", "transfer", 0.50),
            ("tier3", "tier_three.php", "tier_three_transfer", "transfer", "transfer", 0.40),
            ("insight", "sales.php", "insight", "insight_transfer", "transfer", 0.30),
            ("fuse", "sales.php", "fuse", "fuse_transfer", "transfer", 0.30),
            ("dev", "sales.php", "dev", "dev_transfer", "transfer", 0.05),
            ("billing", "billing.php", "billing_menu", "selection", "menu", _MENU_OUTCOMES,
             _RE_PROMPTS, {"bank": 0.55, "inquiry": 0.45}, "billing_transfer"),
            ("bank", "billing.php", "make_payment", "enter_bank_number", "menu", _INPUT_OUTCOMES,
             _RE_PROMPTS, {"address": 1.0}, "payment_transfer"),
            ("inquiry", "billing.php", "billing_inquiry", "selection", "menu", _MENU_OUTCOMES,
             _RE_PROMPTS, {"billing_transfer": 0.6, "thank_you": 0.4}, "billing_transfer"),
            ("address", "billing.php", "make_payment", "enter_billing_address", "menu",
             _INPUT_OUTCOMES, _RE_PROMPTS, {"amount": 1.0}, "payment_transfer"),
            ("amount", "billing.php", "make_payment", "enter_payment_amount", "menu",
             _INPUT_OUTCOMES, _RE_PROMPTS, {"thank_you": 0.92, "payment_transfer": 0.08},
             "payment_transfer"),
            ("thank_you", "billing.php", "payment_success", "thank_you", "terminal"),
            ("payment_transfer", "billing.php", "payment", "payment_transfer", "transfer", 0.95),
            ("billing_transfer", "billing.php", "billing_inquiry", "billing_transfer", "transfer",
             0.20),
        ],
    ),
    _graph(
        "https://demos.plumgroup.com/vxml/appointments.php",
        [
            ("welcome", "appointments.php", "welcome", "language", "menu", _ENTRY_OUTCOMES, 1,
             {"menu": 1.0}, "menu"),  # no choice means English: callers go on to the menu
            ("menu", "appointments.php", "appointment_menu", "selection", "menu",
             _MENU_OUTCOMES, _RE_PROMPTS, {"date": 0.5, "number": 0.3, "desk": 0.2}, "desk"),
            ("date", "schedule.php", "schedule", "preferred_date", "menu", _INPUT_OUTCOMES,
             _RE_PROMPTS, {"slot": 1.0}, "desk"),
            ("slot", "schedule.php", "schedule", "confirm_slot", "menu", _MENU_OUTCOMES,
             _RE_PROMPTS, {"goodbye": 0.9, "desk": 0.1}, "desk"),
            ("number", "cancel.php", "cancel", "appointment_number", "menu", _INPUT_OUTCOMES,
             _RE_PROMPTS, {"cancel": 1.0}, "desk"),
            ("cancel", "cancel.php", "cancel", "confirm_cancel", "menu", _MENU_OUTCOMES,
             _RE_PROMPTS, {"goodbye": 1.0}, "desk"),
            ("desk", "frontdesk.php", "front_desk", "front_desk_transfer", "transfer", 0.70),
            ("goodbye", "goodbye.php", "goodbye", "thank_you", "terminal"),
        ],
    ),
    _graph(
        "https://demos.plumgroup.com/vxml/afterhours.php",
        [
            ("closed", "afterhours.php", "closed", "options", "menu", _ENTRY_OUTCOMES, 1,
             {"voicemail": 0.7, "oncall": 0.3}, "goodbye"),
            ("voicemail", "afterhours.php", "voicemail", "message", "menu",
             (0.80, 0.0, 0.12, 0.08), _RE_PROMPTS, {"goodbye": 1.0}, "goodbye"),
            ("oncall", "afterhours.php", "emergency", "oncall_transfer", "transfer", 0.80),
            ("goodbye", "afterhours.php", "goodbye", "goodbye", "terminal"),
        ],
    ),
)
# fmt: on
