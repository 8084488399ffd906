"""The composition root: settings in, a wired application out. Built once per process."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from tapevault.auth.suki import SukiTokenVerifier
from tapevault.config import Settings
from tapevault.core.access import AccessLog, LoggingAccessLog
from tapevault.core.clock import Clock, SystemClock
from tapevault.core.vault import Vault
from tapevault.db.engine import make_engine, migrate
from tapevault.db.repository import SqlRepository
from tapevault.http.app import build_app
from tapevault.http.asgi import ASGIApp
from tapevault.http.context import AppContext
from tapevault.storage.local import open_store


@dataclass
class Runtime:
    settings: Settings
    repo: SqlRepository
    vault: Vault
    context: AppContext

    def asgi(self) -> ASGIApp:
        return build_app(self.context, on_shutdown=self.close)

    @property
    def engine(self) -> Engine:
        return self.repo.engine

    def close(self) -> None:
        self.repo.close()


def open_runtime(
    settings: Settings,
    *,
    clock: Clock | None = None,
    access_log: AccessLog | None = None,
    run_migrations: bool = True,
) -> Runtime:
    """Connect, migrate (unless told not to) and wire the services for ``settings``."""
    settings.ensure_data_dir()
    clock = clock or SystemClock()
    engine = make_engine(settings.database_url)
    if run_migrations:
        migrate(engine)
    repo = SqlRepository(engine)
    store = open_store(settings.storage_url)
    vault = Vault(repo, store, clock, settings.public_url)
    spool = settings.data_dir / "spool"
    spool.mkdir(parents=True, exist_ok=True)
    context = AppContext(
        settings=settings,
        vault=vault,
        suki_tokens=SukiTokenVerifier(repo.get_partner, clock),
        access_log=access_log or LoggingAccessLog(),
        spool_dir=spool,
        inline_metadata=settings.is_sqlite,
    )
    return Runtime(settings=settings, repo=repo, vault=vault, context=context)
