"""Where studies live, and the one lock that makes study creation and grid enqueueing exactly-once.

* Embedded default: Optuna's journal file backend at ``runs/studies/journal.log`` (several
  local worker processes append safely; SQLite locks up under parallel writers).
* Any Optuna RDB URL (``postgresql://...``) for many machines: start the same command on
  each machine with the same ``--storage``.

The study lock is a file lock beside the journal (local workers) or a PostgreSQL advisory
lock (workers on many machines).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os

from faap.errors import UserError

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


def open_storage(url: str | None, create: bool = True):
    """An Optuna storage object for ``url`` (a journal file path or an RDB URL)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    url = url or default_storage_url()
    if is_rdb(url):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
        except Exception as e:  # driver missing, server down, bad URL: one line
            raise UserError(f"cannot open storage {url}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
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
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        engine.dispose()
        return
    if is_rdb(url) and not url.startswith("sqlite"):
        raise UserError(f"storage {url.split('://')[0]} is not supported for parallel studies: use PostgreSQL "
                        f"or the embedded journal")
    path = url.split("sqlite:///")[-1] if url.startswith("sqlite") else url
    lock_path = f"{os.path.abspath(path)}.{study}.lock"
    os.makedirs(os.path.dirname(lock_path), exist_ok=True)
    with open(lock_path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
