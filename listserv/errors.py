"""Every error listserv raises on purpose, in one tree.

    ListservError              exit 1 -- base; `str(err)` is one plain sentence on one line
    ├── UsageError             exit 2 -- a value the user typed is not acceptable
    ├── NotFound               exit 3 -- no such list, member or queue entry
    ├── Conflict               exit 4 -- it exists already (list, member, pinned fingerprint)
    ├── KeyProblem             exit 5 -- a key is unusable, expired, revoked, too large, unreadable
    ├── EnvironmentProblem     exit 69 -- GnuPG missing or too old, home not initialised, port taken
    ├── StoreError             exit 74 -- the database or the spool could not be read or written
    ├── WrongUser              exit 77 -- the home belongs to another user (the command says whose)
    ├── ConfigProblem          exit 78 -- listserv.toml: unreadable, unknown key or section, wrong type
    ├── CryptoError            exit 1 -- gpg failed (internal detail is logged, never shown to a sender)
    ├── NotVerified            exit 10-16 -- `listserv verify`: the file does not prove the group said it
    │   ├── NotSigned          exit 10 -- no signature at all
    │   ├── OtherSigner        exit 11 -- signed, but not by the list's key
    │   ├── Altered            exit 12 -- a bad signature, text outside the signed part, a second signature
    │   ├── Expired            exit 13 -- the list key or the signature has expired
    │   ├── Revoked            exit 14 -- the list key was revoked
    │   ├── NotAStatement      exit 15 -- signed by the list key without the statement notation (a post copy)
    │   └── OtherList          exit 16 -- a statement of another list than the key or --list names
    ├── TemplateError          exit 1 -- a template is missing or cannot be rendered
    ├── Abandoned              exit 1 -- a DATA check ran out of time: it may no longer write anything
    ├── DeliveryDeferred       a copy may go later (4xx, no connection); str() is its reason code
    ├── DeliveryFailed         the relay refused a copy for good (5xx); str() is its reason code
    ├── SMTPReplyError         the relay answered what the client did not want (code, text, stage)
    ├── SMTPConnectionError    the connection to the relay failed, closed or timed out
    └── Refusal                SMTP -- a submission is refused; carries the reply the sender sees
        ├── Unauthorized       550 5.7.1 -- every authentication or crypto failure, one sentence
        ├── CommandsInPost     550 5.7.0 -- a member's post that holds x- commands (for LIST-request@)
        ├── UnknownRecipient   550 5.1.1
        ├── RateLimited        452 4.7.0 -- LIST-owner@ took its hourly share; the sender's server retries
        ├── Unanswered         250 2.0.0 -- LIST-sendkey@ takes the mail but sends no key (stages.sendkey)
        ├── TooLarge           552 5.3.4
        │   └── PartTooLarge   552 5.3.4 -- a line or header over mimescan's limits; also a Malformed
        └── Malformed          554 5.6.0

Each error says whether the job it stopped may be tried again (`retry`): a Refusal or a
CryptoError will fail the same way each time, so the worker sets the job aside and says so;
any other ListservError is a passing problem (a busy database, a gpg that timed out, a
template an admin can fix) and the job waits. `retryable()` is that one rule, with OSError
(a full disk) retried and anything else -- a bug -- not.

The CLI prints `str(err)` and exits with `err.exit_code`; the SMTP listener replies with
`err.smtp_reply`. A `Refusal` also carries `reason`, a short code for logs and for
`listserv rejections` that the sender never sees. Both are one line whatever the sentence
quotes: a control character (CR, LF, NUL, ESC, U+2028...) in a value the user typed or sent
is written as an escape such as `\\r`, so it can neither start a line of its own on a
terminal nor a second reply line in SMTP.
"""

from __future__ import annotations

import secrets


def one_line(text: str) -> str:
    """`text` with each character that is not printable written as a Python escape."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


class ListservError(Exception):
    exit_code = 1
    retry = True  # a job this stopped may succeed later (see the module docstring)

    def __str__(self) -> str:
        return one_line(super().__str__())


class UsageError(ListservError):
    exit_code = 2


class NotFound(ListservError):
    exit_code = 3


class Conflict(ListservError):
    exit_code = 4


class KeyProblem(ListservError):
    exit_code = 5


class EnvironmentProblem(ListservError):
    exit_code = 69


class StoreError(ListservError):
    exit_code = 74


class WrongUser(ListservError):
    # Files a command writes belong to whoever runs it: run as root on the service user's home
    # they would be root's, mode 0600, and the server could no longer read them.
    exit_code = 77  # EX_NOPERM


class ConfigProblem(ListservError):
    exit_code = 78  # EX_CONFIG: a supervisor should not restart into the same mistake


class CryptoError(ListservError):
    exit_code = 1
    retry = False  # the same message fails the same way


class NotVerified(ListservError):
    """`listserv verify` found that a file does not prove the group said it: the sentence says
    why, in words a reader without any OpenPGP knowledge can act on (docs/verify.md)."""

    exit_code = 10
    retry = False


class NotSigned(NotVerified):
    exit_code = 10


class OtherSigner(NotVerified):
    exit_code = 11


class Altered(NotVerified):
    exit_code = 12


class Expired(NotVerified):
    exit_code = 13


class Revoked(NotVerified):
    exit_code = 14


class NotAStatement(NotVerified):
    """Signed by the list key, but without the statement notation: the list signs every copy of
    every post too, so a member could lift one out of their mailbox; it is not the group's word."""

    exit_code = 15


class OtherList(NotVerified):
    exit_code = 16


class TemplateError(ListservError):
    exit_code = 1


class Abandoned(ListservError):
    """Raised in a DATA check's thread when it tries to write after its client heard 451."""


class Refusal(ListservError):
    """A submission refused with an SMTP reply; `reason` is for the log only."""

    code = 554
    status = "5.0.0"
    text = "The message was refused."
    retry = False

    signer: str | None  # the signing key's fingerprint, when the signature was readable

    def __init__(self, reason: str, text: str | None = None, *, signer: str | None = None):
        self.reason = reason
        self.signer = signer
        self.ref = secrets.token_hex(4)  # quoted in the log and `listserv rejections`
        if text is not None:
            self.text = text
        super().__init__(self.text)

    @property
    def smtp_reply(self) -> str:
        return f"{self.code} {self.status} {one_line(self.text)}"


class Unauthorized(Refusal):
    # One sentence for every authentication or crypto failure, so the reply never
    # tells an outsider which check failed (no decryption or membership oracle).
    code = 550
    status = "5.7.1"
    text = "Not accepted: this list takes only posts signed by a current member's key."


class UnknownRecipient(Refusal):
    code = 550
    status = "5.1.1"
    text = "No such list here."


class RateLimited(Refusal):
    """More mail to LIST-owner@ in the last hour than it forwards. A 4xx: the sender's server
    keeps the message and tries again, so nothing is lost, only slowed."""

    code = 452
    status = "4.7.0"
    text = "The list's admins have had all the mail this address forwards in an hour; try again later."


class Unanswered(Refusal):
    """Mail to LIST-sendkey@ that gets no key back (a null or automatic sender, or past the
    limits). Taken, not refused: a refusal would make a bounce to the same, maybe forged,
    address (listserv.stages.sendkey). Kept for `listserv rejections` like any refusal."""

    code = 250
    status = "2.0.0"
    text = "Received; no key is sent in reply to this message."


class TooLarge(Refusal):
    code = 552
    status = "5.3.4"
    text = "The message is larger than this list accepts."


class Malformed(Refusal):
    code = 554
    status = "5.6.0"
    text = "The message is not well-formed MIME and was not accepted."


class CommandsInPost(Refusal):
    """A member's post that begins with list commands: it was meant for LIST-request@, and
    must not reach every member. Said only after the signature was found good."""

    code = 550
    status = "5.7.0"
    text = "This post begins with list commands (x-...); send commands to the list's -request address."


class PartTooLarge(TooLarge, Malformed):
    """A line or a header larger than accepted: a size refusal (552, TooLarge's reply) that is
    also malformed MIME, so that where every malformed structure gets one answer (the content
    of an unsigned encrypted post: the one 550 for outsiders) this one does too."""


class DeliveryDeferred(ListservError):
    """The copy may succeed later (4xx, connection trouble); str() is the reason code."""


class DeliveryFailed(ListservError):
    """The relay refused the copy for good (5xx); str() is the reason code."""

    retry = False


class SMTPReplyError(ListservError):
    """A reply the client did not want. `stage` is the command it answered ("connect",
    "mail", "rcpt", "data"): a refusal at RCPT is about the recipient, one at MAIL or DATA
    about the message."""

    def __init__(self, code: int, text: str, stage: str = ""):
        super().__init__(f"{code} {text}")
        self.code = code
        self.text = text
        self.stage = stage


class SMTPConnectionError(ListservError):
    """The connection failed, closed or timed out."""


def retryable(exc: BaseException) -> bool:
    """Whether the job `exc` stopped may be tried again: the error says; a full disk may; a bug
    may not (it would fail the same way, and hold up the queue each time)."""
    if isinstance(exc, ListservError):
        return exc.retry
    return isinstance(exc, OSError)


# SMTP replies that are not a Refusal's own (those are `Refusal.smtp_reply`), in one table.
SENDER_OK = "250 2.1.0 Sender ok"
RECIPIENT_OK = "250 2.1.5 Recipient ok"
QUEUED = "250 2.0.0 Queued as {qid}"
BOUNCE_NOTED = "250 2.0.0 Bounce noted"
DATA_OK = "250 OK"  # DATA read in full: the handler's reply follows
TEMPORARY_FAILURE = "451 4.3.0 A temporary problem on this server; please try again later."
TOO_SLOW = "451 4.3.0 The message took too long to check; please try again later."
ONE_LIST_PER_MESSAGE = "452 4.5.3 One list per message; send it again for the other recipients."
LINE_TOO_LONG = "500 5.5.2 A line of the message is longer than SMTP allows (1000 characters)."
NO_STARTTLS = "502 5.5.1 STARTTLS is not offered here."
OVERSIZE = f"{TooLarge.code} {TooLarge.status} The message is larger than this server accepts."
