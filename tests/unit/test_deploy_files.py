"""The deployment files are valid and say what the code does.

No Docker engine and no network here: docker-compose.yml is interpolated with
.env.example and checked against the compose-spec JSON schema that
check-jsonschema ships (and by `docker-compose config` / `docker compose
config` when one is installed); the systemd units by `systemd-analyze verify`
when it exists; holdscan.toml.example by holdscan's own config loader and
scanner registry.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared import config as config_mod
from tests.support.tools import require_program

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
DOCKERFILE = REPO / "Dockerfile"
DEPLOY = REPO / "deploy"

_VAR = re.compile(r"\$(\$|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\})")


def env_example() -> dict[str, str]:
    out = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f".env.example: not NAME=value: {line!r}"
            out[name.strip()] = value.strip()
    return out


def compose_variables() -> set[str]:
    return {m.group(2) for m in _VAR.finditer(COMPOSE.read_text()) if m.group(2)}


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's interpolation: ${V}, ${V:-default}, ${V-default}, ${V:?error}, $$."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match[str]) -> str:
        if m.group(1) == "$":
            return "$"
        name, op, arg = m.group(2), m.group(3), m.group(4)
        got = env.get(name)
        if op in (":-", "-"):
            return got if got or (op == "-" and got is not None) else arg
        if op in (":?", "?") and not got:
            raise AssertionError(f"compose needs {name}: {arg}")
        return got or ""

    return _VAR.sub(one, value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    raw = yaml.safe_load(COMPOSE.read_text())
    return interpolate(raw, env_example())


def test_compose_matches_the_compose_spec_schema(compose: dict[str, Any]) -> None:
    import jsonschema

    schema_file = (importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
                   / "compose-spec.json")
    schema = json.loads(schema_file.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in validator.iter_errors(compose)]
    assert not errors, errors


def test_compose_schema_check_catches_a_typo(compose: dict[str, Any]) -> None:
    # The schema check above would pass anything if it did not look at services.
    import jsonschema

    schema = json.loads((importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
                         / "compose-spec.json").read_text())
    broken = json.loads(json.dumps(compose))
    broken["services"]["worker"]["replicaz"] = 8
    validator = jsonschema.validators.validator_for(schema)(schema)
    assert any("replicaz" in e.message for e in validator.iter_errors(broken))


def test_compose_implementation_accepts_it(tmp_path: Path) -> None:
    # Debian's docker-compose 1.29 (bootstrap installs it). Compose v2 has no Debian 12
    # package; the file is held to the Compose specification above, which v2 implements.
    argv = [require_program("docker-compose")]
    env = tmp_path / "env"
    shutil.copy(ENV_EXAMPLE, env)
    for profile in ([], ["--profile", "mailhost"], ["--profile", "ha"]):
        p = subprocess.run([*argv, "--env-file", str(env), "-f", str(COMPOSE), *profile,
                            "config", "--services"],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        services = set(p.stdout.split())
        # docker-compose v1 lists profiled services without --profile too.
        expected = {"redis", "clamd", "worker", "flower"}
        if "mailhost" in profile:
            expected |= {"postfix", "dispatcher", "web"}
        if "ha" in profile:
            expected |= {"redis-replica", "sentinel-1", "sentinel-2", "sentinel-3"}
        assert expected <= services, p.stdout


def test_every_service_has_a_healthcheck(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        check = svc.get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"
        assert svc.get("restart") in ("always", "unless-stopped"), name


def test_worker_can_be_scaled(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker
    assert "hostname" not in worker     # every replica needs its own Celery node name
    assert worker["build"]["target"] == "worker"
    env = worker["environment"]
    password = env_example()["REDIS_PASSWORD"]
    assert env["HOLDSCAN_BROKER"] == f"redis://:{password}@redis:6379/0"
    assert env["HOLDSCAN_CLAMD"] == "tcp:clamd:3310"
    assert "celery@$HOSTNAME" in " ".join(worker["healthcheck"]["test"])
    assert "inspect ping" in " ".join(worker["healthcheck"]["test"])


def test_redis_is_a_safe_broker(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    command = " ".join(redis["command"])
    assert "--maxmemory-policy noeviction" in command
    assert "--appendonly yes" in command
    assert '--requirepass "$REDIS_PASSWORD"' in command
    assert redis["environment"]["REDIS_PASSWORD"] == env_example()["REDIS_PASSWORD"]
    assert any(v.endswith(":/data") for v in redis["volumes"])


def test_clamd_is_the_official_image(compose: dict[str, Any]) -> None:
    clamd = compose["services"]["clamd"]
    assert clamd["image"].startswith("clamav/clamav:")
    assert clamd["healthcheck"]["test"] == ["CMD", "clamdcheck.sh"]


def test_flower_has_auth_broker_and_metrics(compose: dict[str, Any]) -> None:
    flower = compose["services"]["flower"]
    e = env_example()
    assert flower["environment"]["FLOWER_BASIC_AUTH"] == \
        f"{e['FLOWER_USER']}:{e['FLOWER_PASSWORD']}"
    assert '--broker "$HOLDSCAN_BROKER" flower' in " ".join(flower["command"])
    assert "/healthcheck" in " ".join(flower["healthcheck"]["test"])
    # Flower serves Prometheus metrics at /metrics without authentication (flower.urls).
    from flower.urls import handlers
    paths = [h[0] if isinstance(h, tuple) else h.regex.pattern for h in handlers]
    assert any(p.rstrip("$") == "/metrics" for p in paths), paths


def test_mailhost_profile_shares_one_spool(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("postfix", "dispatcher"):
        assert services[name]["profiles"] == ["mailhost"]
    spool = "postfix-spool:/var/spool/postfix"
    assert spool in services["postfix"]["volumes"]
    assert spool in services["dispatcher"]["volumes"]
    assert "postfix-etc:/etc/postfix:ro" in services["dispatcher"]["volumes"]
    # One image for both, so that mail_owner has the same uid on each side of the volume.
    assert services["postfix"]["image"] == services["dispatcher"]["image"]
    assert services["dispatcher"]["command"][:2] == ["holdscan", "dispatch"]
    for name in ("redis", "clamd", "worker", "flower"):
        assert "profiles" not in services[name]


def test_ha_profile_watches_redis_with_three_sentinels(compose: dict[str, Any]) -> None:
    services = compose["services"]
    password = env_example()["REDIS_PASSWORD"]
    replica = " ".join(services["redis-replica"]["command"])
    assert "--replicaof redis 6379" in replica and '--masterauth "$REDIS_PASSWORD"' in replica
    assert "--maxmemory-policy noeviction" in replica and "--appendonly yes" in replica
    # The master needs masterauth too: Sentinel makes it a replica when it comes back.
    assert '--masterauth "$REDIS_PASSWORD"' in " ".join(services["redis"]["command"])
    sentinels = [f"sentinel-{n}" for n in (1, 2, 3)]
    for name in ["redis-replica", *sentinels]:
        assert services[name]["profiles"] == ["ha"], name
    for name in sentinels:
        command = " ".join(services[name]["command"])
        assert '"sentinel monitor holdscan redis 6379 2"' in command
        assert command.index("resolve-hostnames yes") < command.index("sentinel monitor")
        assert "exec redis-sentinel" in command
        assert services[name]["environment"]["REDIS_PASSWORD"] == password
    # The clients name the same group and password as the Sentinels' configuration.
    env = services["worker"]["environment"]
    assert env["HOLDSCAN_SENTINEL_MASTER"] == "holdscan"
    assert env["HOLDSCAN_SENTINEL_PASSWORD"] == password
    # Flower loads the app, and with it the Sentinel transport options.
    assert "-A workers.app" in " ".join(services["flower"]["command"])


def test_ha_settings_of_env_example_make_a_sentinel_broker() -> None:
    """.env.example's comment says what to set for the profile "ha": that must give a
    broker URL holdscan accepts, through the three Sentinels."""
    from shared.celeryapp import transport_options
    from shared.redisurl import SentinelURL

    text = ENV_EXAMPLE.read_text()
    scheme, address = re.findall(r'with the profile "ha", "([^"]+)" and\n# "([^"]+)"', text)[0]
    env = {**env_example(), "BROKER_SCHEME": scheme, "BROKER_ADDRESS": address}
    raw = yaml.safe_load(COMPOSE.read_text())
    worker_env = interpolate(raw, env)["services"]["worker"]["environment"]
    cfg = config_mod.load(env=worker_env)
    assert [h for h, _ in SentinelURL.parse(cfg.broker.url).sentinels] == \
        ["sentinel-1", "sentinel-2", "sentinel-3"]
    assert SentinelURL.parse(cfg.broker.url).password == env["REDIS_PASSWORD"]
    assert transport_options(cfg)["master_name"] == "holdscan"


def test_mailhost_web_shares_the_spool_and_the_dispatcher_takes_its_requests(
        compose: dict[str, Any]) -> None:
    services = compose["services"]
    web = services["web"]
    assert web["profiles"] == ["mailhost"] and web["command"][:2] == ["holdscan", "web"]
    # The same image: the web's group has the same gid on both sides of the volume.
    assert web["image"] == services["dispatcher"]["image"]
    assert "postfix-spool:/var/spool/postfix" in web["volumes"]
    assert services["dispatcher"]["environment"]["HOLDSCAN_WEB_ENABLED"] == "true"
    assert web["ports"][0].startswith("127.0.0.1:")          # plain HTTP: loopback


def test_every_compose_variable_is_documented_in_env_example() -> None:
    used, documented = compose_variables(), set(env_example())
    assert used - documented == set(), "used in docker-compose.yml, missing in .env.example"
    assert documented - used == set(), "in .env.example, used nowhere"


def test_env_example_explains_every_variable() -> None:
    lines = ENV_EXAMPLE.read_text().splitlines()
    for i, line in enumerate(lines):
        if line and not line.startswith("#"):
            # Each variable has a comment above it, or shares a commented group.
            assert any(x.startswith("#") for x in lines[max(0, i - 6):i]), line


# -- Dockerfile ---------------------------------------------------------------------------

def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_base_and_targets() -> None:
    # The base is a build argument (the compose tests build from a Debian base of their
    # own); without it, a build is what it always was: the official python image.
    args = dict(rest.partition("=")[::2] for word, rest in dockerfile_instructions()
                if word == "ARG")
    assert args["BASE_IMAGE"].startswith("python:3.11-slim")
    froms = [rest for word, rest in dockerfile_instructions() if word == "FROM"]
    assert froms[0] == "${BASE_IMAGE} AS base"
    targets = [f.split(" AS ")[-1] for f in froms if " AS " in f]
    assert targets == ["base", "mailhost", "worker"]
    # The last stage is what a plain `docker build .` gives: the worker.
    assert dockerfile_instructions()[-1] == ("CMD", '["holdscan", "worker"]')


def test_dockerfile_pip_installs_this_package_with_extras_that_exist() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    extras = set(pyproject["project"]["optional-dependencies"])
    runs = [rest for word, rest in dockerfile_instructions() if word == "RUN"]
    installs = [cmd for run in runs for cmd in run.split("&&") if "pip install" in cmd]
    assert installs, "the Dockerfile installs holdscan with pip"
    for cmd in installs:
        args = [a for a in shlex.split(cmd)[2:] if not a.startswith("-")]
        assert args, cmd
        for arg in args:
            m = re.fullmatch(r"\.(?:\[([a-z0-9_,-]+)\])?", arg)
            assert m, f"pip installs {arg!r}, not this package"
            for extra in (m.group(1) or "").split(","):
                assert not extra or extra in extras, f"no extra {extra!r} in pyproject"
    # Flower runs from the worker image: the extra that brings it must be installed.
    assert any("[flower]" in cmd for cmd in installs)


def test_dockerfile_copies_only_what_exists_and_dockerignore_lets_it_in() -> None:
    allowed = [line[1:].rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.startswith("!")]
    for word, rest in dockerfile_instructions():
        if word != "COPY":
            continue
        *sources, _dest = rest.split()
        for src in sources:
            assert (REPO / src).exists(), f"COPY {src}: no such file"
            assert any(src.rstrip("/") == a or src.startswith(a + "/") for a in allowed), \
                f".dockerignore keeps {src} out of the build context"


def test_dockerfile_apt_packages_exist() -> None:
    runs = [rest for word, rest in dockerfile_instructions() if word == "RUN"]
    packages = []
    for run in runs:
        for cmd in run.split("&&"):
            words = shlex.split(cmd)
            if "apt-get" in words and "install" in words:
                packages += [w for w in words[words.index("install") + 1:]
                             if not w.startswith("-")]
    assert "postfix" in packages
    require_program("apt-cache", "apt")
    probe = subprocess.run(["apt-cache", "policy", "postfix"], capture_output=True, text=True)
    if "Candidate: (none)" in probe.stdout or "Candidate:" not in probe.stdout:
        pytest.fail("apt has no package lists: run the README's test command as root "
                    "(scripts/bootstrap.sh runs apt-get update when they are missing)",
                    pytrace=False)
    for name in packages:
        p = subprocess.run(["apt-cache", "policy", name], capture_output=True, text=True)
        assert "Candidate:" in p.stdout and "Candidate: (none)" not in p.stdout, name


# -- systemd units ----------------------------------------------------------------------

def unit_sections(path: Path) -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path.name}: {line!r} outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not key=value: {line!r}"
        current.setdefault(key, []).append(value)
    return sections


UNITS = {
    "holdscan-dispatch.service": "holdscan dispatch --config /etc/holdscan/holdscan.toml",
    "holdscan-worker.service": "holdscan worker --config /etc/holdscan/holdscan.toml",
    "holdscan-web.service": "holdscan web --config /etc/holdscan/holdscan.toml",
}


@pytest.mark.parametrize("unit", sorted(UNITS))
def test_systemd_unit_structure(unit: str) -> None:
    s = unit_sections(DEPLOY / unit)
    assert set(s) == {"Unit", "Service", "Install"}
    service = s["Service"]
    assert service["ExecStart"][0].endswith(UNITS[unit])
    assert service["Restart"] == ["always"]
    assert s["Install"]["WantedBy"] == ["multi-user.target"]
    assert service["ProtectSystem"] == ["strict"]
    if unit == "holdscan-dispatch.service":
        # Root only to read Postfix and set up; the dispatcher drops to mail_owner itself.
        assert service["User"] == ["root"]
        assert service["ReadWritePaths"] == ["/var/spool/postfix"]
        caps = service["CapabilityBoundingSet"][0].split()
        assert {"CAP_SETUID", "CAP_SETGID", "CAP_CHOWN"} <= set(caps)
    if unit == "holdscan-web.service":
        # Never root, no capabilities; writes only its requests (and its StateDirectory).
        assert service["User"] == ["holdscan-web"]
        assert service["CapabilityBoundingSet"] == [""]
        assert service["ReadWritePaths"] == ["/var/spool/postfix/holdscan/webrequests"]


def test_systemd_analyze_verify_accepts_the_units(tmp_path: Path) -> None:
    require_program("systemd-analyze", "systemd")
    holdscan = shutil.which("holdscan") or str(REPO / ".venv" / "bin" / "holdscan")
    assert Path(holdscan).exists(), "no holdscan executable: run the README's test command"
    paths = []
    for unit in sorted(UNITS):
        # verify insists that ExecStart exists; the units name the documented install path.
        text = (DEPLOY / unit).read_text().replace("/opt/holdscan/venv/bin/holdscan", holdscan)
        (tmp_path / unit).write_text(text)
        paths.append(str(tmp_path / unit))
    p = subprocess.run(["systemd-analyze", "verify", *paths], capture_output=True, text=True,
                       timeout=60)
    complaints = [line for line in (p.stdout + p.stderr).splitlines()
                  if any(unit in line for unit in UNITS)]
    assert p.returncode == 0 and not complaints, p.stdout + p.stderr


# -- holdscan.toml.example ----------------------------------------------------------------

EXAMPLE = DEPLOY / "holdscan.toml.example"


def test_config_example_loads_and_is_all_defaults() -> None:
    from dispatcher.policy import Policy

    cfg = config_mod.load(EXAMPLE, env={})
    default = config_mod.Config()
    for section in ("postfix", "dispatcher", "broker", "worker", "headers", "notify"):
        assert getattr(cfg, section) == getattr(default, section), section
    # The [policy] table spells out the defaults; it must mean exactly no table.
    got, want = Policy.from_config(cfg), Policy.from_config(default)
    assert got.default == want.default and got.rules == want.rules == []


def test_config_example_policy_rules_parse_when_uncommented() -> None:
    from dispatcher.policy import Policy

    text = EXAMPLE.read_text()
    block = text[text.index("\n# [[policy.rules]]"):text.index("# -- Notices")]
    uncommented = "\n".join(line[2:] for line in block.splitlines() if line.startswith("# "))
    policy = Policy.from_table(tomllib.loads(uncommented).get("policy", {}))
    assert len(policy.rules) == 2 and not policy.dead_settings()
    assert policy.decide("x@o.test", "a@mx.example.org", "infected").action == "strip"


def test_configuration_doc_policy_examples_parse() -> None:
    from dispatcher.policy import Policy

    doc = (REPO / "docs" / "configuration.md").read_text()
    section = doc[doc.index("## `[policy]`"):doc.index("## `[notify]`")]
    [example] = [b for b in re.findall(r"```toml\n(.*?)```", section, re.DOTALL)]
    policy = Policy.from_table(tomllib.loads(example)["policy"])
    assert len(policy.rules) == 3 and not policy.dead_settings()


def test_config_example_names_every_setting() -> None:
    table = tomllib.loads(EXAMPLE.read_text())
    for f in dataclasses.fields(config_mod.Config):
        if f.name in ("source", "policy"):
            continue
        assert f.name in table, f"[{f.name}] missing"
        section = getattr(config_mod.Config(), f.name)
        if dataclasses.is_dataclass(section):
            for field in dataclasses.fields(section):
                assert field.name in table[f.name], f"{f.name}.{field.name} missing"


def test_config_example_scanners_are_valid_and_default() -> None:
    from workers.scanners import ENABLED_BY_DEFAULT, SCANNERS, build_scanners

    cfg = config_mod.load(EXAMPLE, env={})
    scanners = build_scanners(cfg)     # raises ConfigError on any unknown or mistyped key
    assert {s.name for s in scanners} == set(ENABLED_BY_DEFAULT)
    for name, table in cfg.scanners.items():
        assert table.get("enabled") is True, f"[scanners.{name}] says enabled = true"
        for key, value in table.items():
            if key != "enabled":
                assert value == SCANNERS[name].defaults[key], f"scanners.{name}.{key}"
    assert cfg.scanners["clamav"]["addresses"] == ["unix:/var/run/clamav/clamd.ctl"]
    for s in scanners:
        close = getattr(s, "close", None)
        if close:
            close()


def test_check_reads_the_same_clamd_default_as_the_scanner() -> None:
    from holdscan.check import DEFAULT_CLAMD_ADDRESSES
    from workers.scanners.clamav import ClamavScanner

    assert ClamavScanner.defaults["addresses"] == DEFAULT_CLAMD_ADDRESSES


# -- the Postfix snippets and the container's start script agree ----------------------------

def test_postfix_start_script_applies_the_snippets() -> None:
    script = (DEPLOY / "docker" / "postfix-start.sh").read_text()
    snippet = (DEPLOY / "postfix" / "master.cf.snippet").read_text()
    # The postconf commands the snippet documents, with chroot off as in a container.
    documented = re.findall(r"postconf -[MP] '[^']+'", snippet)
    assert len(documented) == 3
    for cmd in documented:
        assert cmd.replace(" n - y - 0 cleanup", " n - n - 0 cleanup") in script, cmd
    assert "exec postfix start-fg" in script


# -- the docs say what the files say ------------------------------------------------------

def test_configuration_doc_covers_every_setting() -> None:
    from workers.scanners import SCANNERS

    doc = (REPO / "docs" / "configuration.md").read_text()
    default = config_mod.Config()
    for section in ("postfix", "dispatcher", "broker", "worker", "headers", "notify", "web"):
        assert f"## `[{section}]`" in doc
        for f in dataclasses.fields(getattr(default, section)):
            assert f"| `{f.name}` |" in doc, f"{section}.{f.name}"
    for name, cls in SCANNERS.items():
        assert f"### `[scanners.{name}]`" in doc
        for key in cls.defaults:
            assert f"`{key}`" in doc, f"scanners.{name}.{key}"


def test_install_doc_uses_the_snippets_commands() -> None:
    doc = (REPO / "docs" / "install.md").read_text()
    snippet = (DEPLOY / "postfix" / "master.cf.snippet").read_text()
    for cmd in re.findall(r"postconf -[MP] '[^']+'", snippet):
        assert cmd in doc, cmd
    for line in (DEPLOY / "postfix" / "holdscan_hold_checks").read_text().splitlines():
        if line and not line.startswith("#"):
            assert line in doc


# -- docker-compose.test.yml (the compose tests' override) ---------------------------------

def test_compose_test_file_builds_every_image_from_the_test_base(tmp_path: Path) -> None:
    # Where no registry answers, nothing may be pulled: every service is built, and every
    # build starts from the base image the tests make (tests/cluster/test_compose.py runs
    # it for real).
    env = tmp_path / "env"
    shutil.copy(ENV_EXAMPLE, env)
    p = subprocess.run(
        [require_program("docker-compose"), "--env-file", str(env), "-f", str(COMPOSE),
         "-f", str(REPO / "docker-compose.test.yml"), "--profile", "mailhost", "config"],
        capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOLDSCAN_TEST_BASE": "holdscan-test-base:x",
             "HOLDSCAN_TEST_SINK_DIR": str(tmp_path)}, cwd=REPO)
    assert p.returncode == 0, p.stderr
    services = yaml.safe_load(p.stdout)["services"]
    built = {svc["image"] for svc in services.values() if "build" in svc}
    for name, svc in services.items():
        assert svc["image"] in built, f"{name}: {svc['image']} would be pulled"
        if "build" in svc:
            assert svc["build"]["args"]["BASE_IMAGE"] == "holdscan-test-base:x", name
            assert svc["build"]["network"] == "host", name
        assert svc["dns"] == ["127.0.0.1"], name
        for port in svc.get("ports", []):
            # docker-compose 1.29 prints "HOST_IP:HOST_PORT:CONTAINER_PORT/tcp".
            assert str(port).startswith("127.0.0.1:"), (name, port)
