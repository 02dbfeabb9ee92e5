"""docker-compose.yaml and the GitHub workflow, validated without Docker or GitHub.

Neither can run here, so each file is checked against its published JSON schema (the copies that
check-jsonschema vendors: the Compose specification and SchemaStore's GitHub workflow schema), and
the URL the compose service implies is compared with the one ``.env.example`` documents.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pgvector_base.database import parse_url

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yaml"
WORKFLOW_FILE = ROOT / ".github" / "workflows" / "ci.yml"
ENV_EXAMPLE = ROOT / ".env.example"

# ${NAME:-default} and ${NAME-default}, as Compose interpolates them.
INTERPOLATION = re.compile(r"\$\{(?P<name>\w+)(?::?-(?P<default>[^}]*))?\}")


def validate(schema: str, path: Path) -> subprocess.CompletedProcess[str]:
    """Run check-jsonschema with one of its vendored schemas on ``path``."""
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, str(path)],
        capture_output=True,
        text=True,
        check=False,
    )


def env_example() -> dict[str, str]:
    """The variables ``.env.example`` sets (commented-out lines are documentation only)."""
    pairs = (
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    return {name.strip(): value.strip() for name, value in pairs}


def interpolate(value: str, variables: dict[str, str]) -> str:
    """Expand ``${NAME:-default}`` the way Compose does, from ``variables``."""
    return INTERPOLATION.sub(lambda m: variables.get(m["name"]) or (m["default"] or ""), value)


def compose() -> dict[str, Any]:
    """The parsed compose file."""
    return yaml.safe_load(COMPOSE_FILE.read_text())  # type: ignore[no-any-return]


def test_compose_file_follows_the_compose_specification() -> None:
    result = validate("vendor.compose-spec", COMPOSE_FILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_validation_rejects_an_invalid_file(tmp_path: Path) -> None:
    broken = compose()
    broken["services"]["db"]["healthcheck"]["retries"] = "ten"
    broken["services"]["db"]["no_such_key"] = True
    path = tmp_path / "docker-compose.yaml"
    path.write_text(yaml.safe_dump(broken))
    result = validate("vendor.compose-spec", path)
    assert result.returncode == 1
    assert "no_such_key" in result.stdout


def test_workflow_follows_the_github_workflow_schema() -> None:
    result = validate("vendor.github-workflows", WORKFLOW_FILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflow_is_read_only_and_tests_against_the_compose_image() -> None:
    workflow = yaml.safe_load(WORKFLOW_FILE.read_text())
    assert workflow["permissions"] == {"contents": "read"}
    job = workflow["jobs"]["test"]
    service_image = job["services"]["db"]["image"]
    default_image = interpolate(compose()["services"]["db"]["image"], {})
    assert service_image == default_image
    assert parse_url(job["env"]["TEST_DATABASE_URL"], "workflow") == parse_url(
        env_example()["DATABASE_URL"], ".env.example"
    )


def test_compose_service_is_local_only_with_a_healthcheck_and_the_seed_limits() -> None:
    db = compose()["services"]["db"]
    assert interpolate(db["image"], {}) == "pgvector/pgvector:pg17"
    assert interpolate(db["image"], {"PGVECTOR_IMAGE": "pgvector/pgvector:pg16"}).endswith("pg16")
    (port,) = db["ports"]
    assert interpolate(port, {}) == "127.0.0.1:5432:5432"
    assert db["healthcheck"]["test"][1].startswith("pg_isready ")
    assert db["volumes"] == ["pgdata:/var/lib/postgresql/data"]
    assert "pgdata" in compose()["volumes"]
    assert db["deploy"]["resources"]["limits"] == {"cpus": "0.50", "memory": "512M"}
    assert db["deploy"]["resources"]["reservations"] == {"cpus": "0.25", "memory": "256M"}


@pytest.mark.parametrize("with_env_file", [False, True], ids=["defaults", "env.example"])
def test_compose_implies_the_url_that_env_example_documents(with_env_file: bool) -> None:
    settings = env_example() if with_env_file else {}
    db = compose()["services"]["db"]
    environment = {name: interpolate(value, settings) for name, value in db["environment"].items()}
    host_port = interpolate(db["ports"][0], settings).split(":")[1]
    implied = parse_url(
        f"postgresql://{environment['POSTGRES_USER']}:{environment['POSTGRES_PASSWORD']}"
        f"@localhost:{host_port}/{environment['POSTGRES_DB']}",
        "compose",
    )
    assert implied == parse_url(env_example()["DATABASE_URL"], ".env.example")


def test_pooler_is_pgbouncer_in_transaction_mode_only_when_asked_for() -> None:
    services = compose()["services"]
    pooler, db = services["pooler"], services["db"]
    # Off unless `docker compose --profile pooler` asks for it; the database needs no profile.
    assert pooler["profiles"] == ["pooler"]
    assert "profiles" not in db
    assert interpolate(pooler["image"], {}).startswith("edoburu/pgbouncer:")
    environment = pooler["environment"]
    assert environment["POOL_MODE"] == "transaction"
    assert environment["DB_HOST"] in services
    assert pooler["depends_on"] == {environment["DB_HOST"]: {"condition": "service_healthy"}}
    # The pooler logs in with the database service's own credentials.
    assert environment["DB_USER"] == db["environment"]["POSTGRES_USER"]
    assert environment["DB_PASSWORD"] == db["environment"]["POSTGRES_PASSWORD"]
    assert interpolate(environment["DEFAULT_POOL_SIZE"], {}) == "20"
    (port,) = pooler["ports"]
    assert interpolate(port, {}) == "127.0.0.1:6432:5432"
    assert pooler["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]


@pytest.mark.parametrize("with_env_file", [False, True], ids=["defaults", "env.example"])
def test_compose_pooler_implies_the_pooled_url_that_env_example_documents(
    with_env_file: bool,
) -> None:
    settings = env_example() if with_env_file else {}
    services = compose()["services"]
    db = {
        name: interpolate(value, settings) for name, value in services["db"]["environment"].items()
    }
    host_port = interpolate(services["pooler"]["ports"][0], settings).split(":")[1]
    pooled = (
        f"postgresql://{db['POSTGRES_USER']}:{db['POSTGRES_PASSWORD']}"
        f"@localhost:{host_port}/{db['POSTGRES_DB']}"
    )
    documented = re.findall(r"^#\s+DATABASE_URL=(\S+)$", ENV_EXAMPLE.read_text(), re.MULTILINE)
    assert pooled in documented
