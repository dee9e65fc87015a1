"""Command-based targets driven by small shell scripts, and config validation that fails before anything runs."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from flows.targets import (
    CommandTargets,
    DeployTarget,
    IdempotencyConflictError,
    ReleaseNotFoundError,
    TargetConfigError,
    UnknownRevisionError,
    load_command_config,
)

SCRIPTS = {
    "deploy.sh": """
        echo "deploy $1 $3 to $2" >> calls.log
        echo "deploying $1 $3 to $2"
        if [ "$3" = "bad" ]; then echo "boom: cannot deploy" >&2; exit 3; fi
        echo "$3" > "state-$2-$1"
    """,
    "health.sh": """
        test -f "state-$2-$1" && test "$(cat "state-$2-$1")" != "sick"
    """,
    "rollback.sh": """
        echo "rollback $1 $3 to $2" >> calls.log
        echo "$3" > "state-$2-$1"
    """,
    "e2e.sh": """
        test "$(cat "state-$1-backend")" = "$(cat "state-$1-frontend")" || { echo "versions differ" >&2; exit 1; }
    """,
}


def service(env: str = "staging") -> dict[str, Any]:
    return {"deploy": "sh deploy.sh {service} {env} {sha}", "health": "sh health.sh {service} {env}",
            "rollback": "sh rollback.sh {service} {env} {sha}"}


def make_config(**env_extra: Any) -> dict[str, Any]:
    staging = {"services": {"backend": service(), "frontend": service()}, "e2e": {"same_release": "sh e2e.sh {env}"}}
    staging.update(env_extra)
    return {"defaults": {"timeout_seconds": 10}, "environments": {"staging": staging}}


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    for name, body in SCRIPTS.items():
        (tmp_path / name).write_text(textwrap.dedent(body).lstrip())
    return tmp_path


@pytest.fixture
def targets(workdir: Path) -> CommandTargets:
    (workdir / "deploy.yaml").write_text(yaml.safe_dump(make_config()))
    return CommandTargets(workdir / "deploy.yaml")


def calls(workdir: Path) -> list[str]:
    path = workdir / "calls.log"
    return path.read_text().splitlines() if path.exists() else []


def test_deploy_e2e_and_state(targets: CommandTargets, workdir: Path) -> None:
    assert isinstance(targets, DeployTarget)
    for svc in ("backend", "frontend"):
        result = targets.deploy(svc, "staging", "abc1234")
        assert result.ok and not result.noop and "deploying" in result.details, result
    report = targets.run_e2e("staging")
    assert report.passed and [c.name for c in report.checks] == ["backend_health", "frontend_health", "same_release"]
    state = targets.state("staging")
    assert {s: (v.sha, v.status) for s, v in state.services.items()} == \
        {"backend": ("abc1234", "running"), "frontend": ("abc1234", "running")}
    assert (workdir / ".deploy-state.json").is_file()  # relative to the config file
    again = targets.deploy("backend", "staging", "abc1234")
    assert again.noop and "nothing to do" in again.message and len(calls(workdir)) == 2


def test_failed_deploy_and_e2e(targets: CommandTargets) -> None:
    targets.deploy("frontend", "staging", "abc1234")
    result = targets.deploy("backend", "staging", "bad")
    assert not result.ok and "exited 3" in result.message and "boom: cannot deploy" in result.details
    assert targets.state("staging").services["backend"].status == "failed"
    report = targets.run_e2e("staging")
    assert not report.passed and [c.name for c in report.checks if not c.ok] == ["backend_health", "same_release"]
    with pytest.raises(UnknownRevisionError):
        targets.deploy("backend", "staging", "-rf")
    with pytest.raises(TargetConfigError, match="add environments.production"):
        targets.deploy("backend", "production", "abc1234")


def test_rollback_and_idempotent_replay(targets: CommandTargets, workdir: Path) -> None:
    targets.deploy("backend", "staging", "v1", idempotency_key="k1")
    targets.deploy("backend", "staging", "v2")
    replay = targets.deploy("backend", "staging", "v1", idempotency_key="k1")
    assert replay.replayed and replay.sha == "v1" and calls(workdir).count("deploy backend v1 to staging") == 1
    assert targets.state("staging").services["backend"].sha == "v2"
    with pytest.raises(IdempotencyConflictError):
        targets.rollback("backend", "staging", idempotency_key="k1")
    back = targets.rollback("backend", "staging", idempotency_key="rb")
    assert back.ok and back.sha == "v1" and calls(workdir)[-1] == "rollback backend v1 to staging"
    assert targets.rollback("backend", "staging", idempotency_key="rb").replayed
    assert calls(workdir).count("rollback backend v1 to staging") == 1
    with pytest.raises(ReleaseNotFoundError, match="never deployed"):
        targets.rollback("backend", "staging", "v9")


def test_dict_config_shell_timeout_truncation_and_default_rollback(workdir: Path) -> None:
    cfg = make_config(e2e={"loud": {"command": "python3 -c \"print('x' * 5000)\""}})
    cfg["defaults"] = {"cwd": str(workdir), "output_limit": 200, "timeout_seconds": 10}
    backend = cfg["environments"]["staging"]["services"]["backend"]
    del backend["rollback"]  # falls back to the deploy command
    backend["deploy"] = {"command": "echo {sha} | tr a-z A-Z > state-{env}-{service}; echo done", "shell": True}
    cfg["environments"]["staging"]["services"]["frontend"]["health"] = {"command": "sleep 5", "timeout_seconds": 0.3}
    targets = CommandTargets(load_command_config(cfg, base_dir=workdir))
    assert targets.deploy("backend", "staging", "abc").ok and (workdir / "state-staging-backend").read_text() == "ABC\n"
    targets.deploy("backend", "staging", "def")
    assert targets.rollback("backend", "staging").sha == "abc"
    slow = targets.deploy("frontend", "staging", "abc")
    assert not slow.ok and "timed out" in slow.message and slow.duration_ms < 3000
    report = targets.run_e2e("staging")
    loud = report.checks[-1]
    assert loud.ok and "characters truncated" in loud.detail and len(loud.detail) < 600


def test_json_file_config(workdir: Path) -> None:
    (workdir / "deploy.json").write_text(json.dumps(make_config()))
    assert CommandTargets(str(workdir / "deploy.json")).deploy("backend", "staging", "abc").ok


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda c: c["environments"]["staging"]["services"]["backend"].update(deploy="sh deploy.sh {shaa}"),
         ["environments.staging.services.backend.deploy", "unknown placeholder(s) {shaa}", "allowed: {env}"]),
        (lambda c: c["environments"]["staging"]["services"]["frontend"].update(rollback="sh rollback.sh"),
         ["environments.staging.services.frontend.rollback", "must contain {sha}"]),
        (lambda c: c["environments"]["staging"].update(e2e="sh e2e.sh {service}"),
         ["e2e.e2e: e2e command", "unknown placeholder(s) {service}"]),
        (lambda c: c["environments"]["staging"]["services"]["backend"].update(health="check {sha!r}"),
         ["services.backend.health", "not a plain {name}"]),
        (lambda c: c["environments"].update(prod=c["environments"]["staging"]),
         ["environments.prod", "'staging' or 'production'"]),
        (lambda c: c["environments"]["staging"]["services"].pop("frontend"),
         ["missing commands for service(s) frontend"]),
        (lambda c: c["environments"]["staging"]["services"].update(db=service()), ["services.db"]),
        (lambda c: c["defaults"].update(timeout=5), ["defaults.timeout", "Extra inputs are not permitted"]),
        (lambda c: c["defaults"].update(timeout_seconds=0), ["defaults.timeout_seconds", "greater than 0"]),
        (lambda c: c["environments"]["staging"]["services"]["backend"].update(deploy="sh 'deploy.sh {sha}"),
         ["environments.staging.services.backend.deploy: cannot split", "set shell: true"]),
        (lambda c: c["defaults"].update(pass_env=["HOME", "OPENAI_API_KEY"]),
         ["defaults.pass_env", "OPENAI_API_KEY holds the agent's model or Prefect credentials"]),
        (lambda c: c["environments"]["staging"]["services"]["backend"].update(
            deploy={"command": "sh deploy.sh {sha}", "pass_env": ["AGENT_MODEL"]}),
         ["services.backend.deploy.pass_env", "AGENT_MODEL holds the agent's"]),
        (lambda c: c["defaults"].update(pass_env=["PREFECT_API_AUTH_STRING"]), ["PREFECT_API_AUTH_STRING holds"]),
        (lambda c: c["defaults"].update(pass_env=["bad-name"]), ["'bad-name' is not an environment variable name"]),
        (lambda c: c["defaults"].update(env={"DB_PASSWORD": "hunter2"}),
         ["defaults.env", "DB_PASSWORD looks like a secret", "list it in pass_env instead"]),
        (lambda c: c["defaults"].update(env={"DATABASE": "postgres://app:pw@db/app"}),
         ["DATABASE looks like a secret"]),
    ],
)
def test_invalid_config_says_what_to_fix(mutate: Any, expected: list[str]) -> None:
    cfg = make_config()
    mutate(cfg)
    with pytest.raises(ValidationError) as info:
        load_command_config(cfg)
    for text in expected:
        assert text in str(info.value)


def test_invalid_files_and_directories(workdir: Path) -> None:
    with pytest.raises(TargetConfigError, match="does not exist"):
        load_command_config(workdir / "missing.yaml")
    (workdir / "broken.yaml").write_text("environments: [staging\n")
    with pytest.raises(TargetConfigError, match="not valid YAML"):
        load_command_config(workdir / "broken.yaml")
    (workdir / "deploy.txt").write_text("{}")
    with pytest.raises(TargetConfigError, match="use a .json, .yaml or .yml file"):
        load_command_config(workdir / "deploy.txt")
    cfg = make_config()
    cfg["environments"]["staging"]["services"]["backend"]["health"] = {"command": "true", "cwd": "nowhere"}
    with pytest.raises(TargetConfigError, match="environments.staging.services.backend.health: working directory"):
        CommandTargets(load_command_config(cfg, base_dir=workdir))
    assert not (workdir / ".deploy-state.json").exists()


def dumped(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def test_commands_get_an_explicit_environment_never_the_workers(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """BASE_ENV, then pass_env (defaults + the command's), then env (the command's win): nothing else of the worker."""
    from flows.targets.environment import BASE_ENV

    worker = {"OPENAI_API_KEY": "canary-provider-1f2e", "PREFECT_API_AUTH_STRING": "admin:canary-auth-77",
              "UNLISTED": "not-passed", "DEPLOY_TOKEN": "tok-1234567", "REGISTRY_PASSWORD": "reg-7654321"}
    for name, value in worker.items():
        monkeypatch.setenv(name, value)
    (workdir / "dump.sh").write_text('env > "env-$1.txt"\n')
    cfg = make_config(e2e={"smoke": "sh dump.sh e2e-{env}"})
    cfg["defaults"].update(pass_env=["DEPLOY_TOKEN", "NOT_SET_ANYWHERE"], env={"REGION": "eu-1", "TIER": "web"})
    backend = cfg["environments"]["staging"]["services"]["backend"]
    backend["deploy"] = {"command": "sh dump.sh deploy-{service} {sha}", "pass_env": ["REGISTRY_PASSWORD"],
                         "env": {"REGION": "eu-2"}}
    backend["health"] = "sh dump.sh health-{service}"
    targets = CommandTargets(load_command_config(cfg, base_dir=workdir))
    assert targets.deploy("backend", "staging", "abc1234").ok
    assert targets.run_e2e("staging").checks[-1].ok

    deploy, health, e2e = (dumped(workdir / f"env-{n}.txt") for n in ("deploy-backend", "health-backend",
                                                                       "e2e-staging"))
    assert (deploy["DEPLOY_TOKEN"], deploy["REGISTRY_PASSWORD"], deploy["REGION"], deploy["TIER"]) == \
        ("tok-1234567", "reg-7654321", "eu-2", "web")
    assert (deploy["DEPLOY_SERVICE"], deploy["DEPLOY_ENV"], deploy["DEPLOY_SHA"]) == ("backend", "staging", "abc1234")
    assert deploy["PATH"] and "REGISTRY_PASSWORD" not in health and health["REGION"] == "eu-1"
    allowed = set(BASE_ENV) | {"DEPLOY_TOKEN", "REGISTRY_PASSWORD", "REGION", "TIER", "DEPLOY_SERVICE", "DEPLOY_ENV",
                               "DEPLOY_SHA", "DEPLOY_ATTEMPT", "DEPLOY_IDEMPOTENCY_KEY",
                               "PWD", "OLDPWD", "SHLVL", "_"}  # the last four: set by sh itself
    for dump in (deploy, health, e2e):
        assert set(dump) <= allowed, set(dump) - allowed
        assert "OPENAI_API_KEY" not in dump and "PREFECT_API_AUTH_STRING" not in dump and "UNLISTED" not in dump


def test_a_failed_command_says_why_and_its_history_keeps_no_secret(workdir: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    canary = "canary-history-8a7b6c5d"
    monkeypatch.setenv("DEPLOY_TOKEN", canary)
    (workdir / "push.sh").write_text('echo "pushing $1"\necho "registry refused token $DEPLOY_TOKEN" >&2\nexit 4\n')
    cfg = make_config()
    cfg["defaults"]["pass_env"] = ["DEPLOY_TOKEN"]
    cfg["environments"]["staging"]["services"]["backend"]["deploy"] = "sh push.sh {sha}"
    targets = CommandTargets(load_command_config(cfg, base_dir=workdir))
    result = targets.deploy("backend", "staging", "abc1234", idempotency_key="k1")
    assert not result.ok and result.message.endswith(f"backend_deploy exited 4: registry refused token {canary}")
    stored = (workdir / ".deploy-state.json").read_text()
    assert canary not in stored and "registry refused token [redacted:DEPLOY_TOKEN]" in stored
    replay = targets.deploy("backend", "staging", "abc1234", idempotency_key="k1")
    assert replay.replayed and canary not in replay.model_dump_json()
