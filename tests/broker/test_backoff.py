"""The reconnect back-off every consumer shares: it grows, then stays at a cap of a few seconds,
so work resumes soon after a service returns. Pure: no service needed."""

from __future__ import annotations

from nps.broker import RECONNECT_BACKOFF_S, backoff_delay
from nps.hashing import series_dataset_id
from nps.ingest.assembly import Assembly
from schemas.messages import InstanceReceived

CAP_S = max(RECONNECT_BACKOFF_S)


def test_the_waits_grow_then_stay_at_a_cap_of_a_few_seconds() -> None:
    waits = [backoff_delay(n) for n in range(20)]
    assert waits[: len(RECONNECT_BACKOFF_S)] == list(RECONNECT_BACKOFF_S)
    assert waits == sorted(waits) and set(waits[len(RECONNECT_BACKOFF_S):]) == {CAP_S}
    assert waits[0] > 0 and CAP_S <= 3


def test_a_series_whose_commit_keeps_failing_is_retried_at_least_every_cap() -> None:
    uid = "1.2.826.0.1.3680043.8.498.1"
    assembly = Assembly(stable_age=1)
    assembly.add(InstanceReceived(dataset_id=series_dataset_id(uid), path="dicom/1.2.3.dcm", size=1,
                                  blake3="0" * 64, sop_instance_uid="1.2.3", series_instance_uid=uid), 1, 0.0)
    delays = [assembly.retry_later(series_dataset_id(uid), float(n)) for n in range(12)]
    assert max(delays) == CAP_S and delays == [backoff_delay(n) for n in range(12)]
