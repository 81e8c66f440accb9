"""The one exception type users see as a one-line error (see :mod:`symscale.cli`)."""


class SymscaleError(Exception):
    """A user-facing error: bad input file, missing key, impossible configuration.

    The message must be one line and name the file / field / row at fault.
    """


class DataError(SymscaleError, ValueError):
    """Malformed or invalid atomistic data (names the file and structure index)."""


class ConfigError(SymscaleError, ValueError):
    """An invalid or impossible configuration (names the field)."""


class OutputError(ConfigError, DataError):
    """An output path symscale may not write: it holds something symscale did not write, or it is
    unusable (names the option and the path)."""
