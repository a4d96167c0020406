"""The deployment files are valid and keep their promises, checked offline (this machine, like CI,
has no container engine and no cluster): deploy/compose.yaml against the Compose Specification's
schema, deploy/kubernetes/ against the Kubernetes object schemas (both vendored in deploy/schema/),
deploy/Dockerfile by parsing it; each configuration they hand Meldbot is loaded by the real
settings loader, and the image's health check command is run against a real HTTP server."""

from __future__ import annotations

import http.server
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import jsonschema
import pytest
import referencing
import referencing.jsonschema
import yaml

from bot.config import ConfigError, load_settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
SCHEMAS = DEPLOY / "schema"
KUBERNETES = DEPLOY / "kubernetes"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
EXAMPLE = DEPLOY / "meldbot.example.toml"
#: Where the image keeps state (a volume) and temporary files (a tmpfs): the only writable places.
STATE_DIR = PurePosixPath("/var/lib/meldbot")
TMP_DIR = PurePosixPath("/tmp")
CONFIG_FILE = "/etc/meldbot/meldbot.toml"
UID = 10001


@pytest.fixture
def clean_environment(monkeypatch):
    """No MELDBOT_* variable of the developer's shell changes what a file loads to."""
    for name in [name for name in os.environ if name.startswith("MELDBOT_")]:
        monkeypatch.delenv(name)
    return monkeypatch


def _writable(path: Path | PurePosixPath) -> bool:
    path = PurePosixPath(path)
    return path.is_relative_to(STATE_DIR) or path.is_relative_to(TMP_DIR)


# -- the Dockerfile -----------------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    arguments: str
    line: int

    @property
    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form CMD/ENTRYPOINT/RUN, else None."""
        try:
            value = json.loads(self.arguments)
        except ValueError:
            return None
        return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction]

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """The global ARGs and the stages of a Dockerfile: continuation lines joined (the default `\\`
    escape), comment lines dropped (also between continued lines, as Docker does)."""
    assert "# escape=" not in text.split("\n", 1)[0], "only the default escape character is handled"
    logical: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append((start, pending + stripped))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    arguments: dict[str, str] = {}
    stages: list[Stage] = []
    for number, line in logical:
        keyword, _, rest = line.partition(" ")
        instruction = Instruction(keyword.upper(), rest.strip(), number)
        if instruction.keyword == "FROM":
            parts = instruction.arguments.split()
            parts = [p for p in parts if not p.startswith("--platform")]
            base = re.sub(r"\$\{(\w+)\}", lambda m: arguments.get(m.group(1), m.group(0)), parts[0])
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base, name, []))
        elif not stages:
            assert instruction.keyword == "ARG", f"line {number}: {keyword} before the first FROM"
            key, _, value = instruction.arguments.partition("=")
            arguments[key] = value
        else:
            stages[-1].instructions.append(instruction)
    return arguments, stages


ARGS, STAGES = parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))
FINAL = STAGES[-1]


def _final_environment() -> dict[str, str]:
    environment: dict[str, str] = {}
    for instruction in FINAL.all("ENV"):
        for item in shlex.split(instruction.arguments):
            key, sep, value = item.partition("=")
            assert sep, f"line {instruction.line}: use ENV KEY=value"
            environment[key] = value
    return environment


def test_dockerfile_parser_joins_continued_lines_and_drops_comments():
    arguments, stages = parse_dockerfile(
        "ARG BASE=debian:12\nFROM ${BASE} AS one\nRUN a \\\n# a comment inside\n  && b\n"
        "FROM one\nUSER 1\n")
    assert arguments == {"BASE": "debian:12"}
    assert [(s.base, s.name) for s in stages] == [("debian:12", "one"), ("one", None)]
    assert stages[0].instructions == [Instruction("RUN", "a  && b", 3)]
    assert stages[1].all("USER")[0].arguments == "1"


def test_image_is_multi_stage_and_the_runtime_copies_the_venv_from_the_build():
    assert len(STAGES) >= 2
    build = STAGES[0]
    assert build.name == "build"
    assert FINAL.base == build.base, "the copied venv's python link needs the same base image"
    copies = [i.arguments for i in FINAL.all("COPY") if i.arguments.startswith("--from=")]
    assert copies == ["--from=build /opt/meldbot/venv /opt/meldbot/venv"]
    # Nothing is built in the runtime stage: no pip there.
    assert not [i for i in FINAL.all("RUN") if "pip " in i.arguments]


def test_image_installs_from_the_lock_with_hashes_then_meldbot_without_dependencies():
    build = STAGES[0]
    copied = {i.arguments.split()[-1]: i.arguments.split()[0] for i in build.all("COPY")}
    assert copied["/src/requirements.lock"] == "requirements.lock"
    runs = [i.arguments for i in build.all("RUN")]
    locked = [r for r in runs if "pip install" in r and "--require-hashes" in r]
    assert len(locked) == 1 and re.search(r"-r /src/requirements\.lock\b", locked[0])
    own = [r for r in runs if "pip install" in r and "--require-hashes" not in r]
    assert len(own) == 1 and "--no-deps" in own[0] and "--no-build-isolation" in own[0], own
    # The lock's install comes first: Meldbot's own install can resolve nothing.
    assert runs.index(locked[0]) < runs.index(own[0])


def test_every_copied_source_exists_in_the_build_context():
    for stage in STAGES:
        for instruction in stage.all("COPY"):
            parts = [p for p in instruction.arguments.split() if not p.startswith("--")]
            if instruction.arguments.startswith("--from="):
                continue
            for source in parts[:-1]:
                assert (ROOT / source).exists(), f"line {instruction.line}: COPY {source}: not in the repository"


def test_image_installs_the_pdf_libraries_with_the_ci_script():
    copies = {i.arguments.split()[0]: i.arguments.split()[1] for i in FINAL.all("COPY")
              if not i.arguments.startswith("--")}
    assert ".ci/pdf" in copies
    script = copies[".ci/pdf"]
    assert [i for i in FINAL.all("RUN") if re.match(rf"bash {re.escape(script)}(\s|$)", i.arguments)]
    # The package list lives in .ci/pdf only.
    assert "libpango" not in DOCKERFILE.read_text(encoding="utf-8").replace(".ci/pdf", "")


def test_image_runs_as_a_numeric_non_root_user():
    users = FINAL.all("USER")
    assert users, "the final stage sets USER"
    user, _, group = users[-1].arguments.partition(":")
    assert user.isdigit() and int(user) == UID, "numeric, so that Kubernetes' runAsNonRoot can check it"
    assert group.isdigit() and int(group) != 0
    # Nothing after USER switches back.
    assert FINAL.instructions.index(users[-1]) > max(FINAL.instructions.index(i) for i in FINAL.all("RUN"))


def test_image_writes_only_to_its_volume_and_tmp():
    environment = _final_environment()
    assert environment["PYTHONDONTWRITEBYTECODE"] == "1"
    for key in ("HOME", "TMPDIR", "XDG_CACHE_HOME"):
        assert _writable(PurePosixPath(environment[key])), key
    volumes = [json.loads(i.arguments) for i in FINAL.all("VOLUME")]
    assert volumes == [[str(STATE_DIR)]]
    assert FINAL.all("WORKDIR")[-1].arguments == str(STATE_DIR)


def test_image_runs_meldbot_with_the_config_and_exposes_the_listen_port():
    entrypoint = FINAL.all("ENTRYPOINT")[-1].exec_form
    command = FINAL.all("CMD")[-1].exec_form
    assert entrypoint == ["meldbot"] and command == ["run", "--config", CONFIG_FILE]
    port = _final_environment()["MELDBOT_WEB__LISTEN"].rpartition(":")[2]
    assert [i.arguments for i in FINAL.all("EXPOSE")] == [port]


def _healthcheck_command() -> list[str]:
    healthchecks = FINAL.all("HEALTHCHECK")
    assert len(healthchecks) == 1
    options, _, command = healthchecks[0].arguments.partition("CMD ")
    assert re.search(r"--timeout=\d+s", options) and re.search(r"--start-period=\d+s", options)
    exec_form = json.loads(command)
    assert exec_form[0] == "python"
    return [sys.executable, *exec_form[1:]]


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200
    paths: list[str] = []

    def do_GET(self):  # noqa: N802 (the stdlib's name)
        type(self).paths.append(self.path)
        self.send_response(self.status)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("status, healthy", [(200, True), (503, False)])
def test_healthcheck_asks_livez_on_the_listen_port(status, healthy):
    handler = type("Handler", (_Health,), {"status": status, "paths": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        environment = {"PATH": os.environ.get("PATH", ""),
                       "MELDBOT_WEB__LISTEN": f"0.0.0.0:{server.server_address[1]}"}
        result = subprocess.run(_healthcheck_command(), env=environment, capture_output=True, timeout=30)
    finally:
        server.shutdown()
        server.server_close()
    assert handler.paths == ["/livez"]
    assert (result.returncode == 0) is healthy, result.stderr


# -- compose.yaml -------------------------------------------------------------------------------------

_VARIABLE = re.compile(r"\$\$|\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|\$(?P<bare>\w+)")


def interpolate(value, environment: dict[str, str]):
    """Compose's variable substitution on every string of a loaded file: `${X}`, `${X:-default}`,
    `${X-default}`, `${X:?error}`, `${X?error}`, `$X`, and `$$` for a literal `$`."""
    if isinstance(value, dict):
        return {key: interpolate(item, environment) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, environment) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("name") or match.group("bare")
        op, arg = match.group("op"), match.group("arg")
        current = environment.get(name)
        unset = current is None or (current == "" and op is not None and op.startswith(":"))
        if op in (":-", "-"):
            return arg if unset else current
        if op in (":?", "?") and unset:
            raise ValueError(f"{name}: {arg}")
        return current or ""

    return _VARIABLE.sub(substitute, value)


#: What an administrator puts in deploy/.env and deploy/meldbot.env (compose.yaml's steps).
COMPOSE_ENV = {"POSTGRES_PASSWORD": "0123456789abcdef", "SYNAPSE_SERVER_NAME": "matrix.gemeente.example"}
MELDBOT_ENV_FILE = {"MELDBOT_MATRIX__ACCESS_TOKEN": "syt_bot_token", "MELDBOT_MATRIX__DEVICE_ID": "MELDBOT01",
                    "MELDBOT_MATRIX__COORDINATOR_ROOM": "!coordinators:matrix.gemeente.example"}


def _compose(environment: dict[str, str] = COMPOSE_ENV) -> dict:
    return interpolate(yaml.safe_load(COMPOSE.read_text(encoding="utf-8")), environment)


def _compose_schema_validator():
    schema = json.loads((SCHEMAS / "compose-spec.json").read_text(encoding="utf-8"))
    return jsonschema.Draft7Validator(schema)


def test_interpolation_follows_compose():
    environment = {"SET": "value", "EMPTY": ""}
    assert interpolate("${SET} ${EMPTY:-default} ${EMPTY-kept} ${UNSET:-d} $SET $$HOME", environment) == \
        "value default  d value $HOME"
    with pytest.raises(ValueError, match="UNSET: say so"):
        interpolate("${UNSET:?say so}", environment)


def test_compose_file_validates_against_the_compose_specification():
    _compose_schema_validator().validate(_compose())


def test_compose_schema_refuses_a_misspelt_key():
    broken = _compose()
    broken["services"]["meldbot-1"]["read_onyl"] = True
    with pytest.raises(jsonschema.ValidationError, match="read_onyl"):
        _compose_schema_validator().validate(broken)


def test_compose_needs_the_database_password():
    environment = {k: v for k, v in COMPOSE_ENV.items() if k != "POSTGRES_PASSWORD"}
    with pytest.raises(ValueError, match="POSTGRES_PASSWORD"):
        _compose(environment)


def _meldbot_services(compose: dict) -> dict[str, dict]:
    return {name: service for name, service in compose["services"].items()
            if service.get("build", {}).get("dockerfile") == "deploy/Dockerfile"}


def test_compose_runs_two_hardened_instances_of_one_image_with_one_master_key():
    compose = _compose()
    services = _meldbot_services(compose)
    instances = {name: s for name, s in services.items() if "command" not in s}
    assert sorted(instances) == ["meldbot-1", "meldbot-2"]
    assert len({s["image"] for s in services.values()}) == 1
    for name, service in services.items():
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert service["user"] == f"{UID}:{UID}", name
        assert [t.split(":")[0] for t in service["tmpfs"]] == [str(TMP_DIR)], name
        assert [v.split(":")[1] for v in service["volumes"]] == [str(STATE_DIR)], name
        assert service["secrets"] == [{"source": "meldbot_master_key", "target": "meldbot_master_key"}], name
        assert service["configs"] == [{"source": "meldbot_toml", "target": CONFIG_FILE}], name
    assert compose["secrets"]["meldbot_master_key"]["file"] == "./secrets/master.key"
    assert (DEPLOY / compose["configs"]["meldbot_toml"]["file"]).is_file()
    # The instances start after the one-shot migration, on a healthy database.
    for name, service in instances.items():
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully", name
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy", name
    ports = [service["ports"][0] for service in instances.values()]
    assert all(p.startswith("127.0.0.1:") for p in ports) and len(set(ports)) == 2
    assert compose["services"]["migrate"]["command"] == ["db", "upgrade", "--config", CONFIG_FILE]
    assert compose["services"]["element"]["profiles"] == ["element"]
    # Both instances start; each keeps its own local store (the shared one is in the database).
    assert "profiles" not in compose["services"]["meldbot-1"] and "profiles" not in compose["services"]["meldbot-2"]
    volumes = {name: instances[name]["volumes"][0].split(":")[0] for name in instances}
    assert len(set(volumes.values())) == 2 and set(volumes.values()) <= set(compose["volumes"])
    assert "profiles" not in compose["services"]["synapse"]


def test_compose_hands_meldbot_a_configuration_it_accepts(clean_environment):
    compose = _compose()
    service = _meldbot_services(compose)["meldbot-1"]
    image_environment = _final_environment()
    for key, value in {**MELDBOT_ENV_FILE, **service["environment"]}.items():
        clean_environment.setenv(key, str(value))
    clean_environment.setenv("MELDBOT_WEB__LISTEN", image_environment["MELDBOT_WEB__LISTEN"])
    settings = load_settings(DEPLOY / compose["configs"]["meldbot_toml"]["file"])
    assert settings.database.url.startswith("postgresql+asyncpg://meldbot:0123456789abcdef@postgres:5432/")
    assert settings.database.auto_migrate is False
    assert settings.privacy.key_file == Path("/run/secrets/meldbot_master_key")  # where Compose mounts it
    assert settings.matrix is not None and settings.matrix.homeserver == "http://synapse:8008"
    assert settings.matrix.user_id == "@meldbot:matrix.gemeente.example"
    assert _writable(settings.matrix.store_dir)
    container_port = service["ports"][0].rpartition(":")[2]
    assert settings.web.listen == f"0.0.0.0:{container_port}"


# -- Kubernetes ---------------------------------------------------------------------------------------

_KIND_FILES = {("apps/v1", "Deployment"): "deployment-apps-v1.json", ("v1", "Service"): "service-v1.json",
               ("v1", "Secret"): "secret-v1.json", ("v1", "ConfigMap"): "configmap-v1.json",
               ("policy/v1", "PodDisruptionBudget"): "poddisruptionbudget-policy-v1.json",
               ("batch/v1", "Job"): "job-batch-v1.json"}
MANIFESTS = sorted([*KUBERNETES.glob("*.yaml"), *KUBERNETES.glob("*.yaml.template")])


def _registry() -> referencing.Registry:
    definitions = json.loads((SCHEMAS / "kubernetes" / "_definitions.json").read_text(encoding="utf-8"))
    return referencing.Resource.from_contents(definitions) @ referencing.Registry()


def validate_kubernetes(document: dict) -> None:
    """Validate one object against the strict schema of its kind (jsonschema.ValidationError)."""
    name = _KIND_FILES.get((document.get("apiVersion"), document.get("kind")))
    assert name, f"no vendored schema for {document.get('apiVersion')} {document.get('kind')}"
    schema = json.loads((SCHEMAS / "kubernetes" / name).read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator(schema, registry=_registry()).validate(document)


def _objects() -> dict[str, dict]:
    objects = {}
    for path in MANIFESTS:
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            objects[document["kind"]] = document
    return objects


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.name for p in MANIFESTS])
def test_kubernetes_manifest_validates_against_its_schema(path):
    documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    assert documents
    for document in documents:
        validate_kubernetes(document)


@pytest.mark.parametrize("change, complaint", [
    (lambda d: d["spec"].update(replica=2), "replica"),
    (lambda d: d["spec"]["template"]["spec"]["containers"][0]["securityContext"].update(readOnlyRootFS=True),
     "readOnlyRootFS"),
    (lambda d: d["spec"].update(replicas="two"), "two"),
])
def test_kubernetes_schema_refuses_a_broken_deployment(change, complaint):
    deployment = _objects()["Deployment"]
    change(deployment)
    with pytest.raises(jsonschema.ValidationError, match=complaint):
        validate_kubernetes(deployment)


def test_deployment_runs_two_locked_down_replicas_with_probes():
    objects = _objects()
    deployment = objects["Deployment"]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = deployment["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == UID
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    context = container["securityContext"]
    assert context["runAsNonRoot"] is True and context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["args"] == ["run", "--config", CONFIG_FILE]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["startupProbe"]["httpGet"]["path"] == "/livez"
    # Writable: the state directory and /tmp only; the configuration and the key read-only.
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    writable = sorted(path for path, m in mounts.items() if not m.get("readOnly"))
    assert writable == sorted([str(STATE_DIR), str(TMP_DIR)])
    assert volumes[mounts[str(TMP_DIR)]["name"]]["emptyDir"]["medium"] == "Memory"
    assert volumes[mounts["/etc/meldbot"]["name"]]["configMap"]["name"] == objects["ConfigMap"]["metadata"]["name"]
    key_volume = volumes[mounts["/run/secrets/meldbot"]["name"]]["secret"]
    assert key_volume["defaultMode"] == 0o400
    assert key_volume["secretName"] == objects["Secret"]["metadata"]["name"]
    # The Service and the budget select exactly these pods; the budget keeps one running.
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == labels
    assert objects["Service"]["spec"]["selector"] == labels
    assert objects["Service"]["spec"]["ports"][0]["targetPort"] == "http" and ports["http"] == 8080
    assert objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == labels
    assert objects["PodDisruptionBudget"]["spec"]["minAvailable"] == 1


def _pod_environment(pod: dict, secret: dict, optional: bool) -> dict[str, str]:
    """The container's environment with each secretKeyRef resolved from the Secret template;
    `optional`: also the optional keys."""
    (container,) = pod["containers"]
    environment = {}
    for item in container["env"]:
        if "value" in item:
            environment[item["name"]] = item["value"]
            continue
        reference = item["valueFrom"]["secretKeyRef"]
        assert reference["name"] == secret["metadata"]["name"]
        assert reference["key"] in secret["stringData"], reference["key"]
        if optional or not reference.get("optional"):
            environment[item["name"]] = secret["stringData"][reference["key"]]
    return environment


def _uncommented(toml: str, *sections: str) -> str:
    """The ConfigMap's TOML with the commented-out sections (and their keys) switched on."""
    lines, active = [], False
    for line in toml.splitlines():
        if re.fullmatch(r"# \[(\w+)\]", line):
            active = line[3:-1] in sections
        elif not line.startswith("#"):
            active = False
        lines.append(line[2:] if active and re.match(r"# (\[|\w+ = )", line) else line)
    return "\n".join(lines)


@pytest.mark.parametrize("sections", [(), ("matrix", "teams")], ids=["as shipped", "matrix and teams on"])
def test_configmap_and_secret_give_meldbot_a_configuration_it_accepts(clean_environment, tmp_path, sections):
    objects = _objects()
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    toml = _uncommented(objects["ConfigMap"]["data"]["meldbot.toml"], *sections)
    (tmp_path / "meldbot.toml").write_text(toml, encoding="utf-8")
    for key, value in _pod_environment(pod, objects["Secret"], optional=bool(sections)).items():
        clean_environment.setenv(key, value)
    settings = load_settings(tmp_path / "meldbot.toml")
    assert settings.database.url.startswith("postgresql+asyncpg://")
    assert settings.database.auto_migrate is False, "migrations run in the Job, not in two pods at once"
    assert settings.privacy.key_file == Path("/run/secrets/meldbot/master.key")
    (container,) = pod["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert settings.web.listen == f"0.0.0.0:{ports['http']}"
    assert settings.metrics.listen == f"0.0.0.0:{ports['metrics']}"
    assert settings.logging.format == "json"
    if sections:
        assert settings.matrix.access_token == objects["Secret"]["stringData"]["matrix-access-token"]
        assert settings.teams.app_password == objects["Secret"]["stringData"]["teams-app-password"]
        assert _writable(settings.matrix.store_dir) and _writable(settings.teams.store_dir)
    else:
        assert settings.matrix is None and settings.teams is None


def test_an_optional_secret_without_its_section_is_refused_by_name(clean_environment, tmp_path):
    """What the Secret template warns about: a Teams secret without [teams] stops the start with a
    message naming the key, not with a traceback."""
    objects = _objects()
    (tmp_path / "meldbot.toml").write_text(objects["ConfigMap"]["data"]["meldbot.toml"], encoding="utf-8")
    clean_environment.setenv("MELDBOT_MATRIX__ACCESS_TOKEN", "syt_token")
    with pytest.raises(ConfigError, match=r"\[matrix\]"):
        load_settings(tmp_path / "meldbot.toml")


def test_migration_job_runs_the_same_image_and_configuration_as_the_deployment():
    objects = _objects()
    job_pod = objects["Job"]["spec"]["template"]["spec"]
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    (job,), (container,) = job_pod["containers"], pod["containers"]
    assert job["image"] == container["image"]
    assert job["args"] == ["db", "upgrade", "--config", CONFIG_FILE]
    assert job["securityContext"]["readOnlyRootFilesystem"] is True
    assert job["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert job_pod["securityContext"]["runAsNonRoot"] is True
    assert job_pod["volumes"][0] == pod["volumes"][0]  # the ConfigMap


def test_the_secret_template_is_not_applied_with_the_folder():
    # `kubectl apply -f deploy/kubernetes/` reads .yaml, .yml and .json files only.
    assert not [p.name for p in KUBERNETES.iterdir() if p.suffix in (".yaml", ".yml", ".json")
                and yaml.safe_load(p.read_text(encoding="utf-8")).get("kind") == "Secret"]


def test_the_vendored_kubernetes_definitions_are_closed():
    """prune.py kept every definition the kinds reach: each $ref resolves inside the files."""
    folder = SCHEMAS / "kubernetes"
    definitions = json.loads((folder / "_definitions.json").read_text(encoding="utf-8"))["$defs"]
    texts = [p.read_text(encoding="utf-8") for p in folder.glob("*.json")]
    referenced = {name for text in texts for name in re.findall(r'"\$ref": "[^"#]*#/\$defs/([^"]+)"', text)}
    assert referenced and referenced <= set(definitions)
