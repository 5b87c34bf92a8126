"""A private Postfix for tests: its own config and queue in a temporary folder, loopback only.

It is configured the way docs/postfix.md says (the blocks marked `<!-- tested: NAME -->` there
are applied as written, with the test's paths and ports), plus what stands in for the rest of
the Internet: the members' domains are delivered to Maildirs by Postfix's virtual(8) agent.
Needs root (Postfix's master starts as root) and the `postfix` package.
"""

from __future__ import annotations

import email
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "postfix.md"
DOC_MAPS = "/etc/postfix/listserv"  # where the recipe installs the maps
DOC_RETURN = "127.0.0.1:10026"


def tool(name: str) -> str | None:
    """Postfix's commands live in /usr/sbin, which a PATH may lack."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def cannot_run() -> str | None:
    """Why this machine cannot run a private Postfix, as a sentence; None when it can."""
    if os.geteuid() != 0:
        return "The Postfix tests must run as root: Postfix's master process starts as root."
    for name in ("postfix", "postconf", "postmap"):
        if tool(name) is None:
            return f"The Postfix tests need the postfix package ({name} is not installed): apt-get install postfix."
    for name in ("postfix", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            return f"The Postfix tests need the system user '{name}', which the postfix package makes."
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def doc_block(name: str, kind: str = "tested") -> str:
    """The fenced block after `<!-- KIND: NAME -->` in docs/postfix.md: `tested` blocks are
    applied to a real Postfix, `output` blocks are compared with what listserv prints."""
    match = re.search(rf"<!-- {kind}: {re.escape(name)} -->\n```[^\n]*\n(.*?)\n```", DOC.read_text(), re.S)
    assert match, f"docs/postfix.md has no block marked '{kind}: {name}'"
    return match.group(1)


# Everything a Postfix needs that docs/postfix.md leaves to the distribution's master.cf.
_SERVICES = """\
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
virtual   unix  - n n - - virtual
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


class Postfix:
    """`mailboxes` maps an address to its Maildir; `aliases` maps an address to another."""

    def __init__(self, domains: list[str], mailboxes: list[str], aliases: dict[str, str]):
        self.root = Path(tempfile.mkdtemp(prefix="listserv-postfix-"))
        os.chmod(self.root, 0o755)  # Postfix's daemons and the virtual agent run unprivileged
        self.conf, self.maps = self.root / "conf", self.root / "listserv"
        self.domains, self.mailboxes, self.aliases = domains, mailboxes, aliases
        self.inbound, self.returns = free_port(), free_port()
        self.started = False

    # -- setting up ------------------------------------------------------------
    def postconf(self, *settings: str) -> None:
        self.run("postconf", "-c", str(self.conf), "-e", *settings)

    def run(self, *command: str) -> str:
        """A Postfix command (by name), which must succeed."""
        done = subprocess.run([tool(command[0]), *command[1:]], capture_output=True, text=True)
        assert done.returncode == 0, (command, done.stdout, done.stderr, self.log)
        return done.stdout

    def _doc(self, name: str) -> str:
        return (doc_block(name).replace(DOC_MAPS, str(self.maps))
                .replace(DOC_RETURN, f"127.0.0.1:{self.returns}"))

    def configure(self) -> None:
        """main.cf and master.cf, before the maps exist (`listserv mta postfix` writes them)."""
        for folder in (self.conf, self.maps, self.root / "queue"):
            folder.mkdir()
        nobody = pwd.getpwnam("nobody")
        for folder, owner in ((self.root / "data", "postfix"), (self.root / "mail", "nobody")):
            folder.mkdir()
            os.chown(folder, pwd.getpwnam(owner).pw_uid, pwd.getpwnam(owner).pw_gid)
        (self.conf / "main.cf").write_text(f"""\
compatibility_level = 3.6
queue_directory = {self.root}/queue
data_directory = {self.root}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.lists.example.org
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
maillog_file_prefixes = {self.root}
maillog_file = {self.root}/maillog
alias_maps =
alias_database =
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
biff = no
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
virtual_mailbox_domains = {' '.join(self.domains)}
virtual_mailbox_base = {self.root}/mail
virtual_mailbox_maps = hash:{self.conf}/mailboxes
virtual_uid_maps = static:{nobody.pw_uid}
virtual_gid_maps = static:{nobody.pw_gid}
""")
        # The recipe's master.cf, on test ports and without chroot (a chroot needs copies of
        # /etc files in the queue folder, which Debian's init script makes, not Postfix).
        master = re.sub(r"(?m)^(\S+\s+inet\s+\S+\s+\S+\s+)y(\s)", r"\1n\2", self._doc("master.cf"))
        master = re.sub(r"(?m)^smtp(\s+inet)", rf"127.0.0.1:{self.inbound}\1", master)
        (self.conf / "master.cf").write_text(master + "\n" + _SERVICES)
        for line in self._doc("main.cf").splitlines():
            words = shlex.split(line)
            assert words[:2] == ["postconf", "-e"], line
            self.postconf(*words[2:])
        # Stand-ins for the members' own servers: the test's aliases come after listserv's.
        self.postconf(f"virtual_alias_maps = hash:{self.maps}/virtual, hash:{self.conf}/aliases")
        self._table("mailboxes", {a: f"{a.split('@')[1]}/{a.split('@')[0]}/" for a in self.mailboxes})
        self._table("aliases", self.aliases)

    def _table(self, name: str, rows: dict[str, str]) -> None:
        (self.conf / name).write_text("".join(f"{k} {v}\n" for k, v in rows.items()))
        self.run("postmap", "-c", str(self.conf), f"hash:{self.conf / name}")

    def install_maps(self) -> None:
        """What the recipe's root does with listserv's files: add the service.cf transport to
        master.cf, postmap the maps, apply limits.cf."""
        command = self._doc("service")
        assert command == f'postconf -M -e "$(grep -v \'^#\' {self.maps}/service.cf)"', command
        # What the shell makes of "$(grep -v '^#' service.cf)": the other lines, as one word.
        entry = "\n".join(line for line in (self.maps / "service.cf").read_text().splitlines()
                          if not line.startswith("#")).strip("\n")
        self.run("postconf", "-c", str(self.conf), "-M", "-e", entry)
        for name in ("transport", "relay_domains", "relay_recipients", "virtual"):
            self.run("postmap", "-c", str(self.conf), f"hash:{self.maps / name}")
        command = self._doc("limits")
        assert command == f"postconf -e $(grep -v '^#' {self.maps}/limits.cf)", command
        # What the shell makes of $(grep -v '^#' limits.cf): the other lines, split into words.
        lines = (self.maps / "limits.cf").read_text().splitlines()
        self.postconf(*[word for line in lines if not line.startswith("#") for word in line.split()])

    # -- running -----------------------------------------------------------------
    def start(self) -> None:
        self.run("postfix", "-c", str(self.conf), "start")
        self.started = True
        deadline = time.monotonic() + 30
        for port in (self.inbound, self.returns):
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline, f"Postfix is not listening on {port}:\n{self.log}"
                    time.sleep(0.1)

    def stop(self) -> None:
        if self.started:
            subprocess.run([tool("postfix"), "-c", str(self.conf), "stop"], capture_output=True)
        deadline = time.monotonic() + 10
        while self._processes() and time.monotonic() < deadline:
            time.sleep(0.1)
        # Whatever of this instance outlived its master (by its id: each has our MAIL_CONFIG).
        for pid in self._processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)

    def _processes(self) -> list[int]:
        mine = f"MAIL_CONFIG={self.conf}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if mine in (entry / "environ").read_bytes().split(b"\0"):
                        found.append(int(entry.name))
                except OSError:
                    continue
        return found

    @property
    def log(self) -> str:
        path = self.root / "maillog"
        return path.read_text(errors="replace") if path.exists() else "(no Postfix log yet)"

    # -- the members' side -------------------------------------------------------
    def mailbox(self, address: str) -> list[bytes]:
        """The messages delivered to `address`'s Maildir, as delivered."""
        local, domain = address.split("@")
        folder = self.root / "mail" / domain / local / "new"
        return [path.read_bytes() for path in sorted(folder.iterdir())] if folder.is_dir() else []

    def wait_mail(self, address: str, match: Callable[[EmailMessage], bool], timeout: float = 60) -> bytes:
        """The first message in `address`'s Maildir for which `match(parsed message)` is true."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for raw in self.mailbox(address):
                if match(email.message_from_bytes(raw, policy=policy.default)):
                    return raw
            time.sleep(0.1)
        raise AssertionError(f"nothing for {address} arrived in its Maildir; Postfix's log:\n{self.log[-6000:]}")
