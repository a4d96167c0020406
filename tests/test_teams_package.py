"""The Teams app package: a flat zip with a manifest that passes the bundled (offline) schema."""

from __future__ import annotations

import copy
import io
import json
import socket
import zipfile

import pytest
from jsonschema import Draft4Validator
from PIL import Image, ImageChops

from bot.config import ConfigError, Settings, TeamsSettings, WebSettings
from bot.adapters.teams.package import PACKAGE_DIR, SCHEMA, build_manifest, build_package, validate_manifest

APP_ID = "3f2b8c1e-9d4a-4e6b-8a7c-0b1d2e3f4a5b"


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Validation must never reach the network."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access during a Teams package test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def settings(**teams) -> Settings:
    return Settings(
        teams=TeamsSettings(**{"app_id": APP_ID, **teams}),
        web=WebSettings(public_url="https://meldbot.gemeente.example.nl/"),
    )


def read_package(path):
    with zipfile.ZipFile(path) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def test_package_holds_exactly_the_manifest_and_icons_at_the_root(tmp_path):
    output = build_package(settings(), tmp_path / "out" / "meldbot.zip")

    assert output == tmp_path / "out" / "meldbot.zip"
    assert sorted(read_package(output)) == ["color.png", "manifest.json", "outline.png"]


def test_manifest_is_valid_and_filled_in(tmp_path):
    manifest = json.loads(read_package(build_package(settings(), tmp_path / "p.zip"))["manifest.json"])

    validate_manifest(manifest)
    assert manifest["manifestVersion"] == "1.22"
    assert manifest["$schema"].endswith("/teams/v1.22/MicrosoftTeams.schema.json")
    assert manifest["id"] == APP_ID
    [bot] = manifest["bots"]
    assert bot["botId"] == APP_ID
    assert bot["scopes"] == ["personal", "team"]
    assert bot["supportsFiles"] is True and bot["isNotificationOnly"] is False
    assert manifest["validDomains"] == ["meldbot.gemeente.example.nl"]
    assert manifest["version"] == "1.0.0"
    assert manifest["developer"]["privacyUrl"] == "https://meldbot.example.nl/privacy"
    assert "{{" not in json.dumps(manifest)


def test_command_lists_per_scope(tmp_path):
    manifest = build_manifest(settings())
    lists = {tuple(entry["scopes"]): [command["title"] for command in entry["commands"]]
             for entry in manifest["bots"][0]["commandLists"]}

    assert {"help", "melden", "huisregels", "normkaart", "mijn meldingen"} <= set(lists[("personal",)])
    assert {"help", "oppakken", "antwoord", "coordinatiekanaal"} <= set(lists[("team",)])
    for titles in lists.values():
        assert all(len(title) <= 32 for title in titles)  # Teams' limit for a command title


def test_settings_fill_the_store_listing():
    manifest = build_manifest(settings(app_name="Agressiemelder", developer_name="Gemeente Voorbeeld",
                                       package_version="2.3.4"))

    validate_manifest(manifest)
    assert manifest["name"]["short"] == "Agressiemelder"
    assert manifest["name"]["full"].startswith("Agressiemelder")
    assert manifest["developer"]["name"] == "Gemeente Voorbeeld"
    assert manifest["version"] == "2.3.4"


def test_icons_have_the_sizes_and_colours_teams_requires(tmp_path):
    files = read_package(build_package(settings(), tmp_path / "p.zip"))

    color = Image.open(io.BytesIO(files["color.png"]))
    assert color.format == "PNG" and color.size == (192, 192)

    outline = Image.open(io.BytesIO(files["outline.png"]))
    assert outline.format == "PNG" and outline.size == (32, 32) and outline.mode == "RGBA"
    data = outline.tobytes()
    pixels = [tuple(data[i:i + 4]) for i in range(0, len(data), 4)]
    assert any(alpha == 0 for *_, alpha in pixels), "the background must be transparent"
    assert any(alpha == 255 for *_, alpha in pixels), "the mark must be drawn"
    assert all(alpha == 0 or (r, g, b) == (255, 255, 255) for r, g, b, alpha in pixels), "only white on transparent"


def test_shipped_icons_are_what_make_icons_draws():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_icons", PACKAGE_DIR / "make_icons.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    for name, draw in (("color.png", module.color_icon), ("outline.png", module.outline_icon)):
        shipped, drawn = Image.open(PACKAGE_DIR / name), draw()
        assert (shipped.mode, shipped.size) == (drawn.mode, drawn.size)
        # A tolerance: anti-aliasing may differ by a shade between Pillow versions.
        difference = ImageChops.difference(shipped, drawn).tobytes()
        assert sum(difference) / len(difference) < 2, f"run deploy/teams/make_icons.py to update {name}"


def test_bundled_schema_is_a_valid_draft4_schema():
    Draft4Validator.check_schema(json.loads(SCHEMA.read_text(encoding="utf-8")))


@pytest.mark.parametrize("field", ["id", "developer", "icons", "accentColor", "manifestVersion"])
def test_validation_fails_without_a_required_field(field):
    manifest = build_manifest(settings())
    del manifest[field]

    with pytest.raises(ValueError, match=field):
        validate_manifest(manifest)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m["bots"][0].update(botId="not-a-guid"), "bots/0/botId"),
        (lambda m: m.update(accentColor="blue"), "accentColor"),
        (lambda m: m["bots"][0].update(scopes=["everywhere"]), "bots/0/scopes/0"),
        (lambda m: m.update(unknownField=True), "unknownField"),
    ],
)
def test_validation_names_the_wrong_field(change, message):
    manifest = copy.deepcopy(build_manifest(settings()))
    change(manifest)

    with pytest.raises(ValueError, match=message):
        validate_manifest(manifest)


@pytest.mark.parametrize("app_id", ["", "   ", "meldbot", "3f2b8c1e9d4a4e6b8a7c0b1d2e3f4a5b", APP_ID + "0"])
def test_unusable_app_id_is_a_config_error(tmp_path, app_id):
    with pytest.raises(ConfigError, match=r"\[teams\] app_id"):
        build_package(settings(app_id=app_id), tmp_path / "p.zip")
    assert not any(tmp_path.iterdir())


def test_missing_teams_section_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"\[teams\] app_id"):
        build_package(Settings(), tmp_path / "p.zip")


def test_bad_store_listing_names_the_config_key(tmp_path):
    with pytest.raises(ConfigError, match=r"\[teams\] app_name"):
        build_package(settings(app_name="M" * 31), tmp_path / "p.zip")
    with pytest.raises(ConfigError, match=r"\[teams\] package_version"):
        build_package(settings(package_version="1.0"), tmp_path / "p.zip")
    assert not any(tmp_path.iterdir())


def test_output_directory_gets_a_named_package(tmp_path):
    output = build_package(settings(package_version="1.2.0"), tmp_path)

    assert output == tmp_path / "meldbot-teams-1.2.0.zip"
    assert sorted(read_package(output)) == ["color.png", "manifest.json", "outline.png"]
    assert [path.name for path in tmp_path.iterdir()] == [output.name]


def test_same_settings_give_the_same_bytes(tmp_path):
    first = build_package(settings(), tmp_path / "a.zip").read_bytes()
    second = build_package(settings(), tmp_path / "b.zip").read_bytes()

    assert first == second
