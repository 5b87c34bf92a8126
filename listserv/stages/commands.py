"""Commands: what a request to LIST-request@ asks, read from its signed content. Pure.

The language is Schleuder's, so its users need learn nothing new. Commands are lines at the
start of the first text/plain part of the signed content (blank lines before them skipped):
`x-KEYWORD: arguments` or `x-KEYWORD arguments`, the keyword in any case, the arguments
separated by spaces or commas. A blank line, or the first line that is not a command, ends
them; what follows is not read. Every request names its list (`x-list-name: LIST`), so a
request signed for one list cannot be sent to another.

A request runs whole or not at all: an unknown keyword, a malformed argument, a command the
signer's role does not allow or more than MAX_COMMANDS commands refuse all of it, and the
reply names the line and why. COMMANDS is the one table: `x-help` answers from it and
docs/requests.md is made from it (`render_markdown`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .. import mime

from ..errors import Malformed, Unauthorized
from ..model import MODES, Kind, MailingList, Member

MAX_COMMANDS = 20
_COMMAND = re.compile(r"^x-([a-z][a-z-]*)(?:\s*:\s*|\s+|$)(.*)$", re.IGNORECASE)


@dataclass(frozen=True)
class Command:
    keyword: str
    usage: str  # what follows the keyword, as docs/requests.md and x-help show it
    role: str  # who may use it: "member" (any member), "admin", "signer" (statement_signers) or "invitee" (a key not pinned yet)
    summary: str
    arguments: tuple[int, int] = (0, 0)  # how many: at least, at most
    choices: tuple[str, ...] = ()  # the values its one argument may take


COMMANDS = (
    Command("list-name", "LIST", "member", "Names the list the request is for. Every request carries it.",
            (1, 1)),
    Command("help", "", "member", "The commands you may use, one line each."),
    Command("status", "", "member",
            "Your pseudonym, delivery mode and key fingerprint, and when the key stops being usable."),
    Command("get-listkey", "", "member", "The list's public key, attached to the reply."),
    Command("mode", "immediate|digest", "member",
            "How you get posts: each as it comes, or in digests. Urgent alerts always come at once.",
            (1, 1), MODES),
    Command("pause", "", "member",
            "Stop getting posts and digests for now (urgent alerts still reach you); x-resume restarts them."),
    Command("resume", "", "member", "Start getting posts and digests again after x-pause, or after your "
            "mailbox refused mail and delivery to you was paused (docs/moderation.md)."),
    Command("leave", "", "member",
            "Leave the list at once: you are removed, your key leaves the list's keyring, a last "
            "confirmation comes to you and the admins are told (your pseudonym only). The last admin "
            "cannot leave."),
    Command("key-update", "", "member",
            "Renews your pinned key from the copy attached (a later expiry, new subkeys or user ids): the "
            "same fingerprint only, and it works when the key has already expired (docs/keys.md)."),
    Command("key-revoke", "", "member",
            "Revokes your pinned key with the revocation certificate attached: you are suspended at once "
            "(no copies, no posts) until an admin pins a new key; the admins are told. No reply comes, "
            "as none can be encrypted to a revoked key."),
    Command("key-change", "", "member",
            "Change to a new key (a new fingerprint): sign with your current key and attach the new public "
            "key (application/pgp-keys, one certificate that signs and encrypts). A code comes to you "
            "encrypted to the new key only; answer it with x-confirm (docs/keys.md)."),
    Command("confirm", "CODE", "member",
            "Answer x-key-change with the code the list sent to your new key, signed by your current key or "
            "the new one; then the admins approve, unless the list needs no approval.", (1, 8)),
    Command("add-member", "EMAIL [name=PSEUDONYM] [mode=immediate|digest] [role=member|spokesperson|admin] [key=FINGERPRINT]",
            "admin", "Adds a member with the same checks as `listserv member add`: their key is a file "
            "attached to the request (armored or binary); with several keys attached, key= says which.",
            (1, 5)),
    Command("list-members", "", "admin",
            "The roster: each member's pseudonym, address, key fingerprint, mode, role and standing."),
    Command("remove-member", "EMAIL", "admin",
            "Removes a member, as `listserv member remove`; their key leaves the keyring unless another "
            "list pins it. The last admin cannot be removed.", (1, 1)),
    Command("set-member", "EMAIL [name=PSEUDONYM] [mode=immediate|digest] [role=member|spokesperson|admin] [key=FINGERPRINT]",
            "admin", "Changes a member's pseudonym, mode or role, as `listserv member set`; key= pins the key "
            "attached (a suspended member is active again): check with the person out of band first "
            "(docs/keys.md).", (2, 5)),
    Command("resume-member", "EMAIL", "admin",
            "Resumes delivery to a member paused by x-pause or because their mailbox refused mail, as "
            "`listserv member resume`; check with the person out of band first.", (1, 1)),
    Command("show-options", "", "admin", "The list's options and their values, as `listserv list show`."),
    Command("rejections", "[N]", "admin",
            "The last N (20 unless given) refused submissions with their specific reasons, as "
            "`listserv rejections`.", (0, 1)),
    Command("set-option", "OPTION VALUE", "admin",
            "Sets a list option, as `listserv list set` (docs/options.md); the value is the rest of the line.",
            (2, 99)),
    Command("approve-key", "CODE", "admin",
            "Pin a member's new key, with the approval code of the notice the admins got once the member "
            "confirmed; check the new fingerprint with them out of band first.", (1, 8)),
    Command("key-requests", "", "admin",
            "The list's key changes, most recent first: pending, expired, refused and approved."),
    Command("invite", "[name=PSEUDONYM] [mode=immediate|digest] [role=member]", "admin",
            "A one-time invitation code (good for 72 hours, once) for someone to join with x-join; hand it "
            "to them out of band, as `listserv invite` (docs/moderation.md).", (0, 3)),
    Command("join", "CODE [address=EMAIL]", "invitee",
            "Ask to join with an invitation code: sign with your own key, attach it, encrypt to the list's "
            "key. A challenge comes to your key at your address (address=, or your signed From); answer it "
            "with x-confirm. A request that does not lead to a challenge gets no answer at all.", (1, 9)),
    Command("approve-join", "CODE", "admin",
            "Pin an invitee who confirmed, with the approval code of the notice the admins got; check the "
            "fingerprint with them out of band first.", (1, 8)),
    Command("held", "", "admin", "The held posts that wait for a decision: id, kind, pseudonym, why, since when."),
    Command("approve", "ID", "admin",
            "A held post goes out exactly as it would have (its signature judged at its arrival).", (1, 1)),
    Command("reject", "ID [REASON]", "admin",
            "A held post does not go out; its poster gets an encrypted notice with the reason.", (1, 99)),
    Command("discard", "ID", "admin", "A held post does not go out, and nobody is told.", (1, 1)),
    Command("emergency", "on|off", "admin",
            "Switches the emergency: while on, every post is held for the admins, and admins' urgent alerts "
            "still go out at once; every admin is told who switched it (docs/moderation.md).", (1, 1), ("on", "off")),
    Command("release", "EMAIL", "admin", "Ends a member's probation: their posts go out without waiting.", (1, 1)),
    Command("sign-this", "", "signer",
            "The text after the commands (and each file attached) signed by the list key, as a statement anyone "
            "can check came from the group (docs/verify.md): for the admins, or the members when "
            "statement_signers says so; with statement_quorum k, once k of them sent the same within 48 hours."),
    Command("statements", "", "admin",
            "The list's statements, most recent first: digest, signed or waiting, who asked (never the text)."),
    Command("add-contact", "EMAIL", "admin",
            "Adds an outsider the list may resend posts to (docs/requests.md, Resends), as `listserv contact add`: "
            "their public key is a file attached to the request (one key that encrypts); with none attached the "
            "contact has no key, and gets a resend only when resend_unencrypted is on.", (1, 1)),
    Command("remove-contact", "EMAIL", "admin",
            "Removes a contact, as `listserv contact remove`; their key leaves the contacts keyring.", (1, 1)),
    Command("contacts", "", "admin", "The list's contacts: each address and its key fingerprint, as "
            "`listserv contact list`."),
)
MAX_KEY_ATTACHMENT = 512 * 1024  # as `member add --key`'s limit (listserv.keyring.MAX_KEY_BYTES)
BY_KEYWORD = {command.keyword: command for command in COMMANDS}


@dataclass(frozen=True)
class Line:
    number: int  # the line's number in the text part, from 1
    command: Command
    arguments: tuple[str, ...]
    text: str  # as written, for the reply
    rest: str = ""  # the arguments as written (x-set-option's value may hold spaces)


@dataclass(frozen=True)
class Request:
    """What a request asks (`lines`, without x-list-name), or why none of it runs (`refused`)."""

    lines: tuple[Line, ...]
    refused: str | None = None  # one sentence for the reply; None: every line may run

    @property
    def keywords(self) -> tuple[str, ...]:
        return tuple(line.command.keyword for line in self.lines)


def first_text_part(entity) -> object | None:
    """The part commands are read from: the first leaf down the first parts of the entity's
    multiparts (past a legacy display part, RFC 9788), never inside an attached or forwarded
    message; None unless it is text/plain and not an attachment."""
    part = entity
    while part.is_multipart():
        parts = [p for p in part.iter_parts() if p.get_param("hp-legacy-display") is None]
        if not parts or part.get_content_maintype() == "message":
            return None
        part = parts[0]
    if part.get_content_type() != "text/plain" or part.is_attachment():
        return None
    return part


def _text(content: bytes) -> str:
    """The text the commands are read from: the first body part of the signed content
    (`first_text_part`). Anything but text/plain there: no commands."""
    try:
        part = first_text_part(mime.parse(content))
    except Malformed:
        return ""
    if part is None:
        return ""
    try:
        return part.get_content()
    except (LookupError, ValueError):
        return ""


def command_lines(content: bytes) -> list[tuple[int, str, re.Match]]:
    """The command lines at the start of the first text part: (line number from 1, the line, its match)."""
    found = []
    lines = _text(content).replace("\r\n", "\n").split("\n")
    start = next((i for i, line in enumerate(lines) if line.strip()), len(lines))
    for number, line in enumerate(lines[start:], start=start + 1):
        match = _COMMAND.match(line.strip())
        if not line.strip() or not match:
            break
        found.append((number, line.strip(), match))
    return found


def statement_text(content: bytes) -> str:
    """What follows the command lines in the first text part: the text x-sign-this signs."""
    lines = _text(content).replace("\r\n", "\n").split("\n")
    found = command_lines(content)
    return "\n".join(lines[found[-1][0]:] if found else lines)


def refuse_automatic(raw: bytes, kind: Kind, signer: str | None) -> None:
    """A request marked Auto-Submitted (other than `no`) is not answered, nor run (RFC 3834):
    an automatic answer to an automatic message can loop. Refused like any unauthorised one."""
    if kind == Kind.REQUEST and mime.auto_submitted(raw):
        raise Unauthorized("auto-submitted", signer=signer)


def attached_keys(content: bytes) -> tuple[bytes, ...]:
    """The key files attached to a request (application/pgp-keys parts), each at most
    MAX_KEY_ATTACHMENT bytes (a larger one is left out, and its key is then not found)."""
    try:
        entity = mime.parse(content)
    except Malformed:
        return ()
    found = []
    for part in entity.walk():
        if part.get_content_type() == "application/pgp-keys":
            data = part.get_payload(decode=True) or b""
            if 0 < len(data) <= MAX_KEY_ATTACHMENT:
                found.append(data)
    return tuple(found)


def only_confirms(content: bytes) -> bool:
    """Whether a request holds x-confirm and nothing else but x-list-name: all that a request
    signed by a member's pending new key may do (listserv.rotation)."""
    return holds_only(content, "confirm")


def holds_only(content: bytes, keyword: str) -> bool:
    """Whether a request holds `keyword` and nothing else but x-list-name: all that a request
    signed by a key not pinned yet may do (model.PendingKey.command)."""
    keywords = {m.group(1).lower() for _, _, m in command_lines(content)}
    return keyword in keywords and keywords <= {keyword, "list-name"}


RESEND_KEYWORDS = frozenset({"list-name", "resend"})  # what may begin a post to resend it (stages.resend)


def is_resend(content: bytes) -> bool:
    """Whether a post begins with x-resend lines (and x-list-name) and no other command: a
    resend to outsiders, decided in the worker (listserv.resend), not a misdirected request."""
    keywords = {m.group(1).lower() for _, _, m in command_lines(content)}
    return "resend" in keywords and keywords <= RESEND_KEYWORDS


def looks_like_request(content: bytes) -> bool:
    """Whether a post begins with a command: then it was meant for LIST-request@, and must not
    go out to every member -- unless it is a resend (`is_resend`)."""
    found = command_lines(content)
    return any(m.group(1).lower() in BY_KEYWORD for _, _, m in found[:1]) and not is_resend(content)


def read_request(content: bytes, mailing_list: MailingList, member: Member | None) -> Request:
    """The commands of a request from `member`, checked against COMMANDS and their role."""
    lines, named = [], None
    for number, text, match in command_lines(content):
        keyword, rest = match.group(1).lower(), match.group(2).strip()
        command = BY_KEYWORD.get(keyword)
        if command is None:
            return Request((), f"Line {number} ({text}): there is no command x-{keyword}; nothing was done.")
        arguments = tuple(a for a in re.split(r"[\s,]+", rest) if a)
        low, high = command.arguments
        if not low <= len(arguments) <= high or (command.choices and arguments[0].lower() not in command.choices):
            usage = f"x-{command.keyword}" + (f": {command.usage}" if command.usage else "")
            return Request((), f"Line {number} ({text}): write it as {usage}; nothing was done.")
        if command.role == "admin" and (member is None or member.role != "admin"):
            return Request((), f"Line {number} ({text}): only the list's admins may use x-{keyword}; nothing was done.")
        if keyword == "list-name":
            named = arguments[0].lower()
            continue
        lines.append(Line(number, command, arguments, text, rest))
    if named != mailing_list.address:
        return Request((), f"The request does not name this list (x-list-name: {mailing_list.address}); "
                           "nothing was done.")
    if not lines:
        return Request((), "The request holds no command; write x-help for the list of them.")
    if len(lines) > MAX_COMMANDS:
        return Request((), f"The request holds {len(lines)} commands, more than {MAX_COMMANDS}; nothing was done.")
    return Request(tuple(lines))


def help_lines(member: Member, mailing_list: MailingList | None = None) -> list[str]:
    """x-help: the commands `member` may use, one line each."""
    signers = mailing_list is not None and mailing_list.option("statement_signers") == "members"
    return [f"x-{c.keyword}" + (f": {c.usage}" if c.usage else "") + f"  --  {c.summary}"
            for c in COMMANDS if c.role == "member" or (c.role in ("admin", "signer") and member.role == "admin")
            or (c.role == "signer" and signers)]


def render_markdown() -> str:
    """The command table of docs/requests.md (a test keeps the two equal)."""
    rows = ["| command | who | what it does |", "|---|---|---|"]
    for c in COMMANDS:
        usage = f"`x-{c.keyword}" + (f": {c.usage}`" if c.usage else "`")
        who = {"member": "any member", "admin": "admins", "invitee": "an invitee",
               "signer": "admins (or members: `statement_signers`)"}[c.role]
        rows.append(f"| {usage.replace('|', chr(92) + '|')} | {who} "
                    f"| {c.summary} |")
    return "\n".join(rows) + "\n"
