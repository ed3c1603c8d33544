"""Frozen groups: a named list of dataset ids and the query that produced it.

New data never changes a group. Members are kept in the object store (the system of record,
``groups/<id>/members.json.gz``) and mirrored into the index's member lists (``<prefix>-groups``)
so that "only the diffusion-weighted members" is one search with a server-side terms lookup,
however many members there are. Who may see or make a group is the API's business; this is
where groups are kept, shared by the API and the analyst.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from typing import Annotated

from pydantic import Field, StringConstraints

from nps.blobs import Blobs
from nps.errors import DatasetNotFound
from nps.index import DatasetIndex
from schemas.common import DEFAULT_PROJECT, Frozen, utcnow

GroupId = Annotated[str, StringConstraints(pattern=r"^g-[0-9a-f]{12}$")]


class GroupNotFound(DatasetNotFound):
    """Raised when no such group exists (or it is not in the caller's projects)."""


class Group(Frozen):
    """A frozen group (its members are kept beside it)."""

    id: GroupId
    name: Annotated[str, Field(min_length=1, max_length=200)]
    project: str = DEFAULT_PROJECT
    query: str | None = None
    size: int = Field(ge=0)
    created_by: str
    created_at: str = Field(default_factory=lambda: utcnow().isoformat())


def valid_group_id(group_id: str) -> bool:
    """True for ``g-`` and 12 lowercase hex digits (anything else is never a stored key)."""
    return len(group_id) == 14 and group_id.startswith("g-") and all(c in "0123456789abcdef" for c in group_id[2:])


class GroupRecords:
    """Groups in ``blobs``, their members mirrored into ``index``'s member lists."""

    def __init__(self, blobs: Blobs, index: DatasetIndex) -> None:
        self.blobs = blobs
        self.index = index

    def save(self, group: Group, members: list[str]) -> None:
        """Keep a new group: members first, mirrored, then the record (from then on it is visible)."""
        self.blobs.put(f"groups/{group.id}/members.json.gz", gzip.compress(json.dumps(members).encode()))
        self.index.mirror_members(group.id, members)
        self.blobs.put(f"groups/{group.id}/group.json", group.model_dump_json().encode())

    def load(self, group_id: str) -> Group | None:
        """The group, or None (also for an id that cannot be one)."""
        raw = self.blobs.get(f"groups/{group_id}/group.json") if valid_group_id(group_id) else None
        return Group.model_validate_json(raw) if raw else None

    def members(self, group_id: str) -> list[str]:
        """Every member id, in order."""
        raw = self.blobs.get(f"groups/{group_id}/members.json.gz") if valid_group_id(group_id) else None
        return list(json.loads(gzip.decompress(raw))) if raw else []

    def all(self) -> Iterator[Group]:
        """Every group, in no particular order."""
        for child in self.blobs.children("groups"):
            group = self.load(child)
            if group is not None:
                yield group

    def within(self, group_id: str) -> tuple[str, str]:
        """A ``within`` filter for ``DatasetIndex.find`` selecting the group's members; a lost
        mirror is rebuilt from the object store first."""
        if not self.index.has_members(group_id):
            self.index.mirror_members(group_id, self.members(group_id))
        return self.index.member_lists, group_id
