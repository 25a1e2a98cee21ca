"""Storage faults: an RDB storage that goes away in the middle of a study.

Every storage call of a worker (the trial loop, the heartbeat thread, the study lock) is
retried with exponential backoff while the server is unreachable, for at most
``timeout`` seconds per outage (``--storage-timeout``); then the worker stops with one
line (:class:`StorageLost`). Its RUNNING trial keeps a heartbeat that stops ageing in the
storage, so when the storage is back, any worker (or ``faap sweep resume``) fails it as
"worker lost" and re-runs it from its checkpoint.

Only connection errors are retried: any other storage error (a finished trial updated,
a constraint) means the same as without faults and is raised at once.

Retrying a write whose commit reached the server but whose answer was lost repeats it:
setting attributes and values is idempotent, finishing a trial twice is refused (the
caller logs it), asking twice leaves an extra RUNNING trial that goes stale and is re-run.
"""

from __future__ import annotations

import abc
import sys
import threading
import time

from faap.errors import UserError

DEFAULT_TIMEOUT = 180.0
FIRST_DELAY, MAX_DELAY = 0.5, 15.0


class StorageLost(UserError):
    """The storage stayed unreachable for longer than the worker's ``--storage-timeout``."""


def _chain(e: BaseException):
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def is_connection_error(e: BaseException) -> bool:
    """Whether ``e`` (or what caused it) says the database connection failed or was dropped.

    Optuna wraps SQLAlchemy errors in StorageInternalError, so the cause chain is walked.
    """
    import sqlalchemy.exc as sa

    return any(isinstance(x, (sa.OperationalError, sa.InterfaceError))
               or (isinstance(x, sa.DBAPIError) and x.connection_invalidated) for x in _chain(e))


def reason(e: BaseException) -> str:
    """The driver's first line (``connection refused``), without SQLAlchemy's or Optuna's wrapping."""
    import sqlalchemy.exc as sa

    driver = next((x.orig for x in _chain(e) if isinstance(x, sa.DBAPIError) and x.orig is not None), e)
    lines = str(driver).strip().splitlines()
    return lines[0] if lines else type(driver).__name__


class Retry:
    """Backoff for one storage URL; one outage is shared by every thread of the process."""

    def __init__(self, masked_url: str, timeout: float = DEFAULT_TIMEOUT, log=None):
        self.url, self.timeout = masked_url, timeout
        self.log = log or (lambda m: print(m, file=sys.stderr, flush=True))
        self.down_since: float | None = None
        self.lock = threading.Lock()

    def __call__(self, fn):
        delay = FIRST_DELAY
        while True:
            try:
                result = fn()
            except Exception as e:
                if not is_connection_error(e):
                    raise
                left = self._failed(e)
                time.sleep(min(delay, left))
                delay = min(2 * delay, MAX_DELAY)
                continue
            self._ok()
            return result

    def _failed(self, e) -> float:
        """Seconds left in this outage; raises StorageLost when none are."""
        now = time.time()
        with self.lock:
            if self.down_since is None:
                self.down_since = now
                self.log(f"storage {self.url} unreachable ({reason(e)}); retrying for up to {self.timeout:.0f}s")
            down = now - self.down_since
        if down >= self.timeout:
            raise StorageLost(f"storage {self.url} unreachable for {down:.0f}s ({reason(e)})") from None
        return self.timeout - down

    def _ok(self):
        if self.down_since is not None:
            with self.lock:
                if self.down_since is not None:
                    self.log(f"storage {self.url} is back after {time.time() - self.down_since:.0f}s")
                    self.down_since = None


def retrying_storage(inner, retry: Retry):
    """``inner`` (an Optuna storage) with every call going through ``retry``."""
    return _storage_class()(inner, retry)


_CLASS = None


def _storage_class():
    global _CLASS
    if _CLASS is None:
        from optuna.storages import BaseStorage

        def delegate(name):
            def method(self, *args, **kwargs):
                return self.retry(lambda: getattr(self.inner, name)(*args, **kwargs))
            method.__name__ = name
            return method

        def init(self, inner, retry):
            self.inner, self.retry = inner, retry

        names = [n for n in dir(BaseStorage) if not n.startswith("_") and callable(getattr(BaseStorage, n))]
        # Built once, lazily: importing optuna at module level would slow every `faap` command.
        _CLASS = type("RetryingStorage", (BaseStorage,), {"__init__": init, **{n: delegate(n) for n in names}})
        abc.update_abstractmethods(_CLASS)
    return _CLASS
