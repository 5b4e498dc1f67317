"""``conveyor api``: the HTTP front door that validates jobs and adds them to the queue."""

from conveyor.services.api.app import create_app
from conveyor.services.api.server import run

__all__ = ["create_app", "run"]
