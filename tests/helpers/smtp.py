"""A member's MTA talking to `listserv serve`: real SMTP over loopback, replies returned."""

from __future__ import annotations

import smtplib


def submit(port: int, rcpt: str, raw: bytes, mail_from: str = "someone@example.net") -> tuple[int, str]:
    """Send `raw` exactly as given (no line-ending repair, dot-stuffed); return the final reply."""
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        client.ehlo("client.test")
        code, text = client.mail(mail_from)
        assert code == 250, (code, text)
        code, text = client.rcpt(rcpt)
        if code != 250:
            return code, text.decode()
        code, text = client.docmd("DATA")
        assert code == 354, (code, text)
        body = raw if raw.endswith(b"\r\n") else raw + b"\r\n"
        body = b"\r\n".join(b"." + line if line.startswith(b".") else line for line in body.split(b"\r\n"))
        client.send(body + b".\r\n")
        code, text = client.getreply()
        return code, text.decode()
