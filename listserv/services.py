"""The outside world the stages run against: the store, the keyring and the spool."""

from __future__ import annotations

from dataclasses import dataclass

from .keyring import Keyring
from .spool import Spool
from .store import Store


@dataclass(frozen=True)
class Services:
    store: Store  # lists, members, digest state: read often, written rarely
    keyring: Keyring
    spool: Spool
    events: Store  # seen signatures and rejections: written per message, kept small
