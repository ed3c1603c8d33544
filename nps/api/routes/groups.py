"""Frozen groups: create from a query or ids, list, show members (optionally filtered)."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from nps.api.deps import Caller, Svc, cursor
from nps.api.groups import Group
from nps.api.models import GroupPage

router = APIRouter(prefix="/api/v1/groups", tags=["groups"])
GroupIdPath = Annotated[str, Path(pattern=r"^g-[0-9a-f]{12}$")]


class GroupIn(BaseModel):
    """A group to freeze: from a query, or from a list of ids."""

    model_config = {"extra": "forbid"}
    name: str = Field(min_length=1, max_length=200)
    project: str | None = Field(default=None, max_length=128)
    query: str | None = Field(default=None, min_length=1, max_length=2000)
    ids: list[Annotated[str, Field(pattern=r"^[0-9a-f]{40}$")]] | None = Field(default=None, max_length=20000)


@router.post("", status_code=201)
def create_group(body: GroupIn, user: Caller, svc: Svc) -> Group:
    """Freeze a group: the datasets a query finds now, or a list of ids (all must be visible)."""
    return svc.groups.create(user, body.name, body.project, body.query, body.ids)


@router.get("")
def list_groups(user: Caller, svc: Svc) -> list[Group]:
    """Groups of the caller's projects, newest first."""
    return list(svc.groups.list(user))


@router.get("/{group_id}")
def show_group(group_id: GroupIdPath, user: Caller, svc: Svc,
               q: Annotated[str | None, Query(max_length=2000)] = None,
               size: Annotated[int, Query(ge=1, le=1000)] = 100,
               after: Annotated[str | None, Query(max_length=4000)] = None) -> GroupPage:
    """A group and a page of its members; ``q`` filters them further (e.g. is_diffusion:true)."""
    group = svc.groups.get(user, group_id)
    if q is None:
        offset = int(after) if after and after.isdigit() else 0
        members = svc.groups.members(group_id)[offset:offset + size]
        more = offset + size < group.size
        return GroupPage(group=group, total=group.size, members=[{"id": m} for m in members],
                         next=str(offset + size) if more else None)
    page = svc.groups.page(user, group, q, size, cursor(after))
    return GroupPage(group=group, total=page.total, members=page.hits,
                     next=json.dumps(page.after) if page.after else None)
