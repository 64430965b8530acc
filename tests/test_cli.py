"""The ``journey`` command as people expect: ``--version``, exit codes in ``--help``, shell
completion, and a ``--help`` that loads none of the heavy modules (it answers at once)."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
JOURNEY = Path(sys.executable).parent / "journey"
# Typer itself imports pydantic; everything else here is ours to keep out of --help.
HEAVY = (
    "temporalio",
    "fastapi",
    "asyncpg",
    "uvicorn",
    "opentelemetry",
    "workflows",
    "api",
    "worker",
)


def _journey(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(JOURNEY), *args], capture_output=True, text=True, timeout=60, cwd=ROOT, check=False
    )


def test_version_prints_the_package_version() -> None:
    result = _journey("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"journey {version('pore-journey')}"


def test_help_lists_exit_codes_and_completion() -> None:
    result = _journey("--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    for code in ("0 success", "2 bad input", "3 no such journey", "4 refused", "5 Temporal"):
        assert code in text, code
    assert "--install-completion" in result.stdout


def test_help_and_completion_import_no_heavy_module() -> None:
    probe = (
        "import json, sys\n"
        "from cli.main import app\n"
        "for args in (['--help'], ['plan', '--help'], ['enrol', '--help'], ['--version']):\n"
        "    try:\n"
        "        app(args, prog_name='journey')\n"
        "    except SystemExit:\n"
        "        pass\n"
        f"heavy = {HEAVY!r}\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in heavy)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded == []


def test_completion_script_is_offered() -> None:
    # Typer detects the shell from the parent process, as when a person types it in bash (the
    # trailing command keeps bash from exec-ing journey in its place).
    result = subprocess.run(
        ["bash", "-c", f"'{JOURNEY}' --show-completion; exit $?"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "_JOURNEY_COMPLETE" in result.stdout


def test_bad_usage_exits_2() -> None:
    assert _journey("plan", "--no-such-option").returncode == 2
    assert _journey("no-such-command").returncode == 2
