"""Device agents (``haq device serve``) registered for hardware-in-the-loop table builds: their
tokens are stored by the service and never returned."""

from __future__ import annotations

import ssl
from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from haq.service.routes.shared import Name, Service


class AgentIn(BaseModel):
    """A device agent (``haq device serve``) to register for hardware-in-the-loop table builds."""

    host: str = Field(
        min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_.:-]+$", description="host name or address (IPv6 without brackets)"
    )
    port: int = Field(ge=1, le=65535)
    token: str = Field(min_length=8, max_length=1024, description="the agent's token; stored by the service, never returned")
    tls_ca: str | None = Field(
        None,
        max_length=65536,
        description="PEM certificate (or CA) of an agent that serves TLS (haq device serve --tls-cert); "
        "the service then speaks TLS to it and trusts only this certificate",
    )


def agent_routes(service: Service) -> APIRouter:
    """The routes under ``/agents``."""
    api = APIRouter()
    store = service.store

    @api.get("/agents", tags=["agents"], summary="registered device agents (tokens are never returned)")
    def list_agents() -> dict[str, Any]:
        return {"agents": [a.public() for a in store.agents()]}

    @api.put("/agents/{name}", status_code=201, tags=["agents"], summary="register a device agent for table builds (agent:NAME)")
    def put_agent(agent: AgentIn, name: Name) -> dict[str, Any]:
        if agent.tls_ca is not None:
            check_pem(agent.tls_ca)
        return store.add_agent(name, agent.host, agent.port, agent.token, agent.tls_ca).public()

    @api.delete("/agents/{name}", tags=["agents"], summary="forget a device agent")
    def delete_agent(name: Name) -> dict[str, Any]:
        if not store.remove_agent(name):
            raise HTTPException(404, f"name: no agent {name!r}")
        return {"name": name, "removed": True}

    return api


def check_pem(pem: str) -> None:
    """Refuse (422, one line) a ``tls_ca`` that is not a certificate ``ssl`` can trust."""
    try:
        ssl.create_default_context(cadata=pem)
    except (ssl.SSLError, ValueError) as exc:
        raise HTTPException(422, f"tls_ca: not a PEM certificate ssl can load ({exc}); send the agent's --tls-cert file") from exc
