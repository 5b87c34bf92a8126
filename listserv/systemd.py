"""A systemd unit for `listserv serve` under its own user in a tight sandbox (pure: text out).

The sandbox leaves the service what it uses: its home (and outbox) writable, loopback and
outbound SMTP sockets, and gpg, which it starts itself. MemoryDenyWriteExecute holds for
CPython, the cryptography wheel, gpg and gpg-agent (tests/test_systemd.py runs a post through
`serve` under the same rule). When both the listener and the relay are on loopback the unit
also allows no other IP address, so a compromised process cannot reach out.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

from .config import Settings
from .errors import ConfigProblem, UsageError, WrongUser

_PLAIN = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")
_HOMES = (Path("/home"), Path("/root"), Path("/run/user"))  # what ProtectHome= hides
_TEMPORARY = (Path("/tmp"), Path("/var/tmp"))  # what PrivateTmp= replaces with empty folders


def quote(word: str, exec_line: bool = False) -> str:
    """`word` as one systemd word: % specifiers (and $ in Exec lines) escaped, quoted if needed."""
    if any(ch in word for ch in "\n\r\0"):
        raise UsageError(f"{word!r} has a line break or NUL, which a systemd unit cannot hold.")
    word = word.replace("%", "%%")
    if exec_line:
        word = word.replace("$", "$$")
    if _PLAIN.fullmatch(word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve anywhere, and resolving needs the network


def _under(path: Path, roots: tuple[Path, ...]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def _protect_home(writable: list[Path]) -> str:
    # A home under /home stays reachable: read-only there, the home writable through ReadWritePaths.
    return "read-only" if any(_under(p, _HOMES) for p in writable) else "yes"


def warnings(command: list[str], home: Path, outbox: Path, user: str, owner: str) -> list[str]:
    """What would keep the unit from working although it is valid, one sentence each; `owner`
    is the name of the home's owner."""
    found = []
    if user != owner:
        found.append(f"the unit runs as {user}, but {home} belongs to {owner}, so the service would "
                     f"stop at once (exit 77): give --user {owner}, or as root run: chown -R {user}: {home}")
    program = Path(command[0])
    if _under(program, _TEMPORARY):
        found.append(f"{program} is under /tmp or /var/tmp, which the service's PrivateTmp hides from it, "
                     "so it could not start: install listserv elsewhere, such as /opt/listserv (docs/guide.md)")
    writable = [home] + ([] if _under(outbox, (home,)) else [outbox])
    protect = _protect_home(writable)
    if _under(home, _HOMES):
        found.append(f"{home} is under {'/root' if _under(home, (Path('/root'),)) else 'a user home'}, "
                     f"which the unit's ProtectHome={protect} makes read-only (the home alone writable "
                     "again) and which other users may not enter: put the home under /var/lib/listserv "
                     "(docs/guide.md)")
    if protect == "yes" and _under(program, _HOMES):
        found.append(f"{program} is under /home or /root, which the unit's ProtectHome=yes hides from the "
                     "service, so it could not start: install listserv elsewhere, such as /opt/listserv "
                     "(docs/guide.md)")
    return found


def unit(command: list[str], home: Path, outbox: Path, settings: Settings, user: str) -> str:
    """The unit file; `command` is how to run listserv (absolute paths), `home` its home."""
    writable = [home] + ([] if _under(outbox, (home,)) else [outbox])
    for path in writable:
        if _under(path, _TEMPORARY):
            raise UsageError(f"{path} is under /tmp or /var/tmp, which the service's PrivateTmp "
                             "hides from it; put the home under /var/lib.")
    start = " ".join(quote(w, exec_line=True) for w in [*command, "--home", str(home), "serve"])
    hosts = [settings.listen[0]] + ([settings.relay[0]] if settings.relay else [])
    lines = [
        f"# listserv as a system service, made by `listserv mta systemd` for {home}.",
        "# Make it again after changing [server] listen or [delivery] relay.",
        "[Unit]",
        "Description=listserv, a PGP mailing list server",
        "After=network.target",
        "",
        "[Service]",
        "Type=exec",
        f"User={quote(user)}",
        f"ExecStart={start}",
        "# SIGTERM is a clean stop: the listener closes, checks under way reply, workers stop.",
        "Restart=on-failure",
        "RestartSec=5s",
        # A home of another user or a wrong listserv.toml does not mend itself: stop rather than
        # fail every 5 s (a port in use, 69, may free up, so that one is retried).
        f"RestartPreventExitStatus={WrongUser.exit_code} {ConfigProblem.exit_code}",
        "UMask=0077",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=" + " ".join(quote(str(p)) for p in writable),
        f"ProtectHome={_protect_home(writable)}",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "PrivateMounts=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        "ProtectProc=invisible",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "RestrictNamespaces=yes",
        "RestrictRealtime=yes",
        "RestrictSUIDSGID=yes",
        "RemoveIPC=yes",
        "LockPersonality=yes",
        "MemoryDenyWriteExecute=yes",
        "SystemCallArchitectures=native",
        "SystemCallFilter=@system-service",
        # A call outside the filter fails (EPERM) instead of killing the server mid-delivery.
        "SystemCallErrorNumber=EPERM",
    ]
    if settings.listen[1] < 1024:  # the only privilege listserv could need: a low port
        lines += ["CapabilityBoundingSet=CAP_NET_BIND_SERVICE", "AmbientCapabilities=CAP_NET_BIND_SERVICE"]
    else:
        lines += ["CapabilityBoundingSet="]
    if all(_loopback(host) for host in hosts):
        lines += ["IPAddressDeny=any", "IPAddressAllow=localhost"]
    lines += ["", "[Install]", "WantedBy=multi-user.target"]
    return "\n".join(lines) + "\n"
