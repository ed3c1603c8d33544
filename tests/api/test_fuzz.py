"""Schemathesis against the OpenAPI description: generated requests (valid and not) must never
get a 500, and every answer must be documented: its status, content type and body schema.

Not checked: whether every schema-valid request is accepted and every invalid one refused
(semantic checks such as "this id exists" or "this query parses" answer 4xx to schema-valid
input, by design)."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis import checks


@pytest.fixture
def api_schema(api: dict[str, Any]) -> Any:
    return schemathesis.openapi.from_asgi("/api/v1/openapi.json", api["app"])


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@hypothesis_settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_generated_requests_get_documented_answers_and_never_a_500(case: Any, api: dict[str, Any]) -> None:
    case.call_and_validate(
        headers={"Authorization": f"Bearer {api['tokens']['alice']}"},
        checks=[checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
                checks.response_schema_conformance],
        excluded_checks=[checks.positive_data_acceptance, checks.negative_data_rejection,
                         checks.missing_required_header, checks.ignored_auth, checks.unsupported_method],
    )
