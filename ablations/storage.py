"""Where studies live: one :class:`Backend` per storage URL, chosen once by :func:`backend_for`.

* :class:`JournalBackend`, the embedded default: Optuna's journal file at
  ``runs/studies/journal.log`` (several local worker processes append safely; SQLite locks up
  under parallel writers). Its study lock is a file lock beside the journal.
* :class:`RDBBackend`: any Optuna RDB URL, for many machines (start the same command on each
  machine with the same ``--storage``). :class:`PostgresBackend` locks with a PostgreSQL
  advisory lock; :class:`SQLiteBackend` with a file lock beside the database file; other
  databases have no study lock and are refused for parallel studies.

A new backend subclasses :class:`Backend` (``accepts`` says which URLs are its own) and is
listed in ``_KINDS``; nothing else tests what a URL looks like.

An RDB storage is checked once before a command uses it (:meth:`Backend.check_reachable`: one
line naming the URL, password masked); afterwards every call retries while the server is
away (:mod:`ablations.faults`, with the backend saying which errors are faults).
"""

from __future__ import annotations

import abc
import contextlib
import fcntl
import hashlib
import os
import re

from ablations import faults
from faap.errors import UserError

_timeout = faults.DEFAULT_TIMEOUT
_backends: dict[str, Backend] = {}


def runs_root() -> str:
    """The project's runs folder: ``$FAAP_RUNS``, default ``runs`` in the working directory."""
    return os.environ.get("FAAP_RUNS", "runs")


SYNTHETIC = "synthetic"
"""A spec's ``data: synthetic``: the built-in benchmark, written once under runs/data."""


def data_root(data: str) -> str:
    """Where a spec's ``data`` lives ('synthetic': the built-in benchmark's folder); reads and writes nothing."""
    return os.path.abspath(os.path.join(runs_root(), "data", SYNTHETIC)) if data == SYNTHETIC else data


def default_storage_url() -> str:
    return os.path.join(runs_root(), "studies", "journal.log")


@contextlib.contextmanager
def file_lock(lock_path: str):
    """Exclusive section across the processes of this machine that lock ``lock_path``."""
    lock_path = os.path.abspath(lock_path)
    os.makedirs(os.path.dirname(lock_path), exist_ok=True)
    with open(lock_path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class Backend(abc.ABC):
    """What the runner, the study lock and fault handling ask of a storage. One instance per URL and
    process (:func:`backend_for`), so the storage and the study lock share one outage (:attr:`retry`)."""

    def __init__(self, url: str):
        self.url = url
        self.retry = faults.Retry(self, _timeout)

    @classmethod
    @abc.abstractmethod
    def accepts(cls, url: str) -> bool:
        """Whether ``url`` names a storage of this kind (``_KINDS`` asks the most specific kind first)."""

    @property
    def masked(self) -> str:
        """The URL as every message shows it (a password as ***)."""
        return self.url

    def check_reachable(self, connect_timeout: int = 10) -> None:
        """Fail in one line (URL masked) when the storage cannot be reached; creates nothing."""

    @abc.abstractmethod
    def open(self, create: bool = True):
        """An Optuna storage object (``create=False``: one line if there is no storage yet)."""

    @abc.abstractmethod
    def runs_dir(self, study: str) -> str:
        """The folder that holds the run folders of ``study``."""

    @abc.abstractmethod
    def lock(self, study: str):
        """A context manager: exclusive section across every worker of ``study``, on every machine that can
        reach the storage."""

    def is_fault(self, e: BaseException) -> bool:
        """Whether ``e`` means the storage is away for now (retried), not that the call was wrong."""
        return False

    def reason(self, e: BaseException) -> str:
        """``e`` in a few words for a one-line message."""
        lines = str(e).strip().splitlines()
        return lines[0] if lines else type(e).__name__

    def dashboard_storage(self):
        """What optuna-dashboard is given for this storage."""
        return self.open(create=False)


class JournalBackend(Backend):
    """The embedded journal file; run folders and study locks sit beside it."""

    @classmethod
    def accepts(cls, url: str) -> bool:
        return "://" not in url

    def open(self, create: bool = True):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        if not create and not os.path.isfile(self.url):
            raise UserError(f"no study storage at {self.url} (run 'faap sweep run SPEC' first, or pass --storage)")
        os.makedirs(os.path.dirname(os.path.abspath(self.url)), exist_ok=True)
        return JournalStorage(JournalFileBackend(self.url))

    def runs_dir(self, study: str) -> str:
        return os.path.join(os.path.dirname(os.path.abspath(self.url)), study)

    def lock(self, study: str):
        return file_lock(f"{os.path.abspath(self.url)}.{study}.lock")


def _chain(e: BaseException):
    """``e`` and what caused it (Optuna wraps SQLAlchemy's errors in StorageInternalError)."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


class RDBBackend(Backend):
    """Any SQLAlchemy URL Optuna's RDBStorage takes. Run folders go under ``runs/studies``; there is no study
    lock (parallel studies need :class:`PostgresBackend`)."""

    @classmethod
    def accepts(cls, url: str) -> bool:
        return "://" in url

    @property
    def masked(self) -> str:
        try:
            from sqlalchemy.engine import make_url

            return make_url(self.url).render_as_string(hide_password=True)
        except Exception:  # not parseable by SQLAlchemy: mask all between 'user:' and the LAST '@' (a password
            return re.sub(r"(://[^:/@]*:).*@", r"\1***@", self.url)  # may hold '@' itself)

    def connect_args(self, connect_timeout: int) -> dict:
        """The driver's arguments for the reachability check (a bounded wait where the driver has one)."""
        return {}

    def check_reachable(self, connect_timeout: int = 10) -> None:
        import sqlalchemy

        engine = None
        try:
            engine = sqlalchemy.create_engine(self.url, poolclass=sqlalchemy.pool.NullPool,
                                              connect_args=self.connect_args(connect_timeout))
            with engine.connect() as conn:
                conn.execute(sqlalchemy.text("SELECT 1"))
        except Exception as e:  # server down, refused login, unknown database, missing driver, bad URL
            raise UserError(f"cannot reach storage {self.masked}: {self.reason(e)}") from None
        finally:
            if engine is not None:
                engine.dispose()

    def open(self, create: bool = True):
        from optuna.storages import RDBStorage
        from optuna.storages._cached_storage import _CachedStorage

        try:
            rdb = self.retry(lambda: RDBStorage(self.url, engine_kwargs={"pool_pre_ping": True}))
        except faults.StorageLost:
            raise
        except Exception as e:  # driver missing, bad URL: one line
            raise UserError(f"cannot open storage {self.masked}: {self.reason(e)}") from None
        # Optuna caches an RDBStorage it is given (finished trials); our wrapper hides the type, so cache here.
        return faults.retrying_storage(_CachedStorage(rdb), self.retry)

    def runs_dir(self, study: str) -> str:
        return os.path.join(os.path.abspath(os.path.join(runs_root(), "studies")), study)

    def lock(self, study: str):
        raise UserError(f"storage {self.url.split('://')[0]} is not supported for parallel studies: use PostgreSQL "
                        f"or the embedded journal")

    def is_fault(self, e: BaseException) -> bool:
        """Connection failed or dropped, anywhere in the cause chain; any other error (a finished trial updated,
        a constraint) means the same as without faults."""
        import sqlalchemy.exc as sa

        return any(isinstance(x, (sa.OperationalError, sa.InterfaceError))
                   or (isinstance(x, sa.DBAPIError) and x.connection_invalidated) for x in _chain(e))

    def reason(self, e: BaseException) -> str:
        """The driver's first line (``connection refused``), without SQLAlchemy's or Optuna's wrapping."""
        import sqlalchemy.exc as sa

        driver = next((x.orig for x in _chain(e) if isinstance(x, sa.DBAPIError) and x.orig is not None), e)
        return super().reason(driver)

    def dashboard_storage(self):
        # The URL as is: optuna-dashboard's schema checks and study order want its own RDBStorage, not the
        # retrying wrapper the workers use.
        return self.url


class PostgresBackend(RDBBackend):
    """PostgreSQL: workers on many machines; the study lock is an advisory lock held by one connection."""

    @classmethod
    def accepts(cls, url: str) -> bool:
        return url.startswith("postgresql")

    def connect_args(self, connect_timeout: int) -> dict:
        return {"connect_timeout": connect_timeout}

    @contextlib.contextmanager
    def lock(self, study: str):
        import sqlalchemy

        key = int.from_bytes(hashlib.sha256(f"faap:{study}".encode()).digest()[:8], "big", signed=True)
        engine = sqlalchemy.create_engine(self.url, poolclass=sqlalchemy.pool.NullPool)
        conn = self.retry(lambda: _advisory_lock(engine, key))
        try:
            yield
        finally:
            try:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.close()
            except Exception as e:
                # The server dropped the session (restart): PostgreSQL released its advisory lock with it.
                if not self.is_fault(e):
                    raise
            engine.dispose()


def _advisory_lock(engine, key: int):
    """A connection holding PostgreSQL advisory lock ``key`` (closed again if taking the lock fails)."""
    import sqlalchemy

    conn = engine.connect()
    try:
        conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
    except BaseException:
        conn.close()
        raise
    return conn


class SQLiteBackend(RDBBackend):
    """SQLite: one machine; the study lock is a file lock beside the database file."""

    @classmethod
    def accepts(cls, url: str) -> bool:
        return url.startswith("sqlite")

    def check_reachable(self, connect_timeout: int = 10) -> None:
        """Left alone: connecting to SQLite creates the file."""

    def lock(self, study: str):
        return file_lock(f"{os.path.abspath(self.url.split('sqlite:///')[-1])}.{study}.lock")


_KINDS = (JournalBackend, PostgresBackend, SQLiteBackend, RDBBackend)
"""Asked in order: the first kind that accepts a URL is its backend."""


def backend_for(url: str | None) -> Backend:
    """The backend of ``url`` (None: the embedded journal), the same object for the same URL in this process."""
    url = url or default_storage_url()
    if url not in _backends:
        _backends[url] = next(kind for kind in _KINDS if kind.accepts(url))(url)
    return _backends[url]


def mask_url(url: str) -> str:
    """``url`` with its password shown as *** (postgresql://user:***@host/db), for every message."""
    return backend_for(url).masked


def open_storage(url: str | None, create: bool = True):
    """An Optuna storage object for ``url`` (a journal file path or an RDB URL)."""
    return backend_for(url).open(create)


def set_storage_timeout(seconds: float) -> None:
    """How long this process's storage calls retry an unreachable server (``--storage-timeout``)."""
    global _timeout
    if not seconds > 0:
        raise UserError(f"--storage-timeout must be > 0 seconds (got {seconds:g})")
    _timeout = seconds
    for backend in _backends.values():
        backend.retry.timeout = seconds
