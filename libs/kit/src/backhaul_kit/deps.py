"""FastAPI dependencies every service's deps.py builds its aliases from."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from backhaul_kit.runtime import ServiceRuntime
from backhaul_kit.unit_of_work import UnitOfWork


def get_runtime(request: Request) -> ServiceRuntime:
    runtime: ServiceRuntime = request.app.state.runtime
    return runtime


def get_uow(runtime: Annotated[ServiceRuntime, Depends(get_runtime)]) -> UnitOfWork:
    return runtime.uow()


def get_actor(
    x_actor: Annotated[
        str | None,
        Header(max_length=200, description="Who is acting (until bearer tokens carry it)"),
    ] = None,
) -> str:
    return x_actor or "api"


RuntimeDep = Annotated[ServiceRuntime, Depends(get_runtime)]
UnitOfWorkDep = Annotated[UnitOfWork, Depends(get_uow)]
ActorDep = Annotated[str, Depends(get_actor)]
