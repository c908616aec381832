"""Settings: production passes `check --deploy`, refuses a missing environment, and every variable the
code or the compose file reads is documented in .env.example."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gbplatform.settings.env import ImproperEnvironment, env_bool, redis_url_for_db

ROOT = Path(__file__).resolve().parents[2]
PROD_ENV = {
    "DJANGO_SECRET_KEY": "prod-check-Kq8v2-ZpX4n-Wm7Rt-Lb3Yc-Hd6Fs-Jg9Ue-Ta1Io-Pk5Qw-Zx8",
    "DATABASE_URL": "postgresql://gb:pw@db.example.com:5432/gbplatform",
    "REDIS_URL": "redis://cache.example.com:6379/0",
    "ALLOWED_HOSTS": ".bots.example.com",
    "VAULT_ADDR": "https://vault.example.com",
}


def _manage(*args: str, env: dict) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE"}}
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env={**clean, **env}, capture_output=True, text=True,
        timeout=120,
    )


def test_production_settings_pass_check_deploy_without_warnings():
    result = _manage(
        "check", "--deploy", "--fail-level", "WARNING", "--settings=gbplatform.settings.prod", env=PROD_ENV
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


# What `check --deploy` does not look at (the reliability test plan, section 1.1), read from the production
# settings as deployed.
POLICY_PROBE = """
import json
from django.conf import settings as s
from django.core.cache import caches
print(json.dumps({
    "conn_max_age": [db.get("CONN_MAX_AGE") for db in s.DATABASES.values()],
    "data_upload_max": s.DATA_UPLOAD_MAX_MEMORY_SIZE, "files_max": s.DATA_UPLOAD_MAX_NUMBER_FILES,
    "session_age": s.SESSION_COOKIE_AGE, "session_idle": s.SESSION_IDLE_TIMEOUT_S,
    "session_domain": s.SESSION_COOKIE_DOMAIN, "csrf_domain": s.CSRF_COOKIE_DOMAIN,
    "oidc_timeout": s.OIDC_TIMEOUT, "allowed_hosts": s.ALLOWED_HOSTS,
    "cache_key_functions": [c.get("KEY_FUNCTION") for c in s.CACHES.values()],
    "body_limit_middleware": "RequestBodyLimit" in open(s.BASE_DIR / "gbplatform" / "asgi.py").read(),
    "csp": "apps.compliance.middleware.SecurityHeadersMiddleware" in s.MIDDLEWARE,
}))
"""


def test_production_policies_that_check_deploy_does_not_test():
    import json

    result = _manage("shell", "--settings=gbplatform.settings.prod", "-c", POLICY_PROBE, env=PROD_ENV)
    assert result.returncode == 0, result.stderr
    policy = json.loads(result.stdout.strip().splitlines()[-1])
    assert policy["conn_max_age"] and set(policy["conn_max_age"]) == {0}  # ASGI: no persistent connections
    assert policy["data_upload_max"] is not None and policy["data_upload_max"] <= 10 * 1024 * 1024
    assert policy["files_max"] is not None and policy["files_max"] <= 100
    assert 0 < policy["session_age"] <= 12 * 3600  # absolute timeout (ASVS 7.3.2), not Django's two weeks
    assert 0 < policy["session_idle"] <= 3600  # idle timeout (ASVS 7.3.1)
    assert policy["session_domain"] is None and policy["csrf_domain"] is None  # host-only across tenants
    assert policy["oidc_timeout"] is not None and 0 < policy["oidc_timeout"] <= 30
    assert "*" not in policy["allowed_hosts"]
    assert set(policy["cache_key_functions"]) == {"django_tenants.cache.make_key"}  # tenant in every cache key
    assert policy["body_limit_middleware"] and policy["csp"]


PROXY_PROBE = """
from django.conf import settings
print("proxy-header", settings.SECURE_PROXY_SSL_HEADER)
"""


@pytest.mark.parametrize(("trust", "expected"), [("false", "None"), ("", "None"),
                                                  ("true", "('HTTP_X_FORWARDED_PROTO', 'https')")])
def test_production_trusts_x_forwarded_proto_only_when_told(trust, expected):
    """Trusted without a proxy in front, any client could claim HTTPS (CSRF origin, the SSL redirect)."""
    result = _manage("shell", "--settings=gbplatform.settings.prod", "-c", PROXY_PROBE,
                     env={**PROD_ENV, "TRUST_X_FORWARDED_PROTO": trust})
    assert result.returncode == 0, result.stderr
    assert f"proxy-header {expected}" in result.stdout


def _dockerfile_build_env() -> dict[str, str]:
    """The variables the Dockerfile's collectstatic step sets (the RUN line holding it)."""
    text = (ROOT / "docker" / "Dockerfile").read_text().replace("\\\n", " ")
    line = next(line for line in text.splitlines() if line.startswith("RUN") and "collectstatic" in line)
    return dict(re.findall(r"\b([A-Z][A-Z0-9_]*)=(\S+)", line))


def test_the_images_collectstatic_step_imports_the_production_settings(tmp_path):
    """The image has no var/ (.dockerignore): without VAULT_ADDR or a key file production refuses to start,
    and `docker build` failed at collectstatic."""
    env = {**_dockerfile_build_env(), "GB_VAR_DIR": str(tmp_path)}
    assert {"DJANGO_SECRET_KEY", "DATABASE_URL", "REDIS_URL", "ALLOWED_HOSTS"} <= set(env)
    result = _manage("collectstatic", "--dry-run", "--noinput", "--settings=gbplatform.settings.prod", env=env)
    assert result.returncode == 0, result.stderr


def test_the_image_builds_the_browser_assets_and_keeps_the_env_file_out():
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert "npm ci" in dockerfile and "npm run --silent vendor" in dockerfile
    assert "COPY --from=assets /build/static/vendor static/vendor" in dockerfile
    import json

    vendor = json.loads((ROOT / "package.json").read_text())["scripts"]["vendor"]
    sources = re.findall(r"node_modules/(\S+)", vendor)
    assert len(sources) == 4 and all((ROOT / "node_modules" / path).is_file() for path in sources), sources
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    assert ".env" in ignored and ".env.*" in ignored and "!.env.example" in ignored


def test_production_settings_refuse_to_run_without_encryption_keys():
    env = {k: v for k, v in PROD_ENV.items() if k != "VAULT_ADDR"}
    env["ENCRYPTION_KEY_FILE"] = "missing-dir/encryption.json"
    result = _manage("check", "--settings=gbplatform.settings.prod", env=env)
    assert result.returncode != 0
    assert "ENCRYPTION_KEY_FILE" in result.stderr


@pytest.mark.parametrize("missing", ["DJANGO_SECRET_KEY", "DATABASE_URL", "REDIS_URL"])
def test_production_settings_name_a_missing_variable(missing):
    env = {k: v for k, v in PROD_ENV.items() if k != missing}
    result = _manage("check", "--settings=gbplatform.settings.prod", env=env)
    assert result.returncode != 0
    assert missing in result.stderr


@pytest.mark.parametrize("hosts", ["*", ".bots.example.com,*", " * , .bots.example.com"])
def test_production_refuses_wildcard_allowed_hosts(hosts):
    result = _manage("check", "--settings=gbplatform.settings.prod", env={**PROD_ENV, "ALLOWED_HOSTS": hosts})
    assert result.returncode != 0 and "ALLOWED_HOSTS" in result.stderr


def test_malformed_boolean_names_the_variable(monkeypatch):
    monkeypatch.setenv("VAULT_REQUIRED", "maybe")
    with pytest.raises(ImproperEnvironment, match="VAULT_REQUIRED"):
        env_bool("VAULT_REQUIRED")


def test_redis_databases_are_separated_and_counted_from_the_urls_own():
    assert redis_url_for_db("redis://h:6379/0", 1) == "redis://h:6379/1"
    assert redis_url_for_db("redis://:pw@h:6379", 2) == "redis://:pw@h:6379/2"
    # Two deployments on one Redis (/0 and /4) keep apart: the URL's database is where the platform's start.
    assert redis_url_for_db("rediss://h:6380/5?ssl_cert_reqs=none", 3) == "rediss://h:6380/8?ssl_cert_reqs=none"
    assert redis_url_for_db("unix:///run/redis.sock?db=4", 1) == "unix:///run/redis.sock?db=5"


@pytest.mark.parametrize("url", ["localhost:6379", "127.0.0.1:6379", "http://h:6379/0", "redis:///0",
                                 "redis://h:6379/13", "redis://h:6379/x", "unix://?db=1"])
def test_a_redis_url_that_cannot_work_is_refused_naming_the_variable(url):
    with pytest.raises(ImproperEnvironment, match="REDIS_URL"):
        redis_url_for_db(url, 1)


def test_an_empty_variable_means_its_default(monkeypatch):
    """Compose passes a variable the env file does not set as an empty string."""
    from gbplatform.settings.env import env_str

    monkeypatch.setenv("VAULT_KV_MOUNT", "  ")
    assert env_str("VAULT_KV_MOUNT", "secret") == "secret"
    monkeypatch.setenv("VAULT_KV_MOUNT", " kv ")
    assert env_str("VAULT_KV_MOUNT", "secret") == "kv"


def test_the_database_password_may_be_given_apart_from_the_url(monkeypatch):
    from gbplatform.settings.base import database_from_url

    url = "postgresql://gb@postgres:5432/gbplatform"
    assert database_from_url(url)["PASSWORD"] == ""
    monkeypatch.setenv("DATABASE_PASSWORD", "a/b@c#d?e%f")  # unusable inside the URL
    config = database_from_url(url)
    assert (config["HOST"], config["USER"], config["NAME"], config["PASSWORD"]) == (
        "postgres", "gb", "gbplatform", "a/b@c#d?e%f")


def _documented_variables() -> set[str]:
    text = (ROOT / ".env.example").read_text()
    return set(re.findall(r"^([A-Z][A-Z0-9_]*)=", text, flags=re.M))


def test_every_variable_read_by_settings_is_in_env_example():
    used: set[str] = set()
    for path in [*(ROOT / "gbplatform").rglob("*.py")]:
        used |= set(re.findall(r"env_(?:str|bool|int|list)\(\s*\"([A-Z0-9_]+)\"", path.read_text()))
        used |= set(re.findall(r"os\.environ(?:\.get)?\(\s*\"([A-Z0-9_]+)\"", path.read_text()))
    used -= {"XDG_RUNTIME_DIR"}  # a property of the machine, not of the platform
    assert used, "the pattern found no variables: the test would prove nothing"
    assert used <= _documented_variables(), used - _documented_variables()


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())


def test_compose_has_the_production_topology_wired_to_the_same_variables():
    compose = _compose()
    expected = {"postgres", "redis", "qdrant", "minio", "vault", "zitadel", "livekit", "web", "worker", "beat"}
    assert set(compose["services"]) == expected
    referenced = set(re.findall(r"\$\{([A-Z0-9_]+)", (ROOT / "docker" / "compose.yaml").read_text()))
    assert referenced <= _documented_variables(), referenced - _documented_variables()
    platform_env = compose["x-platform"]["environment"]
    for name in ("DATABASE_URL", "REDIS_URL", "QDRANT_URL", "S3_ENDPOINT_URL", "VAULT_ADDR", "OIDC_ISSUER",
                 "LLM_URL", "SMTP_HOST", "LIVEKIT_URL"):
        assert name in platform_env


# Documented in .env.example but set by the image and compose themselves (paths inside the container, the bind
# address, the containers' own services) or read by compose only (images, the services' passwords).
COMPOSE_OWN = {"GB_VAR_DIR", "GB_BIND", "GB_PORT", "MEDIA_ROOT", "DJANGO_SETTINGS_MODULE", "POSTGRES_PASSWORD",
               "ZITADEL_MASTERKEY", "ZITADEL_EXTERNALDOMAIN", "ZITADEL_DB_PASSWORD"}


def test_compose_passes_every_setting_of_the_env_file_to_the_platform():
    """`--env-file` only fills ${...} placeholders: a setting compose does not list never reached the
    containers (TRUSTED_PROXY_IPS behind the proxy, Vault's AppRole, HSTS preload, WEB_PROCESSES...)."""
    documented = {name for name in _documented_variables() if not name.endswith("_IMAGE")}
    assert len(documented) > 80
    platform_env = _compose()["x-platform"]["environment"]
    assert documented - COMPOSE_OWN - set(platform_env) == set()
    assert "${POSTGRES_PASSWORD" not in platform_env["DATABASE_URL"]  # apart, as DATABASE_PASSWORD


def test_compose_with_the_example_env_file_trusts_its_tls_proxy():
    """.env.example's own value must not switch compose's TRUST_X_FORWARDED_PROTO off: behind the TLS proxy,
    production would then redirect every request to itself."""
    example = dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", (ROOT / ".env.example").read_text(), flags=re.M))
    template = _compose()["x-platform"]["environment"]["TRUST_X_FORWARDED_PROTO"]
    name, default = re.fullmatch(r"\$\{([A-Z_]+):-(.*)\}", template).groups()
    assert env_bool_of(example.get(name) or default) is True


def env_bool_of(raw: str) -> bool:
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def test_compose_checks_each_role_and_lets_it_finish_its_work():
    from django.conf import settings

    from gbplatform import serve

    services = _compose()["services"]
    assert "celery" in " ".join(services["worker"]["healthcheck"]["test"])  # not the image's web check
    assert services["beat"]["healthcheck"] == {"disable": True}

    def seconds(value: str) -> int:
        return int(value[:-1]) * {"s": 1, "m": 60}[value[-1]]

    assert seconds(services["worker"]["stop_grace_period"]) > settings.CELERY_TASK_TIME_LIMIT
    assert seconds(services["web"]["stop_grace_period"]) > serve.CHILD_STOP_TIMEOUT_S


def _compose_command() -> list[str] | None:
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


@pytest.mark.skipif(_compose_command() is None, reason="no docker compose client on this machine")
def test_docker_compose_config_validates():
    env = {**os.environ, **PROD_ENV, "PLATFORM_PUBLIC_DOMAIN": "bots.example.com", "POSTGRES_PASSWORD": "pw",
           "S3_ACCESS_KEY": "key", "S3_SECRET_KEY": "secret-secret", "ZITADEL_IMAGE": "example/zitadel:1",
           "ZITADEL_MASTERKEY": "x" * 32, "ZITADEL_EXTERNALDOMAIN": "id.example.com", "ZITADEL_DB_PASSWORD": "pw"}
    result = subprocess.run([*_compose_command(), "-f", "docker/compose.yaml", "config", "--quiet"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
