"""Storage faults: an RDB storage that goes away in the middle of a study.

Every storage call of a worker (the trial loop, the heartbeat thread, the study lock) is
retried with exponential backoff while the server is unreachable, for at most
``timeout`` seconds per outage (``--storage-timeout``); then the worker stops with one
line (:class:`StorageLost`). Its RUNNING trial keeps a heartbeat that stops ageing in the
storage, so when the storage is back, any worker (or ``faap sweep resume``) fails it as
"worker lost" and re-runs it from its checkpoint.

Only what the storage's backend calls a fault (:meth:`ablations.storage.Backend.is_fault`:
for an RDB, a connection error) is retried: any other storage error (a finished trial
updated, a constraint) means the same as without faults and is raised at once.

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


class Retry:
    """Backoff for one storage (its :class:`ablations.storage.Backend`: masked URL, what is a fault, in
    what words); one outage is shared by every thread of the process."""

    def __init__(self, backend, timeout: float = DEFAULT_TIMEOUT, log=None):
        self.backend, self.timeout = backend, timeout
        self.log = log or (lambda m: print(m, file=sys.stderr, flush=True))
        self.down_since: float | None = None
        self.lock = threading.Lock()

    def __call__(self, fn):
        delay = FIRST_DELAY
        while True:
            try:
                result = fn()
            except Exception as e:
                if not self.backend.is_fault(e):
                    raise
                left = self._failed(e)
                time.sleep(min(delay, left))
                delay = min(2 * delay, MAX_DELAY)
                continue
            self._ok()
            return result

    def _failed(self, e) -> float:
        """Seconds left in this outage; raises StorageLost when none are."""
        now, where, why = time.time(), self.backend.masked, self.backend.reason(e)
        with self.lock:
            if self.down_since is None:
                self.down_since = now
                self.log(f"storage {where} unreachable ({why}); retrying for up to {self.timeout:.0f}s")
            down = now - self.down_since
        if down >= self.timeout:
            raise StorageLost(f"storage {where} unreachable for {down:.0f}s ({why})") from None
        return self.timeout - down

    def _ok(self):
        if self.down_since is not None:
            with self.lock:
                if self.down_since is not None:
                    self.log(f"storage {self.backend.masked} is back after {time.time() - self.down_since:.0f}s")
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
