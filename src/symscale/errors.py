"""The one exception type users see as a one-line error (see :mod:`symscale.cli`)."""


class SymscaleError(Exception):
    """A user-facing error: bad input file, missing key, impossible configuration.

    The message must be one line and name the file / field / row at fault.
    """


class DataError(SymscaleError, ValueError):
    """Malformed or invalid atomistic data (names the file and structure index)."""


class ConfigError(SymscaleError, ValueError):
    """An invalid or impossible configuration (names the field)."""
