"""The REST API (``/api/v1``), FastAPI. Started by ``nps api serve`` on loopback by default.

Every route but ``/api/v1/health`` needs ``Authorization: Bearer <token>``. A dataset, job,
group or analysis of a project the caller may not read answers exactly like one that does not
exist (404). Service credentials never appear in an answer; errors are one JSON object
``{"detail": "..."}`` with a 4xx status for anything the caller can fix, 503 when a backing
service is down, and a bare 500 (details only in the server log) otherwise.
"""

from __future__ import annotations

import threading

from fastapi import FastAPI

from nps.api import errors
from nps.api.auth import Auth
from nps.api.deps import Caller, Services, publish_analysis
from nps.api.models import Me
from nps.config import Settings


def create_app(settings: Settings) -> FastAPI:
    """The application, bound to the stack ``settings`` describe."""
    from nps.analyses import AnalysisRecords
    from nps.api.analyses import Analyses
    from nps.api.groups import Groups
    from nps.api.routes import analyses, datasets, groups, jobs, search
    from nps.blobs import MinioBlobs
    from nps.groups import GroupRecords
    from nps.index import DatasetIndex
    from nps.index.jobs import JobIndex
    from nps.jobs import records_for
    from nps.jobs.images import ImageCatalog
    from nps.layers import Layers
    from nps.store.minio import MinioStore

    store = MinioStore(settings)
    blobs = MinioBlobs(store)
    index = DatasetIndex(settings.es_url, settings.queue_prefix)
    records = records_for(store)
    groups_ = Groups(GroupRecords(blobs, index), index)
    analyses_ = Analyses(AnalysisRecords(blobs), groups_, index, records,
                         lambda message: publish_analysis(services, message))
    auth = Auth(blobs, settings.api_auth_cache_seconds)
    services = Services(settings, store, index, records, auth, groups_, Layers(blobs), analyses_, threading.Lock(),
                        JobIndex(settings.es_url, settings.queue_prefix), ImageCatalog(blobs))

    app = FastAPI(title="NPS", version="1", description=__doc__, openapi_url="/api/v1/openapi.json",
                  docs_url="/api/v1/docs", redoc_url=None, responses=errors.RESPONSES)
    app.state.services = services
    errors.install(app)

    @app.get("/api/v1/health", tags=["meta"])
    def health() -> dict[str, str]:
        """Liveness (no token needed)."""
        return {"status": "ok"}

    @app.get("/api/v1/me", tags=["meta"])
    def me(user: Caller) -> Me:
        """Who the token belongs to."""
        return Me(name=user.name, role=user.role.value, projects=list(user.projects))

    for module in (datasets, search, groups, jobs, analyses):
        app.include_router(module.router)
    return app
