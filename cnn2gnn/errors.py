"""Exceptions that the command line turns into a one-line message and exit code 2.

Anything raised as a :class:`UserError` is a mistake in the input (a name, a path, a file, a config key) that the
user can fix; every other exception is an internal error (exit code 1, traceback with ``--debug``).
"""


class UserError(Exception):
    """A problem with what the user asked for or pointed us at; the message says what and where."""


class ConfigError(UserError):
    """An unknown config key, a value of the wrong type, or an unreadable config file."""


class DataError(UserError):
    """A dataset that is unknown, missing, or whose files are not in the expected format."""


class CheckpointError(UserError):
    """A model file or folder that is missing, truncated, corrupted or incompatible."""


class TrainingDivergedError(UserError):
    """The training loss became NaN or infinite (usually a learning rate too high for the model and data)."""
