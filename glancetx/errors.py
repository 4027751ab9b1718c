"""
Errors that cross module boundaries.
"""


class ConfigError(Exception):
    """
    A bad or unknown configuration option.  The message names the option and
    is printed as one line at start-up, without a traceback.
    """


class APIError(Exception):
    """
    A refusal the client should see: an HTTP status and a plain message.
    The image service raises these; the web layer renders them in one place.
    """

    code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(APIError):
    code = 400


class Unauthorized(APIError):
    code = 401


class Forbidden(APIError):
    code = 403


class NotFound(APIError):
    code = 404


class Conflict(APIError):
    code = 409


class TooLarge(APIError):
    code = 413


class Unavailable(APIError):
    code = 503


def errorForCode(code: int, message: str) -> APIError:
    for cls in (BadRequest, Unauthorized, Forbidden, NotFound, Conflict, TooLarge, Unavailable):
        if cls.code == code:
            return cls(message)
    err = APIError(message)
    err.code = code
    return err
