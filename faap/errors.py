"""User-facing errors: the CLI prints one line and exits with status 2."""


class UserError(Exception):
    """A problem with what the user gave us (spec, config key, path, data file)."""

    exit_code = 2


class ConfigError(UserError):
    """A config key, value or type that cannot be used."""


class DataError(UserError):
    """A dataset that is missing, malformed or inconsistent."""


def closest(name: str, candidates) -> str | None:
    """The candidate most similar to ``name`` (for 'did you mean' hints), or None."""
    import difflib

    hits = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.5)
    return hits[0] if hits else None


def did_you_mean(name: str, candidates) -> str:
    hit = closest(name, candidates)
    return f" (did you mean '{hit}'?)" if hit else ""
