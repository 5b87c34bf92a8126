"""A home's parts, opened once: what the pipeline runs against.

`Context.open(home)` is the one place they are built, for the server and for every CLI
command that sends mail (a welcome, a digest, a notice). The pipeline hands each stage only
the part it needs; only the pipeline, the server and the CLI hold a Context.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from . import capacity
from .contacts import contacts_keyring
from .config import Home
from .digest import Digests
from .holds import Holds
from .keyring import Keyring
from .model import Roster
from .outbox import Outbox
from .resend import Resends
from .spool import Outgoing, Spool
from .stages.authorize import home_replay_window
from .store import Store
from .templates import Templates


@dataclass(frozen=True)
class Context:
    store: Store  # lists, members, digest state: read often, written rarely
    events: Store  # seen signatures and rejections: written per message, kept small
    keyring: Keyring
    spool: Spool
    templates: Templates
    outbox: Outbox  # delivery jobs onto the outgoing spool
    digests: Digests

    @classmethod
    def open(cls, home: Home, store: Store | None = None, keyring: Keyring | None = None) -> Context:
        """The parts of `home` (the spool's folders made). A CLI command passes the store and
        keyring it opened already."""
        spool = Spool(home.spool)
        spool.prepare()
        store = store or Store(home.database)
        keyring = keyring or Keyring(home.keys)
        templates = Templates(home.templates)
        outbox = Outbox(keyring, Outgoing(spool), store)
        return cls(store, Store(home.events), keyring, spool, templates, outbox,
                   Digests(store, keyring, outbox, templates, home.digests))

    @property
    def outgoing(self) -> Outgoing:
        return self.outbox.outgoing

    @property
    def holds(self) -> Holds:
        """The held messages (data/held/), beside the spool they come from and go back to."""
        return Holds(self.spool.root.parent / "held", self.spool)

    @cached_property
    def contacts(self) -> Keyring:
        """The contacts keyring (data/contacts/): outsiders' keys only, never the members'."""
        return contacts_keyring(self.spool.root.parent)

    @property
    def resends(self) -> Resends:
        """Posts resent to the list's contacts (listserv.resend)."""
        return Resends(self.store, self.contacts, self.outbox, self.templates, self.spool)

    @property
    def verp_key(self) -> bytes:
        return self.outbox.verp_key

    def roster(self, address: str) -> Roster:
        return self.store.read().roster(address)

    def copy_limit(self) -> int | None:
        """The most bytes a copy may have, as the relay last said (None: no limit known)."""
        return capacity.copy_limit(self.spool.relay_file)

    def complete_list_keys(self) -> dict[str, list[str]]:
        """Give each list's key the user ids it lacks (`MailingList.key_user_ids`): keys made
        before LIST-request@ and LIST-owner@ had one of their own. The store is read once and
        no transaction is held while gpg runs; what was added, by list address."""
        lists = self.store.read().lists()
        added = self.keyring.add_user_ids({ml.fingerprint: ml.key_user_ids for ml in lists})
        return {ml.address: added[ml.fingerprint] for ml in lists if ml.fingerprint in added}

    def replay_window(self) -> int:
        """How long a signature is remembered: the longest window among the home's lists."""
        return home_replay_window(self.store.read().lists())
