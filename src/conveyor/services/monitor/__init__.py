"""``conveyor monitor``: the web dashboard, its API and /metrics; ``conveyor stats``: the same
counts in a terminal."""

from __future__ import annotations

import asyncio
import ipaddress

from conveyor.config import Settings
from conveyor.errors import ConfigurationError
from conveyor.log import get_logger
from conveyor.ports import bind_error
from conveyor.services.monitor.app import create_app
from conveyor.services.redis_connection import open_checked, redis_url
from conveyor.services.serving import ConnectionLimits, ServingConfig, serve

__all__ = ["create_app", "run"]

log = get_logger("conveyor.monitor")

#: Seconds open event streams get to close when the monitor stops.
SHUTDOWN_GRACE_S = 2


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_port(host: str, port: int) -> None:
    exc = bind_error(host, port)
    if exc is not None:
        raise ConfigurationError(
            f"the monitor cannot listen on {host}:{port}: {exc.strerror or exc} "
            "(choose another with --port or CONVEYOR_MONITOR_PORT)"
        ) from exc


async def _check_redis(settings: Settings, url: str) -> None:
    redis = await open_checked(settings, url)
    await redis.aclose()


def run(settings: Settings) -> None:
    """Serve the monitor on ``settings.monitor_host:monitor_port`` until SIGINT or SIGTERM."""
    with redis_url(settings) as url:
        _check_port(settings.monitor_host, settings.monitor_port)
        asyncio.run(_check_redis(settings, url))  # a clear error now, not a failed start-up
        if not settings.monitor_users and not _is_loopback(settings.monitor_host):
            log.warning(
                "monitor_open_access",
                host=settings.monitor_host,
                hint="set CONVEYOR_MONITOR_USERS=user:password:rw,...",
            )
        config = ServingConfig(
            create_app(settings, url),
            limits=ConnectionLimits.from_settings(settings),
            host=settings.monitor_host,
            port=settings.monitor_port,
            log_config=None,
            access_log=False,
            ws="none",  # live updates are server-sent events
            timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
        )
        log.info(
            "monitor_listening", url=f"http://{settings.monitor_host}:{settings.monitor_port}/"
        )
        serve(config)  # a SIGTERM ends in exit 0, after the embedded Redis (if any) stops
