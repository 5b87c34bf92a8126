"""Group statements (x-sign-this): who asked the list to sign what, and the signing.

A round is kept per statement digest: who asked (by pseudonym) and when, and when the list
signed -- never the text, which lives only in the requests themselves and in the replies. With
statement_quorum k the list signs once k different signers have asked within 48 hours of the
first (listserv.stages.statement.quorum); each of them then gets the signed statement. Someone
who asks for a statement signed in the last 48 hours gets it signed too. Every ask and every
signing is one of the request's changes, so every admin hears of it: a stolen admin key that
signs is noticed.

    ask(tx, mailing_list, member, statement, now) -> Asked     inside the request's transaction
    sign(keyring, mailing_list, statement) -> attachments      after it: the text clearsigned, a .sig per file
"""

from __future__ import annotations

import secrets

from dataclasses import dataclass

from .errors import UsageError
from .keyring import Keyring
from .model import MailingList, Member, iso
from .stages.statement import QUORUM_WINDOW, Statement, quorum

STATEMENT_FILE = "statement.asc"


@dataclass(frozen=True)
class Asked:
    result: str  # the reply's line
    change: str  # what every admin is told
    signed_for: tuple[str, ...]  # the pseudonyms who get it signed; () while the quorum is not met


def may_ask(mailing_list: MailingList, member: Member) -> None:
    who = mailing_list.option("statement_signers")
    if member.probation:
        raise UsageError("Members on probation may not ask for statements; an admin ends it with x-release.")
    if who == "admins" and member.role != "admin":
        raise UsageError("Only the list's admins may ask for statements (statement_signers = admins).")


def ask(tx, mailing_list: MailingList, member: Member, statement: Statement, now: float) -> Asked:
    may_ask(mailing_list, member)
    wanted = int(mailing_list.option("statement_quorum"))
    rounds = [r for r in tx.statements(mailing_list.address) if r["digest"] == statement.digest]
    open_round = next((r for r in reversed(rounds) if (r["signed"] or r["first"]) >= now - QUORUM_WINDOW), None)
    record = open_round or {"id": secrets.token_hex(8), "list": mailing_list.address, "digest": statement.digest,
                            "asked": [], "first": now, "signed": None, "quorum": wanted}
    record["asked"] = [*record["asked"], [member.name, now]]
    current = quorum(tuple(tuple(a) for a in record["asked"]), wanted, now)
    names = tuple(name for name, _ in current.asked)
    if record["signed"] is None and current.enough:
        record["signed"] = now
    tx.put_statement(record)
    if record["signed"] is None:
        until = iso(current.asked[0][1] + QUORUM_WINDOW)
        return Asked(f"Recorded ({statement.short}): {len(names)} of {wanted} have asked for this statement. The list "
                     f"signs it once {wanted} different signers have sent the same text and files, by {until}.",
                     f"asked the list to sign the statement {statement.short} ({len(names)} of {wanted})", ())
    files = len(statement.attachments)
    return Asked(f"Signed by the list key as a statement of {mailing_list.address} ({statement.short}), asked for by "
                 f"{', '.join(names)}: {STATEMENT_FILE} is attached" + (f", with {files} file(s) and their .sig." if files else "."),
                 f"had the statement {statement.short} signed by the list key (asked for by {', '.join(names)})", names)


def shown(records: list[dict]) -> list[str]:
    """The rounds, most recent first, one line each: `listserv statements` and x-statements."""
    rows = []
    for r in reversed(records):
        state = f"signed {iso(r['signed'])}" if r["signed"] else f"waiting since {iso(r['first'])}"
        names = ", ".join(dict.fromkeys(name for name, _ in r["asked"]))
        rows.append(f"sha256:{r['digest'][:16]}  {state}  quorum {r['quorum']}  asked by {names}")
    return rows


def sign(keyring: Keyring, mailing_list: MailingList, statement: Statement) -> tuple[tuple[str, str, bytes], ...]:
    """The signed statement as the reply's attachments: the text clearsigned, each file with its
    detached signature NAME.sig -- each carrying the statement notation (docs/verify.md)."""
    signed = [(STATEMENT_FILE, "text/plain",
               keyring.clearsign_statement(mailing_list.fingerprint, statement.text.encode("utf-8"), mailing_list.address))]
    for name, data in statement.attachments:
        signed.append((name, "application/octet-stream", data))
        signed.append((f"{name}.sig", "application/pgp-signature",
                       keyring.sign_statement_detached(mailing_list.fingerprint, data, mailing_list.address)))
    return tuple(signed)
