"""Frozen groups: a named list of dataset ids and the query that produced it.

New data never changes a group. Members are kept in the object store (the system of record,
``groups/<id>/members.json.gz``) and mirrored into a small ``<prefix>-groups`` index so that
"only the diffusion-weighted members" is one search with a server-side terms lookup, however
many members there are.
"""

from __future__ import annotations

import gzip
import json
import uuid
from typing import Annotated, Any

from pydantic import Field, StringConstraints

from nps.api.auth import User, require_write
from nps.blobs import Blobs
from nps.errors import DatasetNotFound, IndexUnavailable, InvalidQuery
from nps.index import DatasetIndex
from nps.index.documents import MAX_GROUP_MEMBERS
from nps.index.elastic import Page
from schemas.common import DEFAULT_PROJECT, Frozen, utcnow

GroupId = Annotated[str, StringConstraints(pattern=r"^g-[0-9a-f]{12}$")]


class GroupNotFound(DatasetNotFound):
    """No such group (or not in the caller's projects)."""


class Group(Frozen):
    """A group's description (its members are stored beside it)."""

    id: GroupId
    name: Annotated[str, Field(min_length=1, max_length=200)]
    project: str = DEFAULT_PROJECT
    query: str | None = None
    size: int = Field(ge=0)
    created_by: str
    created_at: str = Field(default_factory=lambda: utcnow().isoformat())


class Groups:
    """Groups in ``blobs`` and their members mirrored next to the datasets index."""

    def __init__(self, blobs: Blobs, index: DatasetIndex) -> None:
        self.blobs = blobs
        self.index = index
        self.mirror = f"{index.name.removesuffix('-datasets')}-groups"

    def create(self, user: User, name: str, project: str | None, query: str | None,
               ids: list[str] | None) -> Group:
        """Freeze the datasets ``query`` finds now (or the given ``ids``) in the caller's projects.
        The group belongs to ``project``, or else to its members' project (they must share one)."""
        if (query is None) == (ids is None):
            raise InvalidQuery("give either a query or a list of ids")
        found = self._from_query(user, query) if query is not None else self._checked(user, ids or [])
        members = sorted(found)
        if project is None:
            projects = set(found.values())
            if len(projects) > 1:
                raise InvalidQuery("the members come from several projects: say which project the group belongs to")
            project = projects.pop() if projects else DEFAULT_PROJECT
        require_write(user, project)
        group = Group(id=f"g-{uuid.uuid4().hex[:12]}", name=name, project=project, query=query,
                      size=len(members), created_by=user.name)
        self.blobs.put(f"groups/{group.id}/members.json.gz", gzip.compress(json.dumps(members).encode()))
        self.blobs.put(f"groups/{group.id}/group.json", group.model_dump_json().encode())
        self.mirror_members(group.id, members)
        return group

    def _from_query(self, user: User, query: str) -> dict[str, str]:
        """Member id -> its project."""
        found: dict[str, str] = {}
        after = None
        while True:
            page = self.index.find(query, size=1000, after=after, source=["id", "project"],
                                   projects=user.readable(), leading_wildcards=False, sort=[("id", "asc")])
            found.update({h["id"]: h.get("project") or DEFAULT_PROJECT for h in page.hits})
            if len(found) > MAX_GROUP_MEMBERS:
                raise InvalidQuery(f"the query finds more than {MAX_GROUP_MEMBERS} datasets: narrow it")
            if page.after is None:
                return found
            after = page.after

    def _checked(self, user: User, ids: list[str]) -> dict[str, str]:
        wanted = sorted(set(ids))
        if len(wanted) > MAX_GROUP_MEMBERS:
            raise InvalidQuery(f"more than {MAX_GROUP_MEMBERS} ids")
        found = self.index.mget(wanted, source=["project"])
        unknown = [i for i in wanted if i not in found or not user.can_read(found[i].get("project"))]
        if unknown:
            raise InvalidQuery(f"{len(unknown)} id(s) are not datasets you can see, e.g. {unknown[0]}")
        return {i: found[i].get("project") or DEFAULT_PROJECT for i in wanted}

    def mirror_members(self, group_id: str, members: list[str]) -> None:
        """Copy a member list into the mirror index (groups, and analyses' job ids)."""
        es = self.index.es
        try:
            if not es.indices.exists(index=self.mirror):
                es.indices.create(index=self.mirror, settings={"number_of_shards": 1, "number_of_replicas": 0},
                                  mappings={"dynamic": "strict", "properties": {
                                      "members": {"type": "keyword", "index": False, "doc_values": False}}})
            es.index(index=self.mirror, id=group_id, document={"members": members}, refresh=True)
        except Exception as exc:
            raise IndexUnavailable(f"mirroring group {group_id} into Elasticsearch failed: {exc}") from exc

    def get(self, user: User, group_id: str) -> Group:
        """A group the caller may see; GroupNotFound otherwise (the same answer either way)."""
        raw = self.blobs.get(f"groups/{group_id}/group.json") if _valid(group_id) else None
        group = Group.model_validate_json(raw) if raw else None
        if group is None or not user.can_read(group.project):
            raise GroupNotFound(f"group {group_id[:40]} not found")
        return group

    def members(self, group_id: str) -> list[str]:
        """Every member id, in order."""
        raw = self.blobs.get(f"groups/{group_id}/members.json.gz")
        return list(json.loads(gzip.decompress(raw))) if raw else []

    def list(self, user: User) -> list[Group]:
        """Groups of the caller's projects, newest first."""
        found = []
        for child in self.blobs.children("groups"):
            raw = self.blobs.get(f"groups/{child}/group.json")
            if raw:
                group = Group.model_validate_json(raw)
                if user.can_read(group.project):
                    found.append(group)
        return sorted(found, key=lambda g: g.created_at, reverse=True)

    def page(self, user: User, group: Group, query: str, size: int, after: Any) -> Page:
        """Members matching a further query (still only what the caller may see)."""
        if not self.index.es.exists(index=self.mirror, id=group.id):  # a lost mirror is rebuilt from MinIO
            self.mirror_members(group.id, self.members(group.id))
        return self.index.find(query, size=size, after=after, projects=user.readable(), leading_wildcards=False,
                               within=(self.mirror, group.id), sort=[("id", "asc")])


def _valid(group_id: str) -> bool:
    return len(group_id) == 14 and group_id.startswith("g-") and all(c in "0123456789abcdef" for c in group_id[2:])
