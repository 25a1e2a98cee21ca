"""The storage backend interface: one backend per URL, masked one-line errors, study locks, faults."""

import fcntl
import os
import threading

import optuna
import pytest
import sqlalchemy.exc

from ablations import faults, storage
from ablations.storage import JournalBackend, PostgresBackend, RDBBackend, SQLiteBackend, backend_for
from faap.errors import UserError

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(autouse=True)
def fresh_backends(monkeypatch, tmp_path):
    """Each test gets its own per-process backends and timeout, and runs under its own FAAP_RUNS."""
    monkeypatch.setattr(storage, "_backends", {})
    monkeypatch.setattr(storage, "_timeout", faults.DEFAULT_TIMEOUT)
    monkeypatch.setenv("FAAP_RUNS", str(tmp_path / "runs"))


@pytest.mark.parametrize("url, kind", [
    ("runs/studies/journal.log", JournalBackend),
    ("/abs/path/journal.log", JournalBackend),
    ("postgresql://user:pw@db.lab:5432/studies", PostgresBackend),
    ("postgresql+psycopg://user@db.lab/studies", PostgresBackend),
    ("sqlite:///studies.db", SQLiteBackend),
    ("mysql+pymysql://user:pw@db.lab/studies", RDBBackend),
])
def test_one_backend_per_url_chosen_by_its_kind(url, kind):
    backend = backend_for(url)
    assert type(backend) is kind and backend.url == url
    assert backend_for(url) is backend  # the storage and the study lock share one outage


def test_no_url_is_the_embedded_journal_under_the_runs_folder(tmp_path):
    backend = backend_for(None)
    assert isinstance(backend, JournalBackend)
    assert backend.url == str(tmp_path / "runs" / "studies" / "journal.log")
    assert backend_for(backend.url) is backend


def test_run_folders_sit_beside_the_journal_or_under_runs_studies(tmp_path):
    assert backend_for(str(tmp_path / "j" / "journal.log")).runs_dir("s") == str(tmp_path / "j" / "s")
    for url in (PG_URL, "sqlite:///x.db"):
        assert backend_for(url).runs_dir("s") == str(tmp_path / "runs" / "studies" / "s")


def test_messages_mask_only_the_password():
    pg = backend_for("postgresql://user:s3cret@db.lab:5432/studies")
    assert pg.masked == "postgresql://user:***@db.lab:5432/studies"
    assert backend_for("mysql://user:s3cret@db.lab/studies").masked == "mysql://user:***@db.lab/studies"
    # Not parseable by SQLAlchemy (the port is not a number): the password is still masked.
    assert backend_for("postgresql://user:s3cret@db.lab:port/s").masked == "postgresql://user:***@db.lab:port/s"
    assert backend_for("postgresql://user:se@cret@db.lab:port/s").masked == "postgresql://user:***@db.lab:port/s"
    assert backend_for("runs/studies/journal.log").masked == "runs/studies/journal.log"


def test_unreachable_rdb_is_one_masked_line_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as e:
        backend_for("postgresql://nobody:s3cret@127.0.0.1:1/none").check_reachable(connect_timeout=5)
    message = str(e.value)
    assert message.startswith("cannot reach storage postgresql://nobody:***@127.0.0.1:1/none: ")
    assert "Connection refused" in message and "\n" not in message and "s3cret" not in message
    backend_for(str(tmp_path / "journal.log")).check_reachable()  # the embedded journal: nothing to check
    backend_for(f"sqlite:///{tmp_path / 'x.db'}").check_reachable()  # connecting would create the file
    assert os.listdir(tmp_path) == []


def test_a_missing_journal_is_one_line_when_it_must_exist(tmp_path):
    journal = tmp_path / "studies" / "journal.log"
    with pytest.raises(UserError, match=f"^no study storage at {journal} "):
        backend_for(str(journal)).open(create=False)
    assert not journal.parent.exists()
    assert isinstance(backend_for(str(journal)).open(), optuna.storages.JournalStorage)
    assert journal.parent.is_dir()


def test_dashboard_gets_an_rdb_url_as_is_and_a_journal_opened(tmp_path):
    assert backend_for(PG_URL).dashboard_storage() == PG_URL
    journal = tmp_path / "journal.log"
    journal.touch()
    assert isinstance(backend_for(str(journal)).dashboard_storage(), optuna.storages.JournalStorage)


def _locked(lock_path) -> bool:
    """Whether another open file description cannot take ``lock_path`` now."""
    with open(lock_path, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


@pytest.mark.parametrize("url, lock_file", [("studies/journal.log", "studies/journal.log.s.lock"),
                                            ("sqlite:///{tmp}/db/x.db", "db/x.db.s.lock")])
def test_file_study_lock_is_exclusive_and_released(tmp_path, url, lock_file):
    backend = backend_for(url.format(tmp=tmp_path) if "://" in url else str(tmp_path / url))
    with backend.lock("s"):
        assert _locked(tmp_path / lock_file)
    assert not _locked(tmp_path / lock_file)


def test_an_rdb_without_a_study_lock_is_refused_in_one_line():
    with pytest.raises(UserError) as e:
        with backend_for("mysql+pymysql://user:s3cret@db.lab/studies").lock("s"):
            pass
    assert str(e.value) == ("storage mysql+pymysql is not supported for parallel studies: use PostgreSQL or the "
                            "embedded journal")


@pytest.mark.postgres
def test_postgres_study_lock_excludes_another_worker_until_released():
    from test_sweep_workers import _pg_available

    if not _pg_available():
        pytest.fail(f"PostgreSQL is not reachable at {PG_URL} (start it: see .ci/run)")
    entered = threading.Event()

    def other_worker():  # another process's backend: its own object, its own connection
        with PostgresBackend(PG_URL).lock("s"):
            entered.set()

    with backend_for(PG_URL).lock("s"):
        thread = threading.Thread(target=other_worker)
        thread.start()
        assert not entered.wait(1.0)
    assert entered.wait(30)
    thread.join()


def _refused_under_optuna():
    """A dropped connection as Optuna raises it: StorageInternalError caused by SQLAlchemy's OperationalError."""
    try:
        raise sqlalchemy.exc.OperationalError("SELECT 1", {}, ConnectionError("connection refused\nDETAIL: x"))
    except sqlalchemy.exc.OperationalError as e:
        try:
            raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from e
        except optuna.exceptions.StorageInternalError as wrapped:
            return wrapped


def test_only_connection_errors_are_rdb_faults():
    rdb, journal = backend_for(PG_URL), backend_for("journal.log")
    refused = _refused_under_optuna()
    assert rdb.is_fault(refused) and rdb.reason(refused) == "connection refused"
    integrity = sqlalchemy.exc.IntegrityError("INSERT", {}, ValueError("duplicate key"))
    for other in (integrity, KeyError("missing"), optuna.exceptions.StorageInternalError("finished trial")):
        assert not rdb.is_fault(other)
    assert not journal.is_fault(refused)  # a journal is a local file: nothing to wait for
    assert journal.reason(OSError("disk full\nmore")) == "disk full"


def test_a_journal_backend_never_retries(monkeypatch):
    monkeypatch.setattr(faults.time, "sleep", lambda s: pytest.fail("slept"))
    retry = backend_for("journal.log").retry
    with pytest.raises(optuna.exceptions.StorageInternalError):
        retry(lambda: (_ for _ in ()).throw(_refused_under_optuna()))


def test_storage_timeout_applies_to_every_backend_of_the_process():
    before = backend_for(PG_URL)
    storage.set_storage_timeout(7)
    after = backend_for("postgresql://other@h/db")
    assert before.retry.timeout == after.retry.timeout == 7
    with pytest.raises(UserError, match=r"^--storage-timeout must be > 0 seconds \(got 0\)$"):
        storage.set_storage_timeout(0)
