"""The request signer: AWS's published example, and agreement with minio-py's signer."""

from __future__ import annotations

import calendar
import hashlib
from datetime import datetime
from urllib.parse import urlsplit

import pytest
from minio.credentials import Credentials
from minio.signer import sign_v4_s3

from nps.store.sigv4 import amz_date, authorization

EMPTY = hashlib.sha256(b"").hexdigest()
AK, SK = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def test_aws_published_example_get_object() -> None:
    """The GET Object example of AWS's "Signature Calculations for the Authorization Header"."""
    headers = {"Host": "examplebucket.s3.amazonaws.com", "Range": "bytes=0-9",
               "x-amz-content-sha256": EMPTY, "x-amz-date": "20130524T000000Z"}
    got = authorization(method="GET", path="/test.txt", query="", headers=headers, payload_sha256=EMPTY,
                        access_key=AK, secret_key=SK, region="us-east-1", date="20130524T000000Z")
    assert got == ("AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
                   "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
                   "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")


@pytest.mark.parametrize(("method", "path", "query", "extra"), [
    ("PUT", "/nps/a/b/c/d/0123/dicom/IM%200001.dcm", "", {"If-None-Match": "*", "Content-Length": "10"}),
    ("GET", "/nps/key", "", {"Range": "bytes=5-"}),
    ("PUT", "/nps/k", "", {"X-Amz-Meta-Note": "  two  spaces  inside ", "Content-Type": "application/json",
                           "User-Agent": "not signed"}),
    ("GET", "/nps/", "prefix=a%2Fb&list-type=2&a-b=1&a=2", {}),
])
def test_same_signature_as_minio_py(method: str, path: str, query: str, extra: dict[str, str]) -> None:
    date = datetime(2026, 11, 27, 21, 5, 9)
    stamp = amz_date(calendar.timegm(date.timetuple()))
    assert stamp == "20261127T210509Z"
    payload = EMPTY if method == "GET" else "UNSIGNED-PAYLOAD"
    headers = {**extra, "Host": "127.0.0.1:9100", "x-amz-content-sha256": payload, "x-amz-date": stamp}
    ours = authorization(method=method, path=path, query=query, headers=headers, payload_sha256=payload,
                         access_key=AK, secret_key=SK, region="eu-west-3", date=stamp)
    url = urlsplit(f"http://127.0.0.1:9100{path}" + (f"?{query}" if query else ""))
    theirs = sign_v4_s3(method=method, url=url, region="eu-west-3", headers=dict(headers),
                        credentials=Credentials(AK, SK), content_sha256=payload, date=date)
    assert ours == theirs["Authorization"]
