"""FastAPI dependencies every service's deps.py builds its aliases from."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from backhaul_kit.runtime import ServiceRuntime
from backhaul_kit.unit_of_work import UnitOfWork


def get_runtime(request: Request) -> ServiceRuntime:
    runtime: ServiceRuntime = request.app.state.runtime
    return runtime


def get_uow(runtime: Annotated[ServiceRuntime, Depends(get_runtime)]) -> UnitOfWork:
    return runtime.uow()


def get_actor(request: Request) -> str:
    """The acting user: the subject of the request's bearer token, never the body."""
    principal = getattr(request.state, "principal", None)
    return principal.subject if principal is not None else "anonymous"


RuntimeDep = Annotated[ServiceRuntime, Depends(get_runtime)]
UnitOfWorkDep = Annotated[UnitOfWork, Depends(get_uow)]
ActorDep = Annotated[str, Depends(get_actor)]
