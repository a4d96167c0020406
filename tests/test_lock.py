"""The pinned locks match pyproject.toml: every dependency it names is pinned, with at least one
hash, at a version its specifier allows, and nothing in a lock is left unpinned.

`deploy/lock.sh` regenerates both locks; run it after changing a dependency in pyproject.toml."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = canonicalize_name(PYPROJECT["project"]["name"])
RUNTIME_LOCK = ROOT / "requirements.lock"
TEST_LOCK = ROOT / "requirements-test.lock"
#: The extras the test lock adds to the runtime dependencies.
TEST_EXTRAS = ("test", "demo")
#: The environment the locks are made for (deploy/lock.sh: Python 3.11 on Linux x86_64).
TARGET = {"python_version": "3.11", "python_full_version": "3.11.7", "sys_platform": "linux",
          "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
          "implementation_name": "cpython", "platform_python_implementation": "CPython"}


@dataclass
class Pin:
    name: str
    version: str
    hashes: list[str] = field(default_factory=list)


def parse_lock(text: str) -> dict[str, Pin]:
    """The pins of a requirements file in pip's hash-checking format; ValueError for anything else
    (an unpinned requirement, an option that would fetch outside the lock, a line without a hash)."""
    pins: dict[str, Pin] = {}
    # Logical lines: continuation backslashes joined, comments dropped.
    joined = re.sub(r"\\\n", " ", text)
    for number, raw in enumerate(joined.splitlines(), start=1):
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        if line.startswith("-"):
            raise ValueError(f"line {number}: option {line.split()[0]} in a lock (only pins with hashes)")
        requirement_text, *options = re.split(r"\s+(?=--)", line)
        requirement = Requirement(requirement_text)
        specifiers = list(requirement.specifier)
        if len(specifiers) != 1 or specifiers[0].operator != "==" or "*" in specifiers[0].version:
            raise ValueError(f"line {number}: {requirement_text!r} is not pinned with ==")
        if requirement.url or requirement.extras:
            raise ValueError(f"line {number}: {requirement_text!r}: a lock pins plain names only")
        hashes = []
        for option in options:
            match = re.fullmatch(r"--hash=sha256:([0-9a-f]{64})", option.strip())
            if not match:
                raise ValueError(f"line {number}: unexpected {option.strip()!r} (only --hash=sha256:...)")
            hashes.append(match.group(1))
        if not hashes:
            raise ValueError(f"line {number}: {requirement.name} has no --hash=sha256:")
        name = canonicalize_name(requirement.name)
        if name in pins:
            raise ValueError(f"line {number}: {requirement.name} is pinned twice")
        pins[name] = Pin(name, specifiers[0].version, hashes)
    return pins


def declared(extras: tuple[str, ...]) -> list[Requirement]:
    """The runtime dependencies, the build backend and the given extras' dependencies, with the
    project's own extras (`meldbot[demo]`) followed, as pip resolves them."""
    optional = PYPROJECT["project"].get("optional-dependencies", {})
    result = [Requirement(text) for text in PYPROJECT["build-system"]["requires"]]
    result += [Requirement(text) for text in PYPROJECT["project"]["dependencies"]]
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in optional[extra]:
            requirement = Requirement(text)
            if canonicalize_name(requirement.name) == PROJECT:
                todo += sorted(requirement.extras)
            else:
                result.append(requirement)
    return [r for r in result if r.marker is None or r.marker.evaluate(TARGET)]


LOCKS = [pytest.param(RUNTIME_LOCK, (), id="requirements.lock"),
         pytest.param(TEST_LOCK, TEST_EXTRAS, id="requirements-test.lock")]


@pytest.mark.parametrize("lock, extras", LOCKS)
def test_every_declared_dependency_is_pinned_with_a_hash_at_an_allowed_version(lock, extras):
    assert lock.is_file(), f"{lock.name} is missing: run deploy/lock.sh"
    pins = parse_lock(lock.read_text(encoding="utf-8"))
    problems = []
    for requirement in declared(extras):
        pin = pins.get(canonicalize_name(requirement.name))
        if pin is None:
            problems.append(f"{requirement} is not in {lock.name}")
        elif not requirement.specifier.contains(Version(pin.version), prereleases=True):
            problems.append(f"{lock.name} pins {pin.name}=={pin.version}, pyproject.toml asks {requirement}")
        elif not pin.hashes:
            problems.append(f"{pin.name} has no hash")
    assert problems == [], "run deploy/lock.sh:\n" + "\n".join(problems)


@pytest.mark.parametrize("lock, extras", LOCKS)
def test_the_project_itself_is_not_in_the_lock(lock, extras):
    # Meldbot is installed from the checkout with --no-deps; a pin of it would fetch a release.
    assert PROJECT not in parse_lock(lock.read_text(encoding="utf-8"))


def test_the_runtime_lock_is_the_test_lock_without_the_extras():
    """Both come from one resolution strategy: a package both need is pinned at one version, so
    the image runs what the tests ran."""
    runtime = parse_lock(RUNTIME_LOCK.read_text(encoding="utf-8"))
    test = parse_lock(TEST_LOCK.read_text(encoding="utf-8"))
    assert sorted(set(runtime) - set(test)) == []
    differing = {name: (pin.version, test[name].version) for name, pin in runtime.items()
                 if pin.version != test[name].version}
    assert differing == {}
    extras_only = {canonicalize_name(r.name) for r in declared(TEST_EXTRAS)} - {
        canonicalize_name(r.name) for r in declared(())}
    assert extras_only and not extras_only & set(runtime), "the extras' packages stay out of the runtime lock"


# -- the parser itself: it must refuse what a lock must not hold -------------------------------------

GOOD_HASH = "a" * 64


@pytest.mark.parametrize("text, complaint", [
    ("requests>=2\n", "not pinned"),
    ("requests\n", "not pinned"),
    ("requests==2.*\n", "not pinned"),
    ("requests==2.32.0\n", "no --hash"),
    (f"requests==2.32.0 --hash=md5:{'a' * 32}\n", "unexpected"),
    (f"-e .\nrequests==2.32.0 --hash=sha256:{GOOD_HASH}\n", "option -e"),
    (f"--index-url https://example.invalid/simple\nrequests==2.32.0 --hash=sha256:{GOOD_HASH}\n", "option"),
    (f"requests==2.32.0 --hash=sha256:{GOOD_HASH}\nRequests==2.31.0 --hash=sha256:{GOOD_HASH}\n", "twice"),
    (f"requests[socks]==2.32.0 --hash=sha256:{GOOD_HASH}\n", "plain names"),
])
def test_the_parser_refuses_unpinned_or_unhashed_lines(text, complaint):
    with pytest.raises(ValueError, match=re.escape(complaint)):
        parse_lock(text)


def test_the_parser_reads_continued_lines_and_comments():
    text = (f"# header\nRequests==2.32.0 \\\n    --hash=sha256:{GOOD_HASH} \\\n    --hash=sha256:{'b' * 64}\n"
            "    # via meldbot (pyproject.toml)\n")
    assert parse_lock(text) == {"requests": Pin("requests", "2.32.0", [GOOD_HASH, "b" * 64])}
