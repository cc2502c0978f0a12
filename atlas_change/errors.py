"""The one exception type the CLI turns into a one-line error and exit code 2."""


class AtlasError(Exception):
    """Bad input or a refused operation; the message names the file and the problem."""


class AtlasWarning(UserWarning):
    """Work goes on, but the user must know (e.g. clouds not masked); the CLI prints one line."""
