"""The README's quickstart is what CI runs, and every setting is documented."""

from __future__ import annotations

import re
from pathlib import Path

from bots.registry import settings_classes

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def quickstart_commands() -> list[str]:
    quickstart = README.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", quickstart)


def test_quickstart_opens_with_two_commands_run_and_test():
    run, test = quickstart_commands()[:2]
    assert run.endswith("llmconnect run")
    assert "pytest" in test


def test_ci_runs_exactly_the_readme_test_command():
    test = quickstart_commands()[1]
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test in ci_lines


def test_every_setting_is_in_env_example_and_readme():
    example = (ROOT / ".env.example").read_text()
    for name in (name for cls in settings_classes() for name in cls.model_fields):
        var = name.upper()
        assert f"\n{var}=" in example, var
        assert f"`{var}`" in README, var
