"""The privacy and security documents and deployment files say what the code does.

The numbers come from the code (PrivacySettings, FollowupSettings, the models, the keyring), so a
changed default, a new `[privacy]` key or a new table fails here until the documents follow."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from bot.config import FollowupSettings, PrivacySettings, load_settings
from storage import crypto
from storage.models import Base

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "deploy" / "meldbot.example.toml"
SERVICE = ROOT / "deploy" / "meldbot.service"
SECURITY = ROOT / "SECURITY.md"
REGISTER = ROOT / "deploy" / "privacy" / "verwerkingsregister.md"
DPIA = ROOT / "deploy" / "privacy" / "dpia.md"
README = ROOT / "README.md"
SECURITY_CONTACT = "security@meldbot.nl"
#: Where the unit file expects the program (replaced by a real one for `systemd-analyze verify`).
UNIT_PROGRAM = "/opt/meldbot/venv/bin/meldbot"

PRIVACY = PrivacySettings()
FOLLOWUP = FollowupSettings()


@pytest.fixture
def clean_environment(monkeypatch):
    """No MELDBOT_* variable of the developer's shell changes what a file loads to."""
    for name in [name for name in os.environ if name.startswith("MELDBOT_")]:
        monkeypatch.delenv(name)
    return monkeypatch


def _section(text: str, header: str) -> str:
    """The lines of a TOML section, from its header to the next header (commented ones included)."""
    lines = text.splitlines()
    start = lines.index(header) + 1
    end = next((i for i in range(start, len(lines)) if re.match(r"^#?\s*\[[a-z]+\]\s*$", lines[i])), len(lines))
    return "\n".join(lines[start:end])


def _readme_section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else len(text)]


# -- the example configuration ------------------------------------------------------------------------


def test_example_privacy_section_has_every_key_with_its_default(clean_environment):
    text = EXAMPLE.read_text(encoding="utf-8")
    written = tomllib.loads(text)["privacy"]
    commented = set(re.findall(r"^#\s*([a-z_]+)\s*=", _section(text, "[privacy]"), flags=re.MULTILINE))
    fields = PrivacySettings.model_fields
    assert set(written) | commented == set(fields), "every [privacy] key, set or commented out"
    for name, value in written.items():
        assert value == fields[name].default, f"[privacy] {name} in the example is not the default"
    for name in commented - set(written):
        assert fields[name].default is None, f"[privacy] {name} has a default: write it out in the example"

    settings = load_settings(EXAMPLE)  # the real loader: the section validates as Meldbot reads it
    assert settings.privacy == PrivacySettings()


# -- the systemd unit ---------------------------------------------------------------------------------


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string(SERVICE.read_text(encoding="utf-8"), source=str(SERVICE))
    return parser


def test_service_unit_parses_and_keeps_files_private():
    unit = _unit()
    assert {"Unit", "Service", "Install"} <= set(unit.sections())
    service = unit["Service"]
    assert service["UMask"] == "0077"
    for key in ("NoNewPrivileges", "ProtectKernelTunables", "ProtectControlGroups", "RestrictSUIDSGID",
                "LockPersonality", "PrivateDevices"):
        assert service[key] == "true", key
    assert service["CapabilityBoundingSet"] == ""
    assert set(service["RestrictAddressFamilies"].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert "@system-service" in SERVICE.read_text(encoding="utf-8")


def test_service_credential_is_where_the_configuration_reads_the_key(clean_environment, tmp_path):
    """LoadCredential's name is the file MELDBOT_PRIVACY__KEY_FILE points at, and that variable is
    the one pydantic-settings reads as [privacy] key_file."""
    service = _unit()["Service"]
    credential, _, _source = service["LoadCredential"].partition(":")
    variables = dict(item.split("=", 1) for item in service["Environment"].split())
    value = variables["MELDBOT_PRIVACY__KEY_FILE"]
    assert value == f"%d/{credential}"

    expanded = value.replace("%d", str(tmp_path))
    clean_environment.setenv("MELDBOT_PRIVACY__KEY_FILE", expanded)
    assert load_settings(EXAMPLE).privacy.key_file == Path(expanded)


def test_systemd_accepts_the_unit(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed on this machine")
    program = Path(sys.executable).with_name("meldbot")
    text = SERVICE.read_text(encoding="utf-8")
    assert UNIT_PROGRAM in text
    # The program is not installed in /opt here; verify checks that ExecStart= is executable.
    unit = tmp_path / "meldbot.service"
    unit.write_text(text.replace(UNIT_PROGRAM, str(program if program.exists() else sys.executable)))
    result = subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True,
                            timeout=120)
    # Unknown keys and bad values are only warnings (exit code 0): any line about our unit fails.
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if "meldbot.service" in line]
    assert result.returncode == 0 and not complaints, result.stdout + result.stderr


# -- the documents --------------------------------------------------------------------------------------


def _retention_phrases(language: str) -> dict[str, str]:
    """How each retention default is written in a document of `language`."""
    if language == "nl":
        return {"closed_years": f"{PRIVACY.closed_years} jaar", "withdrawn_days": f"{PRIVACY.withdrawn_days} dagen",
                "purge_notice_days": f"{PRIVACY.purge_notice_days} dagen",
                "draft_days": f"{FOLLOWUP.draft_days} dagen"}
    return {"closed_years": f"{PRIVACY.closed_years} years", "withdrawn_days": f"{PRIVACY.withdrawn_days} days",
            "purge_notice_days": f"{PRIVACY.purge_notice_days} days", "draft_days": f"{FOLLOWUP.draft_days} days"}


@pytest.mark.parametrize("document, language", [(SECURITY, "en"), (REGISTER, "nl"), (DPIA, "nl")],
                         ids=["SECURITY.md", "verwerkingsregister.md", "dpia.md"])
def test_documents_state_the_retention_defaults_and_the_security_contact(document, language):
    assert document.is_file(), f"{document.relative_to(ROOT)} is missing"
    text = " ".join(document.read_text(encoding="utf-8").split())  # line breaks do not matter
    for key, phrase in _retention_phrases(language).items():
        assert phrase in text, f"{document.name} does not say {phrase!r} ({key})"
    assert SECURITY_CONTACT in text


@pytest.mark.parametrize("document", [SECURITY, REGISTER], ids=["SECURITY.md", "verwerkingsregister.md"])
def test_documents_name_the_settings_with_their_defaults(document):
    text = document.read_text(encoding="utf-8")
    for name in ("closed_years", "withdrawn_days", "purge_notice_days"):
        assert f"{name} = {getattr(PRIVACY, name)}" in text, f"{document.name}: {name}"
    assert f"draft_days = {FOLLOWUP.draft_days}" in text
    assert PRIVACY.purge_time in text


def test_security_lists_every_table_and_every_key():
    text = SECURITY.read_text(encoding="utf-8")
    for table in Base.metadata.tables:
        assert f"`{table}`" in text, f"SECURITY.md does not say what table {table} holds"
    keys = text[text.index("master key (32 random bytes"):]
    for name in crypto.KEYRING_NAMES:
        assert re.search(rf"^\s+{name}\s", keys, flags=re.MULTILINE), f"SECURITY.md: organisation key {name}"
    for phrase in ("MELDBOT_PRIVACY__KEY", "derived store key", "0600", "meldbot keys rotate",
                   "meldbot retention purge", "legal hold", "## Reporting a vulnerability"):
        assert phrase in text, phrase


def test_dutch_documents_leave_the_organisations_part_marked():
    register = REGISTER.read_text(encoding="utf-8")
    for part in "abcdefg":  # art. 30 lid 1 sub a-g AVG, each in its own heading
        assert re.search(rf"^## .*art\. 30 lid 1 sub {part}\b", register, flags=re.MULTILINE), f"sub {part}"
    for text in (register, DPIA.read_text(encoding="utf-8")):
        text = " ".join(text.split())
        assert "`[IN TE VULLEN" in text
        # The legal basis and the special categories (domain notes: health data, criminal data).
        for phrase in ("6 lid 1 sub c", "Arbeidsomstandighedenwet", "3 lid 2", "Arbeidsomstandighedenbesluit",
                       "2.15", "psychosociale arbeidsbelasting", "art. 9", "art. 10"):
            assert phrase in text, phrase
    dpia = DPIA.read_text(encoding="utf-8")
    for part in ("## Deel A", "## Deel B", "## Deel C", "## Deel D"):
        assert part in dpia


# -- the README -----------------------------------------------------------------------------------------


def test_readme_privacy_section_names_every_key_and_default():
    section = _readme_section("Privacy and security")
    for name, field in PrivacySettings.model_fields.items():
        assert f"`{name}`" in section, f"README does not mention [privacy] {name}"
        if field.default is not None:
            shown = f'"{field.default}"' if isinstance(field.default, str) else str(field.default)
            assert f"| `{name}` | `{shown}` |" in section, f"README: the default of {name}"
    for phrase in ("meldbot keys create", "meldbot keys rotate", "meldbot retention purge --dry-run",
                   "mijn gegevens", "my data", "intrekken MB-", "withdraw MB-", "legal hold",
                   "(SECURITY.md)", "(deploy/privacy/)", "MELDBOT_PRIVACY__KEY"):
        assert phrase in section, phrase
    for document in (SECURITY, REGISTER.parent):
        assert document.exists()


def test_readme_quick_start_is_still_two_commands():
    section = _readme_section("Quick start")
    blocks = re.findall(r"^```\n(.*?)\n```$", section, flags=re.MULTILINE | re.DOTALL)
    assert blocks == ["make demo", "make test"]
