"""Path parameters the reading and acting routes share."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from conveyor.errors import JobNotFoundError
from conveyor.services.paths import encoded_slash_segment


def _sent_job_id(request: Request, queue: str, job_id: str) -> str:
    """The path's job id as the client sent it: an encoded ``/`` names no job (ids never
    contain one), it must not reach another route (``x%2Fretry``)."""
    sent = encoded_slash_segment(request.scope)
    if sent is not None:
        raise JobNotFoundError(sent, queue)
    return job_id


#: A job id from the path, refused (404) when it was sent with an encoded ``/``.
JobId = Annotated[str, Depends(_sent_job_id)]
