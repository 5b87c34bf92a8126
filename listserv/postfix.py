"""The maps Postfix needs in front of listserv, made from the home's lists (pure: text out).

    transport         each address listserv takes at RCPT -> listserv:[HOST]:PORT of `listserv serve`
    service.cf        the master.cf entry of that `listserv` transport: Postfix's smtp client
    relay_domains     the lists' domains: Postfix relays them (they must not be in mydestination)
    relay_recipients  the addresses Postfix takes at RCPT in those domains; any other address
                      there is refused at once (550 5.1.1), never taken and bounced later
    virtual           LIST-owner@ -> the list's active admins
    limits.cf         message_size_limit (the return path) and listserv_post_size_limit (the
                      inbound smtpd), from the lists' own size limits; and
                      listserv_destination_recipient_limit = 1 (below)

LIST-bounces@ stands for every LIST-bounces+TOKEN@: with `recipient_delimiter = +` Postfix
looks a full address up first, then the address without its +extension. The addresses are
the ones `stages.route` takes, built from its own constants so the two cannot drift apart.
LIST-request@ goes to listserv like the list itself (signed commands, docs/requests.md).
LIST-sendkey@ is not listed: listserv refuses it at RCPT until the issue that adds it, and a
map entry would only turn that refusal into a bounce.

listserv takes one list per SMTP transaction and answers a second RCPT with 452, so a
cross-post (one message to two lists) given to the plain `smtp` transport would have every
list but the first deferred for a retry. The `listserv` transport is an smtp client of its
own, and its recipient limit of 1 makes Postfix give each list address its own transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .errors import UsageError
from .model import ACTIVE, MailingList, Member
from .stages.route import BOUNCES, REQUEST, URGENT

# Room for what Postfix (Received) and its milters (Authentication-Results, spam scores) add
# to a post before listserv counts it: a post Postfix takes must fit the list's limit.
POST_HEADROOM = 8 * 1024
# A copy is larger than the post it carries (re-encrypted, armored, the list's headers and
# footer added); the return path must take the copies of the largest post.
COPY_FACTOR = 2
WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}
FILES = ("transport", "relay_domains", "relay_recipients", "virtual", "service.cf", "limits.cf")
TRANSPORT = "listserv"  # the master.cf service the transport map names
# For `postconf -M -e`: the service, by name/type, and its master.cf line (chroot off: the
# client reaches a bracketed loopback address and needs no files from /etc).
SERVICE = f"{TRANSPORT}/unix={TRANSPORT} unix - - n - - smtp"
# One recipient per delivery: each list address is its own SMTP transaction (see above).
RECIPIENT_LIMIT = f"{TRANSPORT}_destination_recipient_limit"


@dataclass(frozen=True)
class Limits:
    post: int  # bytes: the inbound smtpd refuses larger posts at SMTP time
    copy: int  # bytes: Postfix's own message_size_limit, so the return path takes every copy


def nexthop(listen: tuple[str, int]) -> str:
    """The transport that reaches `listen`: the `listserv` service, brackets keep Postfix
    from looking up an MX."""
    host, port = listen
    if port == 0:
        raise UsageError("[server] listen has port 0; give listserv a fixed port for Postfix to reach.")
    host = WILDCARDS.get(host, host)
    return f"{TRANSPORT}:[{host}]:{port}"


def list_addresses(mailing_list: MailingList) -> list[str]:
    """Every address listserv takes at RCPT for the list (LIST-bounces@ stands for +TOKEN)."""
    local, domain = mailing_list.local, mailing_list.domain
    return [mailing_list.address, f"{local}{URGENT}@{domain}", f"{local}{BOUNCES.rstrip('+')}@{domain}",
            f"{local}{REQUEST}@{domain}"]


def limits(lists: Iterable[MailingList], max_data_kb: int) -> Limits:
    """Postfix can limit size only per smtpd, not per list: the largest list's limit is taken,
    and a post to a list with a smaller one is refused by listserv and bounced by Postfix."""
    name = "max_message_size_kb"
    largest = max((ml.option(name) for ml in lists), default=max_data_kb)
    post = min(largest, max_data_kb) * 1024
    return Limits(post=max(post - POST_HEADROOM, 1024), copy=post * COPY_FACTOR)


def _table(rows: list[tuple[str, str]]) -> str:
    width = max((len(key) for key, _ in rows), default=0) + 2
    return "".join(f"{key:<{width}}{value}\n" for key, value in rows)


def _header(what: str, source: str, then: str = "postmap this file") -> str:
    return (f"# {what}\n# Made by `listserv mta postfix` from {source}; do not edit. Make it again\n"
            f"# after adding or removing a list, then {then} (docs/postfix.md).\n\n")


def render(lists: list[MailingList], members: Mapping[str, list[Member]], listen: tuple[str, int],
           max_data_kb: int, source: str) -> dict[str, str]:
    """The files, by name (FILES). `members` maps a list's address to its members."""
    ordered = sorted(lists, key=lambda ml: (ml.domain, ml.local))
    source = "".join(ch if ch.isprintable() else "?" for ch in source)  # a line break would end the comment
    hop = nexthop(listen)
    addresses = [a for ml in ordered for a in list_addresses(ml)]
    owners = []
    for ml in ordered:
        emails = sorted(m.email for m in members.get(ml.address, []) if m.role == "admin" and m.state == ACTIVE)
        if emails:  # with no admin there is no entry, and Postfix refuses LIST-owner@ at RCPT
            owners.append((ml.owner_address, ", ".join(emails)))
    size = limits(lists, max_data_kb)
    return {
        "transport": _header("Postfix transport_maps: the lists' addresses go to listserv.", source)
        + _table([(a, hop) for a in addresses]),
        "relay_domains": _header("Postfix relay_domains: the lists' domains.", source)
        + _table([(d, "OK") for d in sorted({ml.domain for ml in ordered})]),
        "relay_recipients": _header(
            "Postfix relay_recipient_maps: addresses taken at RCPT (LIST-owner@ via virtual).", source)
        + _table([(a, "OK") for a in addresses]),
        "virtual": _header("Postfix virtual_alias_maps: LIST-owner@ reaches the list's admins.", source)
        + _table(owners),
        "service.cf": "# master.cf: the `listserv` transport the lists' addresses go through, an smtp client.\n"
        f"# Made by `listserv mta postfix` from {source}; do not edit. Apply it before the\n"
        "# transport map that names it: postconf -M -e \"$(grep -v '^#' service.cf)\" (docs/postfix.md).\n\n"
        f"{SERVICE}\n",
        "limits.cf": _header("main.cf limits: sizes from the lists' own; one list per delivery.", source,
                             "apply it: postconf -e $(grep -v '^#' limits.cf)")
        + "# Above 51200000, mailbox_size_limit and virtual_mailbox_limit must be at least as large.\n"
        + f"message_size_limit={size.copy}\nlistserv_post_size_limit={size.post}\n"
        + f"{RECIPIENT_LIMIT}=1\n",
    }
