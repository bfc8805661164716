"""Errors the control plane raises toward its callers; the gRPC service maps
each to its status code, the CLI prints its message on one line."""

from __future__ import annotations


class ControlError(Exception):
    """Base: a request could not be carried out; the message says why."""


class InvalidArgument(ControlError):
    """A request field is invalid; `field` names it (e.g. 'waypoints[3].q[2]')."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class NotFound(ControlError):
    """The named object (job, checkpoint) does not exist."""


class FailedPrecondition(ControlError):
    """The request is valid but the system is not in a state to carry it out."""
