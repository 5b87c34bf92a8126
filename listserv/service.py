"""`listserv serve`: the SMTP listener and the workers, on one asyncio loop."""

from __future__ import annotations

import asyncio
import logging
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .config import Home, Settings
from .keyring import Keyring
from .pipeline import Accepted, Services
from .smtpd import Handler, make_server
from .spool import Spool
from .store import Store

log = logging.getLogger("listserv.service")


@dataclass(frozen=True)
class ServeOptions:
    listen: tuple[str, int]
    relay: tuple[str, int] | None
    outbox: Path


def services_for(home: Home) -> Services:
    spool = Spool(home.spool)
    spool.prepare()
    return Services(Store(home.database), Keyring(home.keys), spool)


class Service:
    def __init__(self, home: Home, settings: Settings, options: ServeOptions):
        self.home = home
        self.settings = settings
        self.options = options
        self.services = services_for(home)
        self.executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="listserv")
        self._stop = asyncio.Event()

    def _accepted(self, accepted: Accepted) -> None:
        """A new job is on disk; later stages (fan-out, delivery) pick it up from the spool."""

    async def run(self, ready: Callable[[str, int], None]) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stop.set)
        handler = Handler(self.services, self.executor, self._accepted)
        factory = make_server(handler, "listserv", self.settings.max_data_kb * 1024)
        host, port = self.options.listen
        server = await loop.create_server(factory, host=host, port=port)
        bound = server.sockets[0].getsockname()
        waiting = len(self.services.spool.submissions())
        log.info("listening on %s:%s (%d submissions waiting in the spool)", bound[0], bound[1], waiting)
        ready(bound[0], bound[1])
        try:
            await self._stop.wait()
        finally:
            log.info("stopping")
            server.close()
            await server.wait_closed()
            self.executor.shutdown(wait=True)
