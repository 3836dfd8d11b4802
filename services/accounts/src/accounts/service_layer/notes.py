"""Notes and tasks on an account (seed 003, overview)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from accounts.adapters.tables import Note, Task
from accounts.service_layer.records import get_account, log_action
from backhaul_kit.clock import now
from backhaul_kit.errors import NotFound
from backhaul_kit.unit_of_work import UnitOfWork


async def add_note(uow: UnitOfWork, account_id: int, body: str, *, actor: str) -> Note:
    async with uow:
        await get_account(uow, account_id)
        note = Note(account_id=account_id, body=body, author=actor, created_at=now())
        uow.session.add(note)
        await uow.session.flush()
        log_action(uow, account_id, actor, "note_added", note_id=note.id)
        return note


async def list_notes(uow: UnitOfWork, account_id: int) -> list[Note]:
    async with uow:
        await get_account(uow, account_id)
        rows = await uow.session.scalars(
            select(Note).where(Note.account_id == account_id).order_by(Note.id.desc())
        )
        return list(rows.all())


async def add_task(
    uow: UnitOfWork,
    account_id: int,
    *,
    title: str,
    description: str | None,
    assignee: str | None,
    due_at: datetime | None,
    actor: str,
) -> Task:
    async with uow:
        await get_account(uow, account_id)
        task = Task(
            account_id=account_id,
            title=title,
            description=description,
            assignee=assignee,
            due_at=due_at,
            completed=False,
            created_by=actor,
            created_at=now(),
        )
        uow.session.add(task)
        await uow.session.flush()
        log_action(uow, account_id, actor, "task_added", task_id=task.id, assignee=assignee)
        return task


async def list_tasks(uow: UnitOfWork, account_id: int, completed: bool | None = None) -> list[Task]:
    async with uow:
        await get_account(uow, account_id)
        statement = select(Task).where(Task.account_id == account_id)
        if completed is not None:
            statement = statement.where(Task.completed == completed)
        return list((await uow.session.scalars(statement.order_by(Task.id))).all())


async def update_task(
    uow: UnitOfWork,
    account_id: int,
    task_id: int,
    *,
    completed: bool | None,
    assignee: str | None,
    assign: bool,
    actor: str,
) -> Task:
    """Complete or reopen a task, or (re)assign it."""
    async with uow:
        task = await uow.session.get(Task, task_id)
        if task is None or task.account_id != account_id:
            raise NotFound(f"task {task_id} of account {account_id} not found")
        if completed is not None and completed != task.completed:
            task.completed = completed
            task.completed_at = now() if completed else None
            log_action(
                uow,
                account_id,
                actor,
                "task_completed" if completed else "task_reopened",
                task_id=task.id,
            )
        if assign and assignee != task.assignee:
            log_action(
                uow,
                account_id,
                actor,
                "task_assigned",
                task_id=task.id,
                **{"from": task.assignee, "to": assignee},
            )
            task.assignee = assignee
        return task
