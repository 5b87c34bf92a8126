"""Outbound helpers shared by posts, digests and notices: compose's footer, the fan-out of a
composed message into a delivery job, and notices from the list to its admins."""

from __future__ import annotations

from datetime import datetime, timezone
from email import policy
from email.message import EmailMessage

from . import verp
from .model import MailingList, Member
from .services import Services
from .spool import Job, Outgoing, OutJob, Recipient, new_queue_id
from .stages.authorize import option
from .stages.compose import Composed, compose, new_message_id
from .stages.fanout import encrypt_for
from .templates import Templates


def render_footer(templates: Templates, mailing_list: MailingList) -> str:
    return templates.render("footer.txt.j2", list=mailing_list, footer=option(mailing_list, "footer"))


def fan_out(services: Services, outgoing: Outgoing, qid: str, mailing_list: MailingList, kind: str,
            composed: Composed, recipients: list[Member], poster: str | None = None,
            items: tuple[str, ...] = ()) -> tuple[OutJob | None, tuple[str, ...]]:
    """Encrypt once for every recipient and write the job: shared packet + one record each.
    `poster` (who signed a post) is told if no copy can be delivered; `items` are the
    backlog items a digest part carries."""
    if not recipients:
        return None, ()
    fan = encrypt_for(services.keyring, mailing_list.fingerprint,
                      [m.fingerprint for m in recipients], composed.inner)
    key = verp.secret(services.store)
    records = [
        Recipient(m.email, verp.token(key, mailing_list.address, m.email),
                  fan.pkesks[m.fingerprint].packet, fan.pkesks[m.fingerprint].batch, m.fingerprint)
        for m in recipients if m.fingerprint in fan.pkesks
    ]
    if not records:
        return None, tuple(fan.unusable)
    return_path = f"{mailing_list.local}-bounces+{{token}}@{mailing_list.domain}"
    job = outgoing.write(qid, mailing_list.address, kind, return_path, fan.shared,
                         composed.outer_prefix, composed.outer_suffix, records, poster, items)
    return job, tuple(fan.unusable)


def notify_admins(services: Services, templates: Templates, mailing_list: MailingList,
                  roster: list[Member], template: str, **values: object) -> OutJob | None:
    """A notice from the list to its admins (found in `roster`), encrypted like any post."""
    admins = [m for m in roster if m.role == "admin" and m.active]  # never to a revoked key
    return send_notice(services, templates, mailing_list, admins, template, **values)


def send_notice(services: Services, templates: Templates, mailing_list: MailingList,
                recipients: list[Member], template: str,
                attachments: tuple[tuple[str, str, bytes], ...] = (), **values: object) -> OutJob | None:
    """A message from the list itself, rendered from `template` (first line 'Subject: ...',
    a blank line, the body), with optional (filename, mime type, data) attachments."""
    if not recipients:
        return None
    text = templates.render(template, list=mailing_list, **values)
    subject, _, body = text.partition("\n\n")
    content = EmailMessage(policy=policy.SMTP)
    content["Subject"] = subject.removeprefix("Subject:").strip()
    content.set_content(body, charset="utf-8")
    for filename, mime_type, data in attachments:
        maintype, subtype = mime_type.split("/", 1)
        content.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    composed = compose(
        content.as_bytes(), in_reply_to=None, references=None, sender=None,
        mailing_list=mailing_list, kind="notice", footer=render_footer(templates, mailing_list),
        now=datetime.now(timezone.utc), message_id=new_message_id(mailing_list),
    )
    job, _ = fan_out(services, Outgoing(services.spool), new_queue_id(), mailing_list, "notice",
                     composed, recipients)
    return job


def send_welcome(services: Services, templates: Templates, mailing_list: MailingList,
                 member: Member) -> OutJob | None:
    """Welcome a new member: the list's address, fingerprint and key, how to post and alert."""
    key = services.keyring.export(mailing_list.fingerprint).encode()
    return send_notice(
        services, templates, mailing_list, [member], "welcome.txt.j2",
        attachments=(("list-key.asc", "application/pgp-keys", key),),
        member=member, fingerprint=mailing_list.fingerprint,
        schedule=option(mailing_list, "digest_schedule"),
        require_encryption=option(mailing_list, "require_encryption"),
    )


def tell_quarantined(services: Services, templates: Templates, job: Job, reason: str) -> OutJob | None:
    """The admins of the job's list hear that an accepted post was set aside (no content)."""
    snapshot = services.store.read()
    mailing_list = snapshot.get_list(job.list)
    if mailing_list is None:
        return None
    return notify_admins(services, templates, mailing_list, snapshot.members(job.list),
                         "notice-quarantined.txt.j2", qid=job.qid, reason=reason)
