"""RFC 9788's Legacy Display Element: the protected From and Subject repeated in the body, for
clients that do not read protected headers. Pure functions on MIME parts, no I/O.

A copy's outer header says `From: News` and `Subject: [...]`; the real ones travel inside the
encryption. Thunderbird shows the protected Subject but the outer From, Mutt (as far as
`crypt_protected_headers_read` goes) the same, older clients neither -- so every post read
there says "News", and replies quote "News wrote:". The Legacy Display Element puts the fields
that differ inside and out at the top of the message's text, where every client shows them:

    text/plain  the part gets the Content-Type parameter hp-legacy-display="1"; its text begins
                with one "Name: value" line per field, then a blank line
    text/html   the same parameter; the body begins with
                <div class="header-protection-legacy-display"><pre>Name: value ...</pre></div>

A client that implements RFC 9788 removes exactly that (the lines up to the first blank line,
or the div) from a part so marked, and shows the protected header fields instead.

Where it goes: into every Main Body Part (RFC 9788 uses RFC 9787's term) -- from the top of
the payload, every child of a multipart/alternative and the first child of any other multipart,
down to text/plain or text/html that is not an attachment. When no Main Body Part is text (a
post that is only an image, or begins with an attached file), a text/plain part holding only
the Legacy Display Element goes first, marked the same way, so an RFC 9788 client shows it
empty.

Which fields: only those a client reading the outer header would show wrongly (RFC 9788 puts
only obscured or removed fields in it): the Subject, always obscured as `[...]`, and the From
when the pseudonym makes it differ from the outer `News <news@...>`. To, Date and Message-ID are
the same inside and out. Reply-To is left out although it is not outside: it names the list,
which is the outer From, so a reply from an old client goes to the same place.

A member's own client may have added a Legacy Display Element of its own; it repeats that
client's protected fields (its Subject, possibly real names and addresses), so `strip` takes it
out before the list adds its own.
"""

from __future__ import annotations

import html
import re
from email import policy
from email.message import EmailMessage, Message
from email.utils import collapse_rfc2231_value

PARAMETER = "hp-legacy-display"
HTML_CLASS = "header-protection-legacy-display"
_BODY_TAG = re.compile(r"<body\b[^>]*>", re.IGNORECASE)
_DIV_OPEN = re.compile(rf"<div\b[^>]*\bclass\s*=\s*[\"']?[^\"'>]*\b{HTML_CLASS}\b[^>]*>", re.IGNORECASE)
_DIV_TAG = re.compile(r"<(/?)div\b[^>]*>", re.IGNORECASE)
# The parameters of a text part that describe its text and survive re-encoding it.
_TEXT_PARAMS = ("format", "delsp", "name")
_CONTENT_HEADERS = ("content-disposition", "content-description", "content-language", "content-id")

Fields = list[tuple[str, str]]


def marked(part: Message) -> bool:
    return part.get_param(PARAMETER, header="Content-Type") is not None


def add(parts: list[EmailMessage], fields: Fields) -> list[EmailMessage]:
    """`parts` (the children of the payload's multipart/mixed, in order) with the Legacy
    Display Element of `fields` in their Main Body Parts, or in a new leading part."""
    if not fields:
        return parts
    main = _main_body_parts(parts[0]) if parts else []
    done = [part for part in main if _prepend(part, fields)]
    if done:
        return parts
    return [_display_part(fields), *parts]


def strip(part: EmailMessage) -> None:
    """Take a client's own Legacy Display Element (and its marking) out of `part`."""
    if not marked(part) or part.is_multipart():
        return
    text = _text(part)
    if text is not None:
        _set_text(part, without(text, html=part.get_content_subtype() == "html"))
    part.del_param(PARAMETER, header="Content-Type")


def shown_text(part: Message) -> str:
    """The text of a text part as a client that implements RFC 9788 shows it (a charset
    Python does not know is read as UTF-8, with replacement characters)."""
    text = _text(part)
    if text is None:
        payload = part.get_payload(decode=True)
        text = payload.decode("utf-8", "replace").replace("\r\n", "\n") if isinstance(payload, bytes) else ""
    return without(text, html=part.get_content_subtype() == "html") if marked(part) else text


def without(text: str, html: bool) -> str:
    """`text` without its Legacy Display Element: for text/plain the lines up to and including
    the first blank one, for HTML the header-protection-legacy-display div."""
    if not html:
        lines = text.splitlines(keepends=True)
        for number, line in enumerate(lines):
            if not line.strip():
                return "".join(lines[number + 1:])
        return text
    opened = _DIV_OPEN.search(text)
    if opened is None:
        return text
    depth = 1
    for tag in _DIV_TAG.finditer(text, opened.end()):
        depth += -1 if tag.group(1) else 1
        if depth == 0:
            return text[:opened.start()] + text[tag.end():]
    return text


# -- building ---------------------------------------------------------------------------

def _main_body_parts(part: EmailMessage) -> list[EmailMessage]:
    if part.is_multipart():
        children = list(part.iter_parts())
        if part.get_content_subtype() == "alternative":
            return [leaf for child in children for leaf in _main_body_parts(child)]
        return _main_body_parts(children[0]) if children else []
    if part.get_content_type() in ("text/plain", "text/html") and part.get_content_disposition() != "attachment":
        return [part]
    return []


def _lines(fields: Fields) -> str:
    return "".join(f"{name}: {value}\n" for name, value in fields)


def _prepend(part: EmailMessage, fields: Fields) -> bool:
    """Put the element at the top of `part`; False when its text cannot be read (an unknown
    charset), which leaves it as it was."""
    text = _text(part)
    if text is None:
        return False
    if part.get_content_subtype() == "html":
        shown = html.escape(_lines(fields).rstrip("\n"))
        div = f'<div class="{HTML_CLASS}"><pre>{shown}</pre></div>\n'
        body = _BODY_TAG.search(text)
        at = body.end() if body else 0
        text = f"{text[:at]}\n{div}{text[at:]}" if body else div + text
    else:
        text = _lines(fields) + "\n" + text
    _set_text(part, text)
    part.set_param(PARAMETER, "1", header="Content-Type")
    return True


def _display_part(fields: Fields) -> EmailMessage:
    part = EmailMessage(policy=policy.SMTP)
    part.set_content(_lines(fields) + "\n", charset="utf-8", cte="quoted-printable")
    del part["MIME-Version"]
    part.set_param(PARAMETER, "1", header="Content-Type")
    return part


def _text(part: Message) -> str | None:
    try:
        content = part.get_content()  # type: ignore[attr-defined]
    except (LookupError, ValueError, AttributeError):  # unknown charset, broken encoding
        return None
    return content.replace("\r\n", "\n") if isinstance(content, str) else None


def _set_text(part: EmailMessage, text: str) -> None:
    """Replace the text of `part`, keeping what describes it (disposition, Content-ID, format)."""
    kept = {name: part[name] for name in _CONTENT_HEADERS if name in part}
    params = {key: part.get_param(key, header="Content-Type") for key in (*_TEXT_PARAMS, PARAMETER)}
    params = {key: collapse_rfc2231_value(value) for key, value in params.items() if value is not None}
    part.set_content(text, subtype=part.get_content_subtype(), charset="utf-8", cte="quoted-printable")
    del part["MIME-Version"]
    for name, value in kept.items():
        part[name] = value
    for key, value in params.items():
        part.set_param(key, value, header="Content-Type")
