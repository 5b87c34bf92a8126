"""`listserv mta systemd`: the unit is valid for systemd, its sandbox is tight, and listserv
works inside the one rule that could break it (MemoryDenyWriteExecute)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from listserv.config import Settings
from listserv.systemd import unit, warnings

from tests.helpers import mail as mf
from tests.helpers import sandbox
from tests.helpers.cli import Cli, assert_refused, make_site
from tests.helpers.members_clients import decrypt, encrypted_part
from tests.helpers.server import ServeProcess
from tests.helpers.smtp import submit

ROOT = Path(__file__).resolve().parent.parent
SANDBOX = (sys.executable, sandbox.__file__)


def analyze(*args: str) -> subprocess.CompletedProcess:
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is not installed (apt-get install systemd); the unit cannot be checked.",
                    pytrace=False)
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True)


def verify(tmp_path: Path, text: str) -> float:
    """systemd's own parser: any unknown key, bad value or missing program is a complaint."""
    path = tmp_path / "listserv.service"
    path.write_text(text)
    done = analyze("verify", "--man=no", str(path))
    assert done.returncode == 0 and done.stdout + done.stderr == "", done.stdout + done.stderr
    security = analyze("security", "--offline=true", str(path))
    level = re.search(r"Overall exposure level for listserv.service: (\d+\.\d+)", security.stdout)
    assert level and float(level.group(1)) <= 2.0, security.stdout  # 2.0 is systemd's "OK"
    return float(level.group(1))


@pytest.fixture
def home_outside_tmp():
    """A home where a service could live: PrivateTmp hides anything under /tmp."""
    folder = Path(tempfile.mkdtemp(prefix=".listserv-unit-test-", dir=Path.home()))
    try:
        cli = Cli(folder / "home")
        cli.ok("init")
        yield cli
    finally:
        shutil.rmtree(folder)


def test_the_unit_runs_the_installed_listserv_on_this_home_as_its_user(home_outside_tmp, tmp_path):
    cli = home_outside_tmp
    text = cli.ok("mta", "systemd").stdout
    [start] = re.findall(r"(?m)^ExecStart=(.*)$", text)
    program, *args = start.split()
    assert Path(program).is_absolute() and Path(program).exists(), program
    assert args[-3:] == ["--home", str(cli.home), "serve"]
    assert "User=listserv" in text and f"ReadWritePaths={cli.home}\n" in text
    assert "ProtectHome=read-only" in text  # the home is under /root or /home here
    for setting in ("ProtectSystem=strict", "PrivateTmp=yes", "NoNewPrivileges=yes", "Restart=on-failure",
                    "MemoryDenyWriteExecute=yes", "CapabilityBoundingSet=\n", "SystemCallFilter=@system-service",
                    "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX", "RestartPreventExitStatus=77 78\n"):
        assert setting in text, setting
    verify(tmp_path, text)
    assert "User=lists\n" in cli.ok("mta", "systemd", "--user", "lists").stdout


def test_a_unit_for_a_home_in_var_lib_is_valid_and_scores_ok(tmp_path):
    command = [str(Path(sys.executable).absolute()), "-m", "listserv"]
    home = Path("/var/lib/listserv")
    text = unit(command, home, home / "data" / "outbox", Settings(relay=("127.0.0.1", 10026)), "listserv")
    assert "ProtectHome=yes" in text and "IPAddressAllow=localhost" in text
    loopback = verify(tmp_path, text)
    # A remote relay may be anywhere: no address allow-list then. Odd paths stay one word.
    odd = Path("/var/lib/list serv%1")
    text = unit(command, odd, Path("/srv/outbox"), Settings(relay=("mx.example.org", 25)), "listserv")
    assert "IPAddressDeny" not in text
    assert 'ReadWritePaths="/var/lib/list serv%%1" /srv/outbox' in text
    remote = verify(tmp_path, text)
    # The figures docs/cli.md gives, as this systemd measures them.
    version = analyze("--version").stdout.split()[1]
    doc = " ".join((ROOT / "docs" / "cli.md").read_text().split())
    stated = re.search(r"rates it \"OK\": ([\d.]+) with systemd (\d+) for a home in `/var/lib/listserv` "
                       r"with `listen` and `relay` on loopback, ([\d.]+) with a relay elsewhere", doc)
    assert stated, "docs/cli.md no longer states the systemd-analyze security figures"
    if stated.group(2) == version:
        assert (float(stated.group(1)), float(stated.group(3))) == (loopback, remote), \
            f"systemd {version} rates the unit {loopback} and {remote}: update docs/cli.md"


def test_the_unit_is_printed_with_a_warning_for_each_reason_it_would_not_work(home_outside_tmp):
    """A home under /root, owned by root, made for the default user listserv: systemd takes the
    unit, but listserv cannot enter /root and would refuse a home of another user (exit 77)."""
    cli = home_outside_tmp
    result = cli.ok("mta", "systemd")
    assert result.stdout.startswith("# listserv as a system service") and "User=listserv\n" in result.stdout
    every = result.stderr.splitlines()
    assert all(w.startswith("listserv: warning: ") and w.endswith(".") for w in every)
    # Where this checkout runs from may add one of its own (a CI clone under /tmp, say).
    warnings = [w for w in every if "install listserv elsewhere" not in w]
    assert len(warnings) == 2
    assert f"runs as listserv, but {cli.home} belongs to root" in warnings[0]
    assert f"chown -R listserv: {cli.home}" in warnings[0]
    assert f"{cli.home} is under /root" in warnings[1] and "ProtectHome=read-only" in warnings[1]
    as_root = cli.ok("mta", "systemd", "--user", "root")
    assert as_root.stdout == result.stdout.replace("User=listserv\n", "User=root\n")
    assert [w for w in as_root.stderr.splitlines() if "belongs to" in w] == []


def test_warnings_for_a_program_the_sandbox_hides_and_none_for_the_documented_layout():
    home = Path("/var/lib/listserv")
    outbox = home / "data" / "outbox"
    assert warnings(["/opt/listserv/bin/listserv"], home, outbox, "listserv", "listserv") == []
    [tmp] = warnings(["/tmp/venv/bin/listserv"], home, outbox, "listserv", "listserv")
    assert "/tmp/venv/bin/listserv is under /tmp" in tmp and "PrivateTmp" in tmp
    [hidden] = warnings(["/home/ann/.venv/bin/listserv"], home, outbox, "listserv", "listserv")
    assert "/home/ann/.venv/bin/listserv is under /home or /root" in hidden and "ProtectHome=yes" in hidden


def test_a_home_under_tmp_is_refused(cli):
    assert_refused(cli("mta", "systemd"), 2, "PrivateTmp")


def test_the_sandbox_helper_refuses_writable_executable_memory():
    probe = "import mmap; mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)"
    done = subprocess.run([*SANDBOX, sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode != 0 and "PermissionError" in done.stderr, done.stderr
    assert subprocess.run([sys.executable, "-c", probe]).returncode == 0  # allowed outside it


def test_serve_delivers_a_post_under_memory_deny_write_execute(tmp_path, people):
    """Python, cryptography, gpg and gpg-agent under the unit's MemoryDenyWriteExecute=yes."""
    cli, list_key, fingerprint = make_site(tmp_path, people, {"alice": "immediate", "bob": "immediate"})
    with ServeProcess(cli.home, wrapper=SANDBOX) as proc:
        assert submit(proc.port, "news@example.org", mf.post(people["alice"], list_key, body="sandboxed"))[0] == 250
        proc.wait_log(r"delivered qid=\S+ sent=2")
    for path in (cli.home / "data" / "outbox" / "new").iterdir():
        raw = path.read_bytes()
        user = people["alice"] if b"Delivered-To: alice@" in raw else people["bob"]
        assert b"sandboxed" in decrypt(user, encrypted_part(raw), list_key, fingerprint)
