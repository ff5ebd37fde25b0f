"""Errors of the rendering library."""


class LipsyncError(Exception):
    """Root of the rendering library's errors; the message is written for the user."""


class AvatarError(LipsyncError):
    """An avatar image cannot be read, or no face can be found on it."""


class EncodeError(LipsyncError):
    """A clip could not be encoded or written."""
