"""The Teams app package: manifest.json and the two icons in one zip, for upload to Teams.

The template, icons and bundled manifest schema live in `deploy/teams/` of the repository (not in a
Python package). Validation is offline: the schema is self-contained and nothing is fetched.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import zipfile
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jsonschema import Draft4Validator
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource
from referencing.jsonschema import DRAFT4

from bot.config import ConfigError, Settings

#: Template, icons and schema (a repository directory, not package data): the repository's
#: deploy/teams, three levels above this file (bot/adapters/teams/package.py).
PACKAGE_DIR = Path(__file__).resolve().parents[3] / "deploy" / "teams"
TEMPLATE = PACKAGE_DIR / "manifest.template.json"
SCHEMA = PACKAGE_DIR / "schema" / "MicrosoftTeams.schema.json"

_GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_SEMVER_RE = re.compile(r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$")
_PLACEHOLDER_RE = re.compile(r"\{\{\s*(\w+)\s*\}\}")
#: A fixed time stamp for the zip entries: the same settings give the same bytes.
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)

#: Where a manifest field comes from in the configuration, for error messages.
_CONFIG_KEYS = {
    ("version",): "[teams] package_version",
    ("id",): "[teams] app_id",
    ("developer", "name"): "[teams] developer_name",
    ("developer", "websiteUrl"): "[teams] website_url",
    ("developer", "privacyUrl"): "[teams] privacy_url",
    ("developer", "termsOfUseUrl"): "[teams] terms_url",
    ("name",): "[teams] app_name",
    ("validDomains",): "[web] public_url",
}


def build_manifest(settings: Settings) -> dict[str, Any]:
    """The manifest for `settings`: the template with its `{{placeholders}}` filled in.

    Raises ConfigError when `[teams]` is missing or its app_id or package_version cannot be used.
    """
    teams = settings.teams
    if teams is None:
        raise ConfigError(
            "No [teams] section in the configuration: the Teams app package needs [teams] app_id "
            "(the Microsoft App ID of the Azure Bot, a GUID)."
        )
    app_id = teams.app_id.strip()
    if not app_id:
        raise ConfigError(
            "[teams] app_id is empty: set it to the Microsoft App ID of the Azure Bot "
            "(a GUID such as 00000000-0000-0000-0000-000000000000)."
        )
    if not _GUID_RE.match(app_id):
        raise ConfigError(
            f"[teams] app_id {app_id!r} is not a GUID: Teams needs the Microsoft App ID of the Azure Bot, "
            "such as 00000000-0000-0000-0000-000000000000."
        )
    version = teams.package_version.strip()
    if not _SEMVER_RE.match(version):
        raise ConfigError(f"[teams] package_version {version!r} must be a version such as 1.0.0 (major.minor.patch).")
    values = {
        "app_id": app_id,
        "package_version": version,
        "app_name": teams.app_name,
        "developer_name": teams.developer_name,
        "website_url": teams.website_url,
        "privacy_url": teams.privacy_url,
        "terms_url": teams.terms_url,
        "public_host": urlsplit(settings.web.public_url).hostname or "",
    }
    template = json.loads(TEMPLATE.read_text(encoding="utf-8"))
    return _fill(template, values)


def _fill(node: Any, values: dict[str, str]) -> Any:
    """A copy of the JSON structure `node` with `{{name}}` in its strings replaced from `values`."""
    if isinstance(node, dict):
        return {key: _fill(value, values) for key, value in node.items()}
    if isinstance(node, list):
        return [_fill(item, values) for item in node]
    if isinstance(node, str):

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in values:
                raise ValueError(f"{TEMPLATE}: unknown placeholder {{{{{name}}}}}")
            return values[name]

        return _PLACEHOLDER_RE.sub(replace, node)
    return node


@cache
def _validator() -> Draft4Validator:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))

    def no_network(uri: str) -> Resource:
        raise NoSuchResource(ref=uri)

    # Registered under its public address; any other reference fails instead of being downloaded.
    resource = Resource(contents=schema, specification=DRAFT4)
    registry = Registry(retrieve=no_network).with_resource(
        "https://developer.microsoft.com/json-schemas/teams/v1.22/MicrosoftTeams.schema.json", resource
    )
    return Draft4Validator(schema, registry=registry, format_checker=Draft4Validator.FORMAT_CHECKER)


def _first_error(manifest: dict[str, Any]) -> ValidationError | None:
    return best_match(_validator().iter_errors(manifest))


def _describe(error: ValidationError) -> str:
    where = "/".join(str(part) for part in error.absolute_path) or "(top level)"
    return f"manifest {where}: {error.message}"


def validate_manifest(manifest: dict[str, Any]) -> None:
    """Validate `manifest` against the bundled Teams schema; raise ValueError with the schema's message."""
    error = _first_error(manifest)
    if error is not None:
        raise ValueError(_describe(error))


def build_package(settings: Settings, output: Path) -> Path:
    """Write the Teams app package (manifest.json, color.png, outline.png) as a zip at `output`.

    When `output` is an existing directory the zip is named `meldbot-teams-<version>.zip` inside it.
    Returns the path written. Raises ConfigError naming the configuration key that is wrong.
    """
    manifest = build_manifest(settings)
    error = _first_error(manifest)
    if error is not None:
        path = tuple(error.absolute_path)
        key = next((key for prefix, key in _CONFIG_KEYS.items() if path[: len(prefix)] == prefix), None)
        hint = f" (check {key})" if key else ""
        raise ConfigError(f"The Teams app manifest is not valid{hint}: {_describe(error)}")

    icons = [manifest["icons"]["color"], manifest["icons"]["outline"]]
    missing = [name for name in icons if not (PACKAGE_DIR / name).is_file()]
    if missing:
        raise FileNotFoundError(f"Teams app icons missing in {PACKAGE_DIR}: {', '.join(missing)}")

    output = Path(output)
    if output.is_dir():
        output = output / f"meldbot-teams-{manifest['version']}.zip"
    output.parent.mkdir(parents=True, exist_ok=True)
    entries = [("manifest.json", (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))]
    entries += [(name, (PACKAGE_DIR / name).read_bytes()) for name in icons]

    # Write next to the target, then rename: no half-written package is left behind.
    handle, temporary = tempfile.mkstemp(prefix=".teams-package-", suffix=".zip", dir=output.parent)
    try:
        with os.fdopen(handle, "wb") as file, zipfile.ZipFile(file, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, data in entries:
                info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                archive.writestr(info, data)
        os.chmod(temporary, 0o644)
        os.replace(temporary, output)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return output
