"""The one exception type the command line turns into a one-line message."""


class UserError(Exception):
    """Bad input from the user: the message says what was wrong and what to do.

    The CLI prints ``error: <message>`` and exits with status 2, without a
    traceback (``--debug`` shows it).
    """
