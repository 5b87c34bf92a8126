"""The home directory of a deployment and the settings in its listserv.toml.

    HOME/listserv.toml   settings (written by `listserv init`, never overwritten)
    HOME/keys/           GNUPGHOME of the deployment, mode 0700
    HOME/data/           the database, the spool and the default outbox, mode 0700
    HOME/templates/      optional operator overrides of the shipped templates
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from .errors import EnvironmentProblem, UsageError

DEFAULT_TOML = """\
# listserv settings. Every key is optional; the values shown are the defaults.

[server]
# Where the SMTP listener binds. Keep it on loopback behind your MTA.
listen = "127.0.0.1:8025"
# Largest SMTP DATA accepted before any list is known, in KiB (lists may set less).
max_data_kb = 51200
# Threads that check DATA (MIME, decryption, signature), apart from those answering RCPT,
# so that slow messages never hold up other clients' conversations.
data_threads = 4
# Seconds a DATA check may take, from the end of DATA to the reply. Past it the client
# hears 451 (and sends the message again later); nothing of the message is kept.
data_timeout = 60

[delivery]
# Relay that delivers the outgoing copies, "host:port". Empty: write them to the outbox.
relay = ""
# Maildir that receives the outgoing copies when no relay is set (relative to the home).
outbox = "data/outbox"
# SMTP connections used in parallel towards the relay.
concurrency = 4
# Retries after a 4xx reply or a connection failure, in seconds (Postfix's defaults):
# first retry after retry_min, doubling up to retry_max, given up after lifetime.
retry_min = 300
retry_max = 4000
lifetime = 432000
# STARTTLS towards the relay: "auto" uses it whenever the relay offers it and checks the
# relay's certificate (never on a loopback relay), "always" requires it, "never" skips it.
starttls = "auto"
# PEM file of the certificate authorities trusted for the relay (empty: the system's).
tls_ca_file = ""
"""


def _starttls(value: str) -> str:
    if value not in ("auto", "always", "never"):
        raise UsageError(f"[delivery] starttls '{value}' is not auto, always or never.")
    return value


def _positive(value: object, what: str) -> float:
    number = float(value)  # type: ignore[arg-type]
    if not number > 0:  # NaN too
        raise UsageError(f"[server] {what} must be more than 0.")
    return number


def parse_hostport(value: str, what: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise UsageError(f"{what} '{value}' is not HOST:PORT.")
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class Settings:
    listen: tuple[str, int] = ("127.0.0.1", 8025)
    max_data_kb: int = 51200
    data_threads: int = 4
    data_timeout: float = 60.0
    relay: tuple[str, int] | None = None
    outbox: str = "data/outbox"
    concurrency: int = 4
    retry_min: float = 300.0
    retry_max: float = 4000.0
    lifetime: float = 432000.0
    starttls: str = "auto"
    tls_ca_file: str = ""


@dataclass(frozen=True)
class Home:
    root: Path

    @property
    def config_file(self) -> Path:
        return self.root / "listserv.toml"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def database(self) -> Path:
        return self.data / "listserv.json"

    @property
    def events(self) -> Path:
        """Seen signatures (replay) and rejections: a small database written per message,
        apart from the member database so that a busy list never rewrites all members."""
        return self.data / "events.json"

    @property
    def digests(self) -> Path:
        return self.data / "digest"

    @property
    def spool(self) -> Path:
        return self.data / "spool"

    @property
    def templates(self) -> Path:
        return self.root / "templates"

    def outbox(self, settings: Settings) -> Path:
        return self.root / settings.outbox

    def initialise(self) -> list[str]:
        """Create what is missing; never overwrite. Returns what was created."""
        created = []
        self.root.mkdir(parents=True, exist_ok=True)
        for folder in (self.keys, self.data):
            if not folder.exists():
                folder.mkdir(mode=0o700)
                created.append(str(folder))
            os.chmod(folder, 0o700)
        if not self.config_file.exists():
            self.config_file.write_text(DEFAULT_TOML)
            created.append(str(self.config_file))
        return created

    def require(self) -> None:
        if not self.keys.is_dir() or not self.data.is_dir():
            raise EnvironmentProblem(
                f"{self.root} is not a listserv home; run 'listserv --home {self.root} init' first."
            )

    def settings(self) -> Settings:
        if not self.config_file.exists():
            return Settings()
        try:
            raw = tomllib.loads(self.config_file.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise UsageError(f"{self.config_file} cannot be read: {exc}.") from None
        server, delivery = raw.get("server", {}), raw.get("delivery", {})
        defaults = Settings()
        try:
            relay = str(delivery.get("relay", "") or "")
            return Settings(
                listen=parse_hostport(str(server.get("listen", "127.0.0.1:8025")), "listen"),
                max_data_kb=int(server.get("max_data_kb", defaults.max_data_kb)),
                data_threads=max(1, int(server.get("data_threads", defaults.data_threads))),
                data_timeout=_positive(server.get("data_timeout", defaults.data_timeout), "data_timeout"),
                relay=parse_hostport(relay, "relay") if relay else None,
                outbox=str(delivery.get("outbox", defaults.outbox)),
                concurrency=max(1, int(delivery.get("concurrency", defaults.concurrency))),
                retry_min=float(delivery.get("retry_min", defaults.retry_min)),
                retry_max=float(delivery.get("retry_max", defaults.retry_max)),
                lifetime=float(delivery.get("lifetime", defaults.lifetime)),
                starttls=_starttls(str(delivery.get("starttls", defaults.starttls))),
                tls_ca_file=str(delivery.get("tls_ca_file", "") or ""),
            )
        except (TypeError, ValueError):
            raise UsageError(f"{self.config_file} has a value of the wrong type.") from None
