"""API tests reuse the job fixtures (the busybox image)."""

from tests.jobs.conftest import busybox_id  # noqa: F401 (fixture)
