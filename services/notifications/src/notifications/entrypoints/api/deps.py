"""The API's dependencies, as Annotated aliases."""

from backhaul_kit.deps import ActorDep, RuntimeDep, UnitOfWorkDep

__all__ = ["ActorDep", "RuntimeDep", "UnitOfWorkDep"]
