"""README.md opens with exactly two set-up commands, and .ci/run runs the second (the tests) verbatim."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def setup_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("```")[1]             # the first fenced block
    return [line for line in block.splitlines()[1:] if line.strip() and not line.startswith("#")]


def test_readme_opens_with_two_commands_and_ci_runs_the_test_one():
    commands = setup_commands()
    assert len(commands) == 2
    assert commands[0].endswith("frugalnet demo")
    assert commands[1].rstrip().endswith("pytest")
    assert commands[1] in (ROOT / ".ci" / "run").read_text()


def test_every_registered_study_is_in_the_readme():
    from frugalnet.studies import available_studies

    text = (ROOT / "README.md").read_text()
    missing = [name for name, spec in available_studies().items()
               if not spec.fn.__module__.startswith("tests.") and f"`{name}`" not in text]   # not the tests' toys
    assert not missing, f"studies missing from README.md: {missing}"
