"""The one exception type for errors a user can cause and fix."""


class EmdirError(Exception):
    """A user-fixable problem: the message names the thing and the fix."""
