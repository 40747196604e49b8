"""The explorer's one exception: a bad request, with the HTTP status to answer it with.

``analysis`` and ``uploads`` raise :class:`ApiError`; ``http`` turns it into
``{"error": "..."}`` with its status. It lives here, apart, so that those three
modules need not import each other for it.
"""


class ApiError(Exception):
    """A bad request: HTTP ``status`` and a one-line message for the page."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
