"""constraints.txt (the releases CI installs) pins every dependency pyproject.toml declares,
at a release its specifier allows, so CI cannot drift onto an unpinned or refused release."""

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def pins() -> dict[str, str]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    pairs = [line.split("==", 1) for line in lines if line and not line.startswith("#")]
    assert all(len(pair) == 2 for pair in pairs), "every line of constraints.txt is name==version"
    return {canonicalize_name(name): version.strip() for name, version in pairs}


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project.get("optional-dependencies", {})
    return [Requirement(r) for r in project["dependencies"] + extras["dev"] + extras["postgres"]]


def test_every_declared_dependency_is_pinned_within_its_specifier():
    pinned = pins()
    for requirement in declared():
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{requirement.name}: not pinned in constraints.txt"
        version = pinned[name].split("+")[0]  # a local tag (+cu130) is not part of the release
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{requirement.name}=={pinned[name]} in constraints.txt is outside {requirement}"
        )


def test_ci_installs_with_the_constraints():
    assert "-c constraints.txt" in (ROOT / ".ci" / "run").read_text()
