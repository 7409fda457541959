"""The one RouteGraphService a Streamlit process shares, and the hook tests use to inject their own."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app.config import PROJECT_ROOT, load_settings
from app.service import RouteGraphService

_injected: RouteGraphService | None = None
"""Set by :func:`inject` (AppTest tests): pages then use this service and nothing is started."""


def inject(service: RouteGraphService | None) -> None:
    """Make every page use ``service`` (a fake-pool one in tests); ``None`` restores the default."""
    global _injected
    _injected = service


def pool_files() -> list[str]:
    """The pool files shipped with routegraph, plus the configured one."""
    files = {str(p) for p in sorted((PROJECT_ROOT / "pools").glob("*.yaml"))}
    files.add(str(load_settings().pool_file))
    return sorted(files)


def default_pool_file() -> str:
    return str(load_settings().pool_file)


def get_service(pool_file: str | None = None) -> RouteGraphService:
    """The injected service, else the process-wide one for ``pool_file`` (the configured pool by default)."""
    if _injected is not None:
        return _injected
    return _build_service(pool_file or default_pool_file())


def service_or_stop(pool_file: str | None = None) -> RouteGraphService:
    """:func:`get_service`, or a readable error on the page and the script stopped."""
    try:
        return get_service(pool_file)
    except Exception as exc:  # bad settings or pool file, a server that would not start, an unusable store
        st.error(f"Cannot start routegraph: {exc}")
        st.stop()


@st.cache_resource(show_spinner="Starting the pool's model servers…")
def _build_service(pool_file: str) -> RouteGraphService:
    # Local servers start once per pool file and stop at process exit (LocalServers registers that).
    return RouteGraphService.create(load_settings(pool_file=Path(pool_file)))
