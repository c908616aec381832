"""Fixtures of the chat's end-to-end tests: a tenant of their own, bots deployed into it (knowledge bases
indexed), our fake OpenAI-compatible server, and one live daphne (tests.browser.harness.LiveServer) shared by
the whole directory, which a test may restart.

Everything the server process must see is committed (the tenant, the bots, the sessions). The server has no
platform LLM: bots that answer with a model name the fake in their config.csv (`llm-url`), which the server
allows for loopback addresses (LLM_ALLOW_PRIVATE_HOSTS).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

from tests.browser.harness import LiveServer, database_url_for, write_package
from tests.sessions.support import ChatClient
from tests.support.llm_fake import FakeLLMServer, RecordedRequest, Reply, ToolCall

T = TypeVar("T")

CHAT_HOST = "chat.test.localhost"
# What the fake model answers when the user asks it to book (the tool call a test expects).
BOOK_TRIGGER = "please book"
BOOK_ARGUMENTS = {"name": "Ana", "date": "2026-05-14", "people": 3}


def orm_call(fn: Callable[..., T], *args: object) -> T:
    """Run ORM code on a short-lived thread whose connection autocommits (the server process sees it, and the
    thread may be called from async tests), closing the connection after."""

    def run() -> T:
        from django.db import connections

        try:
            return fn(*args)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()


def in_schema(schema: str, fn: Callable[..., T], *args: object) -> T:
    """orm_call in a tenant's schema."""

    def run() -> T:
        from django_tenants.utils import schema_context

        with schema_context(schema):
            return fn(*args)

    return orm_call(run)


def scripted_model(request: RecordedRequest) -> Reply:
    """The fake model's default behaviour in these tests: after a tool ran, answer with its result; asked to
    book, call the first tool offered; otherwise echo."""
    messages = request.body.get("messages") or []
    tool_results = [m.get("content") or "" for m in messages if m.get("role") == "tool"]
    if tool_results:
        return Reply(text=f"All set. The tool said: {tool_results[-1]}", chunk_chars=6)
    tools = request.body.get("tools") or []
    if BOOK_TRIGGER in request.last_user_text.lower() and tools:
        return Reply(tool_calls=[ToolCall(tools[0]["function"]["name"], BOOK_ARGUMENTS)])
    return Reply(text=f"echo: {request.last_user_text}", chunk_chars=6)


def bot_config(*, llm_url: str | None, extra: str = "") -> str:
    lines = ["name,value"]
    if llm_url:
        lines += [f"llm-url,{llm_url}", "llm-model,fake-model", "llm-key,test-key"]
    lines.append("llm-cache,false")
    return "\n".join(lines) + "\n" + extra


@dataclass
class ChatServer:
    """The live server and how to restart it (same port: clients keep their URLs)."""

    env: dict[str, str]
    log_dir: Path
    server: LiveServer | None = None
    restarts: int = field(default=0)

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.port

    def start(self, port: int | None = None) -> ChatServer:
        log = self.log_dir / f"server-{self.restarts}.log"
        self.server = (LiveServer(env=self.env, log_path=log, port=port) if port else
                       LiveServer(env=self.env, log_path=log)).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def restart(self) -> None:
        port = self.port
        self.stop()
        self.restarts += 1
        self.start(port)

    def log_tail(self) -> str:
        return self.server.log_tail() if self.server else ""


@dataclass(frozen=True)
class ChatTenant:
    schema_name: str
    host: str


@pytest.fixture(scope="session")
def chat_tenant(canary_tenants, django_db_blocker) -> ChatTenant:
    from apps.tenants.services import tenant_create

    with django_db_blocker.unblock():
        tenant, _password = tenant_create(name="Chat tests", domain=CHAT_HOST)
    return ChatTenant(tenant.schema_name, CHAT_HOST)


@pytest.fixture(scope="session")
def chat_drive(tmp_path_factory) -> Path:
    """The local drive both this process (deploys) and the server process (runtime files) use."""
    return tmp_path_factory.mktemp("chat-drive")


@pytest.fixture(scope="session")
def chat_llm():
    """The fake model every test bot names; reset per test by `llm`."""
    server = FakeLLMServer(default=scripted_model).start()
    yield server
    server.stop()


@pytest.fixture
def llm(chat_llm) -> FakeLLMServer:
    chat_llm.reset()
    chat_llm.default = scripted_model
    yield chat_llm
    chat_llm.reset()
    chat_llm.default = scripted_model


def artifacts_dir() -> Path:
    from django.conf import settings

    path = Path(settings.VAR_DIR) / "test-artifacts" / "sessions"
    path.mkdir(parents=True, exist_ok=True)
    return path


LIVE_SERVER_APPLICATION_NAME = "chat-live-server"


def live_env(drive: Path) -> dict[str, str]:
    """The server process's environment: the test run's database and Redis, a local drive, no platform LLM."""
    from django.db import connection

    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "gbplatform.settings.test",
        # Named, so a test can find the server's own database connections (LIVE_SERVER_APPLICATION_NAME).
        "DATABASE_URL": database_url_for(os.environ["DATABASE_URL"], connection.settings_dict["NAME"])
        + f"?application_name={LIVE_SERVER_APPLICATION_NAME}",
        "MEDIA_ROOT": str(drive),
        "S3_ACCESS_KEY": "",
        "QDRANT_URL": "",
        "LLM_URL": "",
        "LLM_ALLOW_PRIVATE_HOSTS": "true",
    }


@pytest.fixture(scope="session")
def chat_server(chat_tenant, chat_drive, django_db_blocker):
    server = ChatServer(env=live_env(chat_drive), log_dir=artifacts_dir()).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def chat_client(chat_server, chat_tenant) -> ChatClient:
    return ChatClient(chat_server.port, chat_tenant.host)


def _index_pending_documents() -> int:
    """Index the bot's KB documents now (the deploy queued them for a worker this run does not have)."""
    from apps.kb.indexing import document_index
    from apps.kb.models import Document

    count = 0
    for document_id in Document.objects.exclude(status="indexed").values_list("pk", flat=True):
        outcome = document_index(document_id=document_id)
        assert outcome.status in ("indexed", "unchanged"), outcome
        count += 1
    return count


@pytest.fixture(scope="session")
def deploy_bot(chat_tenant, chat_drive, tmp_path_factory, django_db_blocker):
    """deploy_bot(name, {path: text}, schema=None) -> name: a bot package deployed into the chat tenant (or the
    tenant of `schema`), committed, its knowledge bases indexed."""
    from django.test import override_settings
    from django_tenants.utils import schema_context

    from apps.bots.services import bot_deploy
    from apps.drive.package import package_read_dir

    packages = tmp_path_factory.mktemp("chat-packages")

    def deploy_in_schema(folder: Path, schema: str):
        with (override_settings(MEDIA_ROOT=chat_drive, S3_ACCESS_KEY="", QDRANT_URL=""),
              schema_context(schema)):
            report = bot_deploy(package=package_read_dir(folder))
            _index_pending_documents()
            return report

    def deploy(name: str, files: dict[str, str], schema: str | None = None) -> str:
        folder = write_package(packages, name, files)
        with django_db_blocker.unblock():
            report = orm_call(deploy_in_schema, folder, schema or chat_tenant.schema_name)
        assert not report.errors, report.errors
        return name

    return deploy
