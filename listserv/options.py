"""The options of a list: each one's type, default and meaning, in exactly this one place.

`listserv list set` validates through these parsers, `listserv list show` reports them, and
docs/options.md is generated from this table (a test keeps the two in step).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from .errors import UsageError
from .schedule import UNIT_SECONDS, parse_schedule


def _text(value: str) -> str:
    if "\n" in value or "\r" in value:
        raise UsageError("The value must be a single line.")
    return value


def _multiline(value: str) -> str:
    return value.replace("\r\n", "\n")


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "yes", "on", "1"):
        return True
    if lowered in ("false", "no", "off", "0"):
        return False
    raise UsageError(f"'{value}' is not true or false.")


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise UsageError(f"'{value}' is not a whole number.") from None
    if number <= 0:
        raise UsageError("The value must be greater than zero.")
    return number


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value not in allowed:
            raise UsageError(f"'{value}' is not one of: {', '.join(allowed)}.")
        return value

    parse.choices = allowed  # type: ignore[attr-defined]
    return parse


_DURATION = re.compile(r"^(\d+)([smhdw])$")


def duration_seconds(value: str) -> int:
    """'7d' -> 604800. Durations are stored as written and read through this."""
    match = _DURATION.match(value.strip())
    if not match or int(match.group(1)) == 0:
        raise UsageError(f"'{value}' is not a duration such as 90m, 12h, 7d or 2w.")
    return int(match.group(1)) * UNIT_SECONDS[match.group(2)]


def _duration(value: str) -> str:
    duration_seconds(value)
    return value.strip()


def _schedule(value: str) -> str:
    # Also refuse a schedule that parses but never fires, such as '0 0 30 2 *'.
    parse_schedule(value).next_after(datetime.now(timezone.utc))
    return " ".join(value.split())


@dataclass(frozen=True)
class Option:
    name: str
    parse: Callable[[str], Any]
    default: Any
    kind: str
    doc: str


OPTIONS: dict[str, Option] = {
    option.name: option
    for option in (
        Option("name", _text, "", "text",
               "The list's display name; senders appear as 'Pseudonym via Name'."),
        Option("subject_prefix", _text, "", "text",
               "Put before every Subject (inside the encryption); `list create` sets it to '[Name]'."),
        Option("require_encryption", _bool, True, "bool",
               "Refuse posts that are only signed; when false, signed posts are encrypted on arrival."),
        Option("alert_senders", _choice("members", "admins"), "members", "members|admins",
               "Who may send urgent alerts to LOCAL+urgent@DOMAIN."),
        Option("digest_schedule", _schedule, "daily 18:00", "schedule",
               "When digests go out, in UTC: 'daily HH:MM', 'weekly DAY HH:MM', 'every 6h' or a cron expression."),
        # 7000 KiB, not 10240: a copy is larger than its post (armor adds a third, then
        # headers and footer), and a relay refuses what is over its own limit. Postfix's
        # default message_size_limit is 10,240,000 bytes; listserv.sizing puts the largest post
        # whose copies fit under it at 7,185 KiB for a list with the shipped templates, so
        # 7000 leaves room for a longer name, footer or banner. Where the relay announces
        # its limit, the lower of the two applies.
        Option("max_message_size_kb", _positive_int, 7000, "integer",
               "Largest submission accepted, in KiB; larger ones get 552 5.3.4. The relay's own "
               "limit (its SIZE) lowers it further: copies are a third larger than posts."),
        Option("max_signature_age", _duration, "7d", "duration",
               "Oldest signature accepted (s, m, h, d, w); older posts are refused as stale."),
        Option("footer", _multiline, "", "text",
               "Extra text placed in the footer of every post and digest."),
        # Even a content-free plain-text notice says, to whoever reads the member's mail, that
        # this address is on this list: some lists would rather the member found out alone.
        Option("missed_notice", _bool, True, "bool",
               "Tell a member whose key stopped working, at most once a day, how many posts could not be "
               "encrypted to it (signed by the list, not encrypted, no content)."),
        Option("key_change_approval", _choice("admin", "none"), "admin", "admin|none",
               "Whether a member's change to a new key (x-key-change, then x-confirm with the code sent "
               "to the new key) also needs an admin's x-approve-key before it is pinned."),
        Option("new_member_probation", _bool, False, "bool",
               "Members added while this is on start on probation: they get everything, but their posts "
               "and alerts are held for an admin (docs/moderation.md) until x-release."),
        Option("max_days_to_hold", _positive_int, 7, "integer",
               "Days a held post waits for an admin's decision before it is discarded (and the admins told)."),
        Option("announce_key_changes", _bool, True, "bool",
               "Tell the list's members, by pseudonym only, when a member's key has changed."),
        Option("join_approval", _choice("admin", "none"), "admin", "admin|none",
               "Whether an invitee who joined (x-join, then x-confirm with the challenge sent to their key) "
               "also needs an admin's x-approve-join before they are pinned (docs/moderation.md)."),
        # The switch for a list under attack (docs/moderation.md): admins can still warn everyone.
        Option("emergency", _bool, False, "bool",
               "While on, every post is held for the admins; urgent alerts from admins still go out at once. "
               "Switched by x-emergency (every admin is told, and by whom) or `list set`."),
        Option("post_senders", _choice("members", "admins"), "members", "members|admins",
               "Who may post: on a newsletter list only admins post, and every member receives "
               "(docs/moderation.md). alert_senders is set apart."),
        # Off by default: on a newsletter, every subscriber's reply would wait in the admins' queue.
        Option("hold_refused_posts", _bool, False, "bool",
               "With post_senders = admins: a post by a member who may not post is held for the admins "
               "instead of refused with the uniform 550."),
        # For these groups a mailbox that refuses mail for good may be a seized account.
        Option("bounce_pause", _bool, True, "bool",
               "Pause delivery to a member at the first permanent failure (5.x.x) of their mailbox and tell "
               "the admins; they resume with x-resume signed by their key (docs/moderation.md). When false, "
               "such failures are only counted."),
        # A statement signed by the list key speaks for the whole group (docs/verify.md): one
        # stolen admin key should not be enough to put words in its mouth.
        Option("statement_signers", _choice("admins", "members"), "admins", "admins|members",
               "Who may ask the list to sign a statement with x-sign-this (docs/verify.md). Members on "
               "probation never may."),
        Option("statement_quorum", _positive_int, 1, "integer",
               "How many different signers (statement_signers) must send the same statement within 48 hours "
               "before the list signs it; each of them then gets it signed."),
        # Off by default: a plain copy shows what the group said to anyone on its way.
        Option("resend_unencrypted", _bool, False, "bool",
               "A resend (x-resend, docs/requests.md) to a contact with no usable key goes out signed by the "
               "list and not encrypted; when false the whole resend is refused and nothing is sent."),
    )
}


def defaults() -> dict[str, Any]:
    return {name: option.default for name, option in OPTIONS.items()}


def parse_option(name: str, value: str) -> Any:
    option = OPTIONS.get(name)
    if option is None:
        raise UsageError(f"'{name}' is not a list option; the options are: {', '.join(OPTIONS)}.")
    return option.parse(value)


def render_markdown() -> str:
    """The options table for docs/options.md."""
    lines = [
        "# List options",
        "",
        "Set with `listserv list set ADDRESS OPTION VALUE`; shown by `listserv list show ADDRESS`.",
        "This page is generated from `listserv/options.py` (`python -m listserv.options > docs/options.md`).",
        "",
        "| option | type | default | meaning |",
        "|---|---|---|---|",
    ]
    for option in OPTIONS.values():
        if isinstance(option.default, bool):
            default = f"`{str(option.default).lower()}`"
        else:
            default = f"`{option.default}`" if option.default != "" else "(empty)"
        kind = option.kind.replace("|", "\\|")  # a bare '|' would split the table cell
        lines.append(f"| `{option.name}` | {kind} | {default} | {option.doc} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render_markdown(), end="")
