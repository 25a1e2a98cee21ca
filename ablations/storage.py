"""Where studies live, and the one lock that makes study creation and grid enqueueing exactly-once.

* Embedded default: Optuna's journal file backend at ``runs/studies/journal.log`` (several
  local worker processes append safely; SQLite locks up under parallel writers).
* Any Optuna RDB URL (``postgresql://...``) for many machines: start the same command on
  each machine with the same ``--storage``.

The study lock is a file lock beside the journal (local workers) or a PostgreSQL advisory
lock (workers on many machines).

An RDB storage is checked once before a command uses it (:func:`check_reachable`: one
line naming the URL, password masked); afterwards every call retries while the server is
away (:mod:`ablations.faults`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re

from ablations import faults
from faap.errors import UserError

_timeout = faults.DEFAULT_TIMEOUT
_retries: dict[str, faults.Retry] = {}


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


def is_rdb(url: str) -> bool:
    return "://" in url


def mask_url(url: str) -> str:
    """``url`` with its password shown as *** (postgresql://user:***@host/db), for every message."""
    if not is_rdb(url):
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not parseable by SQLAlchemy: mask what sits between 'user:' and '@'
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def set_storage_timeout(seconds: float) -> None:
    """How long this process's storage calls retry an unreachable server (``--storage-timeout``)."""
    global _timeout
    if not seconds > 0:
        raise UserError(f"--storage-timeout must be > 0 seconds (got {seconds:g})")
    _timeout = seconds
    for r in _retries.values():
        r.timeout = seconds


def retry_for(url: str) -> faults.Retry:
    """The one backoff state of ``url`` in this process (shared by the storage and the study lock)."""
    if url not in _retries:
        _retries[url] = faults.Retry(mask_url(url), _timeout)
    return _retries[url]


def check_reachable(url: str | None, connect_timeout: int = 10) -> None:
    """Fail in one line (URL masked) when an RDB storage cannot be connected to; nothing is created.

    SQLite is left alone: connecting to it creates the file.
    """
    if not url or not is_rdb(url) or url.startswith("sqlite"):
        return
    import sqlalchemy

    args = {"connect_timeout": connect_timeout} if url.startswith("postgresql") else {}
    engine = None
    try:
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool, connect_args=args)
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
    except Exception as e:  # server down, refused login, unknown database, missing driver, bad URL
        raise UserError(f"cannot reach storage {mask_url(url)}: {faults.reason(e)}") from None
    finally:
        if engine is not None:
            engine.dispose()


def open_storage(url: str | None, create: bool = True):
    """An Optuna storage object for ``url`` (a journal file path or an RDB URL)."""
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    url = url or default_storage_url()
    if is_rdb(url):
        from optuna.storages import RDBStorage
        from optuna.storages._cached_storage import _CachedStorage

        retry = retry_for(url)
        try:
            rdb = retry(lambda: RDBStorage(url, engine_kwargs={"pool_pre_ping": True}))
        except faults.StorageLost:
            raise
        except Exception as e:  # driver missing, bad URL: one line
            raise UserError(f"cannot open storage {mask_url(url)}: {faults.reason(e)}") from None
        # Optuna caches an RDBStorage it is given (finished trials); our wrapper hides the type, so cache here.
        return faults.retrying_storage(_CachedStorage(rdb), retry)
    if not create and not os.path.isfile(url):
        raise UserError(f"no study storage at {url} (run 'faap sweep run SPEC' first, or pass --storage)")
    os.makedirs(os.path.dirname(os.path.abspath(url)), exist_ok=True)
    return JournalStorage(JournalFileBackend(url))


def runs_dir_for(url: str | None, study: str) -> str:
    """Run folders of a study: beside the journal, or under ``runs/studies`` for an RDB."""
    url = url or default_storage_url()
    root = os.path.dirname(os.path.abspath(url)) if not is_rdb(url) else os.path.abspath(os.path.join(runs_root(), "studies"))
    return os.path.join(root, study)


@contextlib.contextmanager
def study_lock(url: str | None, study: str):
    """Exclusive section across every worker of ``study`` (all machines for PostgreSQL)."""
    url = url or default_storage_url()
    if url.startswith("postgresql"):
        import sqlalchemy

        key = int.from_bytes(hashlib.sha256(f"faap:{study}".encode()).digest()[:8], "big", signed=True)
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        conn = retry_for(url)(lambda: _advisory_lock(engine, key))
        try:
            yield
        finally:
            try:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.close()
            except Exception as e:
                # The server dropped the session (restart): PostgreSQL released its advisory lock with it.
                if not faults.is_connection_error(e):
                    raise
            engine.dispose()
        return
    if is_rdb(url) and not url.startswith("sqlite"):
        raise UserError(f"storage {url.split('://')[0]} is not supported for parallel studies: use PostgreSQL "
                        f"or the embedded journal")
    with _file_lock(url, study):
        yield


@contextlib.contextmanager
def _file_lock(url: str, study: str):
    path = url.split("sqlite:///")[-1] if url.startswith("sqlite") else url
    lock_path = f"{os.path.abspath(path)}.{study}.lock"
    os.makedirs(os.path.dirname(lock_path), exist_ok=True)
    with open(lock_path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


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
