"""What a new user meets first on the command line: `--version`, a help line for every option,
a missing extra named (not "unexpected ModuleNotFoundError"), and the traceback file the error
line names really holding the traceback (the README says where it goes)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from chaosmessaging import cli

CLI = str(Path(sys.executable).with_name("chaosmessaging"))


def _parsers(parser: argparse.ArgumentParser, path: str = "chaosmessaging"):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}")


def test_version_prints_the_installed_version():
    done = subprocess.run([CLI, "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert done.stdout.strip() == f"chaosmessaging {version('chaosmessaging')}"


def test_every_option_and_argument_has_help():
    missing = []
    for path, parser in _parsers(cli.build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    assert missing == [], f"no help text: {missing}"


@pytest.mark.parametrize(
    ("module", "extra"),
    [
        ("plotly", "nightly"),
        ("ruptures", "nightly"),
        ("starlette", "stack"),
        ("pypandoc", "report"),
    ],
)
def test_a_missing_module_names_the_extra_that_brings_it(module, extra):
    said = cli._missing_extra(ModuleNotFoundError(f"No module named '{module}'", name=module))
    assert said is not None and f"pip install 'chaosmessaging[{extra}]'" in said, said
    assert cli._missing_extra(ModuleNotFoundError("x", name="no_such_module_anywhere")) is None


def test_dashboard_without_plotly_says_which_extra_to_install(tmp_path):
    # plotly hidden from this process only: a module of that name that fails to import
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "plotly").mkdir()
    (fake / "plotly" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'plotly'\", name='plotly')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(fake)}
    (tmp_path / "night").mkdir()
    done = subprocess.run(
        [CLI, "dashboard", str(tmp_path / "night")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "pip install 'chaosmessaging[nightly]'" in done.stdout, done.stdout
    assert "unexpected" not in done.stdout and "Traceback" not in done.stdout + done.stderr


@pytest.mark.parametrize("home_exists", [True, False])
def test_the_traceback_file_named_on_the_error_line_holds_the_traceback(tmp_path, home_exists):
    home = tmp_path / "home"
    if home_exists:
        (home / "logs").mkdir(parents=True)
    # an unexpected error: a command that fails with a bug (every input the CLI knows is checked,
    # so the bug is planted: the real `main` and its error handling, one command replaced)
    planted = (
        "import sys\n"
        "from chaosmessaging import cli\n"
        "def _bug(args):\n"
        "    raise IsADirectoryError('a planted bug')\n"
        "cli._revert = _bug\n"
        "sys.exit(cli.main(sys.argv[1:]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", planted, "--home", str(home), "revert"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    line = done.stdout.strip().splitlines()[-1]
    assert "the traceback is in " in line, line
    where = Path(line.split("the traceback is in ", 1)[1].split(" (rerun", 1)[0])
    assert "Traceback (most recent call last)" in where.read_text()
    if home_exists:
        assert where == home / "logs" / "cli.log"
    else:
        assert where.parent == Path(os.environ.get("TMPDIR", "/tmp"))
        assert where.name == f"chaosmessaging-cli-{os.getuid()}.log"
