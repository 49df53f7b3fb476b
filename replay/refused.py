"""The one way a replay action says no: unsafe now, and the message says what to do (exit code 3)."""


class Refused(RuntimeError):
    """The action was not taken because it would be unsafe; the message says what to do."""
