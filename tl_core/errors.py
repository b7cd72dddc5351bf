"""Errors a user can act on. Each message says what is wrong, where, and what to do about it.

The CLI prints these as one line on stderr and exits non-zero; the app shows them on the page.
Anything else reaching the top is a bug in TransferLab, not bad input.
"""

from __future__ import annotations


class TransferLabError(Exception):
    """Base for problems caused by input or environment, with a message meant for the user."""


class DataError(TransferLabError):
    """The dataset cannot be used as given (missing, empty, unreadable, unsafe archive ...)."""


class BackboneError(TransferLabError):
    """Unknown backbone, unavailable weights, or an input size the backbone cannot take."""


class WeightsUnavailableError(BackboneError):
    """Weights need a download that cannot happen here (offline), or a weights file is unusable."""


class RunNotFoundError(TransferLabError):
    """A run id that the store does not know, or a run without the artefact asked for."""


class ServerSettingsError(TransferLabError):
    """The server's settings (environment or config file) are invalid; the message says which and how to fix it."""
