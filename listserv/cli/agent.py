"""The home's gpg-agent, stopped when a command that used the keyring ends.

gpg starts a gpg-agent for the home's keys/ whenever it needs the list's secret key (creating a
list, signing a welcome or a digest, unsealing the backlog) and leaves it running: every CLI
command would leave one behind, holding the list keys in memory, until the machine restarts.
While `listserv serve` runs on the home its agent stays: the server needs it, and a gpg call of
the server under way when its agent goes would fail. `serve` stops the agent itself when it ends.
"""

from __future__ import annotations

import fcntl
import os

import click

from ..config import Home
from ..keyring import Keyring


def stop_agent_after_command(home: Home, keyring: Keyring) -> None:
    """When the current command ends, stop the keyring's agent unless a server runs on `home`."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.find_root().call_on_close(lambda: None if served(home) else keyring.stop_agent())


def served(home: Home) -> bool:
    """Whether `listserv serve` holds data/serve.lock (see server.lock_home). The test takes a
    shared lock for an instant; a server starting in that instant would be refused as a second
    one, which is why it is taken only once, as the command ends."""
    try:
        fd = os.open(home.data / "serve.lock", os.O_RDONLY)
    except FileNotFoundError:
        return False  # no server ever ran here
    except OSError:
        return True  # cannot tell: leave the agent alone
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # releases the lock if it was taken
    return False
