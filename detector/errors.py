"""The one error type a user can cause; its message says what to do."""


class DetectorError(ValueError):
    """Raised for input or model problems a user can fix; the message is safe to show as is."""
