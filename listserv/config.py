"""The home directory of a deployment and the settings in its listserv.toml.

    HOME/listserv.toml   settings (written by `listserv init`, never overwritten)
    HOME/keys/           GNUPGHOME of the deployment, mode 0700
    HOME/data/           the database, the spool and the default outbox, mode 0700
    HOME/templates/      optional operator overrides of the shipped templates

Every server setting is declared once, as a field of `Settings` with its section, type, default
and meaning. `DEFAULT_TOML` (what `init` writes) and docs/settings.md
(`python -m listserv.config > docs/settings.md`) are rendered from those fields, and reading
listserv.toml refuses what they do not declare: a misspelt key silently ignored would send the
copies somewhere the operator did not choose.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import textwrap
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from .errors import ConfigProblem, EnvironmentProblem, UsageError


def split_hostport(value: str) -> tuple[str, int] | None:
    """'host:port' or '[v6]:port' -> (host, port); None when it is not that."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        return None
    return host.strip("[]"), int(port)


def parse_hostport(value: str, what: str) -> tuple[str, int]:
    parsed = split_hostport(value)
    if parsed is None:
        raise UsageError(f"{what} '{value}' is not HOST:PORT.")
    return parsed


def format_hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# -- the types a setting can have ---------------------------------------------------------------
# Each parser takes the value as tomllib read it and returns what `Settings` holds, or raises
# _WrongType; its `expected` names the type in refusals and in docs/settings.md.

class _WrongType(ValueError):
    pass


def _kind(expected: str) -> Callable[[Callable[[Any], Any]], Callable[[Any], Any]]:
    def mark(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
        parse.expected = expected  # type: ignore[attr-defined]
        return parse
    return mark


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)  # TOML true is no 1


@_kind("a string HOST:PORT")
def _hostport(value: Any) -> tuple[str, int]:
    parsed = split_hostport(value) if isinstance(value, str) else None
    if parsed is None:
        raise _WrongType
    return parsed


@_kind('a string HOST:PORT, or "" for none')
def _optional_hostport(value: Any) -> tuple[str, int] | None:
    return None if value == "" else _hostport(value)


@_kind("a string")
def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise _WrongType
    return value


@_kind("a whole number of at least 1")
def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _WrongType
    return value


@_kind("a number of seconds greater than 0")
def _seconds(value: Any) -> float:
    if not _is_number(value) or not value > 0:  # NaN too
        raise _WrongType
    return float(value)


def _choice(*allowed: str) -> Callable[[Any], str]:
    @_kind("one of " + ", ".join(f'"{a}"' for a in allowed))
    def parse(value: Any) -> str:
        if value not in allowed:
            raise _WrongType
        return value
    return parse


def _setting(section: str, default: Any, parse: Callable[[Any], Any], doc: str) -> Any:
    """A field of `Settings`: `default` is written as in listserv.toml, `doc` is its comment."""
    return field(default=parse(default),
                 metadata={"section": section, "toml": default, "parse": parse, "doc": doc})


@dataclass(frozen=True)
class Settings:
    """The server settings; the fields are in the order listserv.toml shows them."""

    listen: tuple[str, int] = _setting(
        "server", "127.0.0.1:8025", _hostport,
        "Where the SMTP listener binds. Keep it on loopback behind your MTA.")
    max_data_kb: int = _setting(
        "server", 51200, _count,
        "Largest SMTP DATA accepted before any list is known, in KiB (lists may set less).")
    data_threads: int = _setting(
        "server", 4, _count,
        "Threads that check DATA (MIME, decryption, signature), apart from those answering RCPT, "
        "so that slow messages never hold up other clients' conversations.")
    data_timeout: float = _setting(
        "server", 60, _seconds,
        "Seconds a DATA check may take, from the end of DATA to the reply. Past it the client "
        "hears 451 (and sends the message again later); nothing of the message is kept.")
    relay: tuple[str, int] | None = _setting(
        "delivery", "", _optional_hostport,
        'Relay that delivers the outgoing copies, "host:port". Empty: write them to the outbox.')
    outbox: str = _setting(
        "delivery", "data/outbox", _text,
        "Maildir that receives the outgoing copies when no relay is set (relative to the home).")
    concurrency: int = _setting(
        "delivery", 4, _count,
        "SMTP connections used in parallel towards the relay.")
    retry_min: float = _setting(
        "delivery", 300, _seconds,
        "First retry of a copy after a 4xx reply or a connection failure, in seconds; each "
        "further retry waits twice as long (Postfix's minimal_backoff_time).")
    retry_max: float = _setting(
        "delivery", 4000, _seconds,
        "Longest wait between two retries, in seconds (Postfix's maximal_backoff_time).")
    lifetime: float = _setting(
        "delivery", 432000, _seconds,
        "A copy still not delivered this many seconds after it was queued is given up "
        "(Postfix's maximal_queue_lifetime, 5 days).")
    starttls: str = _setting(
        "delivery", "auto", _choice("auto", "always", "never"),
        'STARTTLS towards the relay: "auto" uses it whenever the relay offers it and checks the '
        "relay's certificate (never on a loopback relay), \"always\" requires it, \"never\" skips it.")
    tls_ca_file: str = _setting(
        "delivery", "", _text,
        "PEM file of the certificate authorities trusted for the relay (empty: the system's).")


SETTINGS = fields(Settings)
SECTIONS: dict[str, dict[str, Any]] = {}
for _field in SETTINGS:
    SECTIONS.setdefault(_field.metadata["section"], {})[_field.name] = _field


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return json.dumps(value) if isinstance(value, (str, int, float)) else f"a {type(value).__name__}"


def render_toml() -> str:
    """What `listserv init` writes: every setting with its default and its comment."""
    lines = ["# listserv settings. Every key is optional; the values shown are the defaults.",
             "# An unknown key or section is refused at start; see docs/settings.md."]
    for section, table in SECTIONS.items():
        lines += ["", f"[{section}]"]
        for name, setting in table.items():
            lines += textwrap.wrap(setting.metadata["doc"], 92, initial_indent="# ",
                                   subsequent_indent="# ")
            lines.append(f"{name} = {_toml_value(setting.metadata['toml'])}")
    return "\n".join(lines) + "\n"


DEFAULT_TOML = render_toml()


def render_markdown() -> str:
    """The settings tables for docs/settings.md."""
    lines = [
        "# Server settings",
        "",
        "The settings of a deployment are in `HOME/listserv.toml`; `listserv init` writes it with",
        "every key, its default and a comment. Every key is optional. A key or section not listed",
        "here, or a value of the wrong type, is refused when a command reads the settings",
        "(`listserv serve`, exit 78), naming the line. List options are per list, in",
        "[options.md](options.md).",
        "This page is generated from `listserv/config.py` (`python -m listserv.config > docs/settings.md`).",
    ]
    for section, table in SECTIONS.items():
        lines += ["", f"## `[{section}]`", "", "| key | type | default | meaning |", "|---|---|---|---|"]
        for name, setting in table.items():
            meta = setting.metadata
            default = _toml_value(meta["toml"])
            lines.append(f"| `{name}` | {meta['parse'].expected} | `{default}` | {meta['doc']} |")
    return "\n".join(lines) + "\n"


# -- reading listserv.toml ------------------------------------------------------------------------

_HEADER = re.compile(r"^\s*\[\[?\s*([^\[\]#]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"""^\s*((?:"[^"]*"|'[^']*'|[A-Za-z0-9_-]+)(?:\s*\.\s*(?:"[^"]*"|'[^']*'|[A-Za-z0-9_-]+))*)\s*=""")
_PART = re.compile(r"""\s*("([^"]*)"|'([^']*)'|[A-Za-z0-9_-]+)\s*""")


def _dotted(text: str) -> tuple[str, ...]:
    return tuple(m.group(2) if m.group(2) is not None else m.group(3) if m.group(3) is not None
                 else m.group(1) for m in _PART.finditer(text))


def key_lines(text: str) -> dict[tuple[str, ...], int]:
    """The line where each table and key is first written, by its dotted path. Only for
    messages: tomllib, which decides what the file means, keeps no positions."""
    lines: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    in_string = None  # the quote of a multi-line string that is open
    for number, line in enumerate(text.splitlines(), 1):
        if in_string:
            if line.count(in_string) % 2:
                in_string = None
            continue
        header = _HEADER.match(line)
        if header:
            table = _dotted(header.group(1))
            lines.setdefault(table, number)
            continue
        key = _KEY.match(line)
        if key:
            path = _dotted(key.group(1))
            for depth in range(1, len(path) + 1):
                lines.setdefault(table + path[:depth], number)
        for quote in ('"""', "'''"):
            if line.count(quote) % 2:
                in_string = quote
    return lines


def _suggest(name: str, known: list[str], shown: Callable[[str], str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f"; did you mean {shown(close[0])}?" if close else ""


def parse_settings(raw: dict[str, Any], text: str, where: str) -> Settings:
    """`raw` as tomllib read `text` (the file `where`) -> Settings, or ConfigProblem naming the
    first key that is unknown or of the wrong type, and its line."""
    lines = key_lines(text)

    def at(*path: str) -> str:
        line = lines.get(path)
        return f"{where} line {line}" if line else where

    values: dict[str, Any] = {}
    for section, table in raw.items():
        if section not in SECTIONS:
            if not isinstance(table, dict):  # a key above the first [section]
                home = next((s for s, t in SECTIONS.items() if section in t), None)
                hint = f"; it belongs under [{home}]" if home else ""
                raise ConfigProblem(f"{at(section)}: unknown key '{section}' outside any section{hint}.")
            hint = _suggest(section, list(SECTIONS), lambda s: f"[{s}]")
            raise ConfigProblem(f"{at(section)}: unknown section [{section}]{hint or '.'}")
        if not isinstance(table, dict):
            raise ConfigProblem(f"{at(section)}: '{section}' must be the section [{section}].")
        for key, value in table.items():
            setting = SECTIONS[section].get(key)
            if setting is None:
                hint = _suggest(key, list(SECTIONS[section]), lambda k: f"'{k}'")
                raise ConfigProblem(f"{at(section, key)}: unknown key '{key}' in [{section}]{hint or '.'}")
            parse = setting.metadata["parse"]
            try:
                values[key] = parse(value)
            except _WrongType:
                raise ConfigProblem(f"{at(section, key)}: [{section}] {key} must be {parse.expected}, "
                                    f"not {_toml_value(value)}.") from None
    return Settings(**values)


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

    def git_checkout(self) -> Path | None:
        """The git work tree the home is in (its top, the folder holding `.git`), if any. The
        home need not exist yet; its path, with links resolved too, is walked up to /."""
        for start in dict.fromkeys((self.root.absolute(), self.root.resolve())):
            for folder in (start, *start.parents):
                if (folder / ".git").exists():  # a folder, or a file in a worktree or submodule
                    return folder
        return None

    def foreign_part(self) -> tuple[Path, int] | None:
        """The first part of the home (and its owner's uid) that the user of this process does
        not own; None when all that exists is theirs, or nothing exists yet."""
        for path in (self.root, self.keys, self.data, self.config_file):
            try:
                owner = path.stat().st_uid
            except OSError:
                continue  # missing or unreadable: the command's own checks say so
            if owner != os.geteuid():
                return path, owner
        return None

    def owners(self) -> dict[int, tuple[int, Path]]:
        """Each owner's uid among the home and everything in it, with how many entries it owns
        and the first of them; the home's own owner first. Empty when the home does not exist.
        Links are not followed (a link's target may well be another user's)."""
        found: dict[int, tuple[int, Path]] = {}

        def count(path: Path, uid: int) -> None:
            number, first = found.get(uid, (0, path))
            found[uid] = (number + 1, first)

        try:
            count(self.root, self.root.stat().st_uid)
        except OSError:
            return {}
        for folder, dirs, files in os.walk(self.root, onerror=lambda error: None):
            for name in sorted(dirs) + sorted(files):
                path = Path(folder, name)
                try:
                    count(path, path.lstat().st_uid)
                except OSError:
                    continue  # gone meanwhile
        return found

    def require(self) -> None:
        if not self.keys.is_dir() or not self.data.is_dir():
            raise EnvironmentProblem(
                f"{self.root} is not a listserv home; run 'listserv --home {self.root} init' first."
            )

    def settings(self) -> Settings:
        if not self.config_file.exists():
            return Settings()
        try:
            text = self.config_file.read_text()
            raw = tomllib.loads(text)
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigProblem(f"{self.config_file} cannot be read: {exc}.") from None
        return parse_settings(raw, text, str(self.config_file))


if __name__ == "__main__":
    print(render_markdown(), end="")
