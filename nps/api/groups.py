"""Groups as the API serves them: who may see and make which group (``nps.groups`` keeps them)."""

from __future__ import annotations

import uuid
from typing import Any

from nps.api.auth import User, require_write
from nps.errors import InvalidQuery
from nps.groups import Group, GroupNotFound, GroupRecords
from nps.index import DatasetIndex
from nps.index.documents import MAX_GROUP_MEMBERS
from nps.index.elastic import Page
from schemas.common import DEFAULT_PROJECT

__all__ = ["Group", "GroupNotFound", "Groups"]


class Groups:
    """Groups, with the caller's rights applied."""

    def __init__(self, records: GroupRecords, index: DatasetIndex) -> None:
        self.records = records
        self.index = index

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
        self.records.save(group, members)
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

    def get(self, user: User, group_id: str) -> Group:
        """A group the caller may see; GroupNotFound otherwise (the same answer either way)."""
        group = self.records.load(group_id)
        if group is None or not user.can_read(group.project):
            raise GroupNotFound(f"group {group_id[:40]} not found")
        return group

    def members(self, group_id: str) -> list[str]:
        """Every member id, in order."""
        return self.records.members(group_id)

    def list(self, user: User) -> list[Group]:
        """Groups of the caller's projects, newest first."""
        found = [g for g in self.records.all() if user.can_read(g.project)]
        return sorted(found, key=lambda g: g.created_at, reverse=True)

    def within(self, user: User, group_id: str) -> tuple[str, str]:
        """A ``find`` filter selecting the members of a group the caller may see."""
        return self.records.within(self.get(user, group_id).id)

    def page(self, user: User, group: Group, query: str, size: int, after: Any) -> Page:
        """Members matching a further query (still only what the caller may see)."""
        return self.index.find(query, size=size, after=after, projects=user.readable(), leading_wildcards=False,
                               within=self.records.within(group.id), sort=[("id", "asc")])
