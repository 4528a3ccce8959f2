"""Where a program's state goes and what ``loomk config`` says about it, run as a user would.

A program in one directory run from another: ``loomk.toml`` is read from the working
directory and a relative ``data_dir`` in it is taken from that file's directory (before, the
file came from the working directory but the path from the script's directory, so the two
disagreed). ``loomk config`` names the source of every value and does not pass off an unused
``data_dir`` as where the state is.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

PROGRAM = textwrap.dedent(
    """
    import loomk

    class Keeper(loomk.Agent):
        async def on_start(self, ctx):
            ctx.state["kept"] = True

    async def main(kernel):
        await kernel.spawn(Keeper("keeper"))
        print(kernel.state.data_dir)

    loomk.run(main, log_level="critical")
    """
)


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("LOOMK_", "VLLM_"))}
    return subprocess.run(
        args,
        cwd=cwd,
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_relative_data_dir_in_loomk_toml_is_taken_from_the_files_directory(
    tmp_path: Path,
) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "main.py").write_text(PROGRAM)
    work = tmp_path / "work"
    work.mkdir()
    (work / "loomk.toml").write_text('data_dir = "state"\n')

    result = run([sys.executable, str(app / "main.py")], cwd=work)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(work / "state")
    assert (work / "state" / "CURRENT").is_file()
    assert not (app / "state").exists()  # not beside the script
    assert not (app / ".loomk").exists()

    shown = run([sys.executable, "-m", "loomk.cli", "config"], cwd=work)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("data_dir "))
    assert str(work / "state") in lines[at]
    assert lines[at + 1].strip() == f"set by: file {work / 'loomk.toml'}"


def test_without_a_file_the_default_data_dir_is_in_the_working_directory(
    tmp_path: Path,
) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "main.py").write_text(PROGRAM)
    work = tmp_path / "work"
    work.mkdir()
    result = run([sys.executable, str(app / "main.py")], cwd=work)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(work / ".loomk")
    relative = run([sys.executable, str(app / "main.py")], cwd=work, LOOMK_DATA_DIR="env-state")
    assert relative.returncode == 0, relative.stderr
    assert relative.stdout.strip() == str(work / "env-state")


def test_the_config_command_names_each_values_source_and_masks_secrets(tmp_path: Path) -> None:
    (tmp_path / "loomk.toml").write_text('name = "from-file"\n')
    result = run(
        [sys.executable, "-m", "loomk.cli", "config"],
        cwd=tmp_path,
        LOOMK_LOG_LEVEL="error",
        VLLM_API_KEY="sk-very-secret",
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "sk-very-secret" not in out

    def described(key: str) -> tuple[str, str]:
        lines = out.splitlines()
        at = next(i for i, line in enumerate(lines) if line.startswith(f"{key} "))
        return lines[at], lines[at + 1].strip()

    name_line, name_source = described("name")
    assert "from-file" in name_line
    assert name_source == f"set by: file {tmp_path / 'loomk.toml'}"
    assert described("log_level")[1] == "set by: environment variable LOOMK_LOG_LEVEL"
    key_line, key_source = described("llm_api_key")
    assert "********" in key_line
    assert key_source == "set by: environment variable VLLM_API_KEY (Loom's name)"
    assert described("bus_max_topics")[1] == "set by: default"
    assert described("state_fault")[0].split()[1] == "stop"


def test_with_state_temporary_the_config_command_does_not_pass_off_data_dir(
    tmp_path: Path,
) -> None:
    result = run(
        [sys.executable, "-m", "loomk.cli", "config"], cwd=tmp_path, LOOMK_STATE_TEMPORARY="1"
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("data_dir "))
    assert "<a temporary directory per kernel>" in lines[at]
    assert f"{tmp_path / '.loomk'} (set by: default) is not used" in lines[at + 1]


def test_state_left_beside_the_program_by_the_old_rule_is_pointed_out_once(
    tmp_path: Path,
) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "main.py").write_text(PROGRAM.replace('log_level="critical"', 'log_level="warning"'))
    work = tmp_path / "work"
    work.mkdir()
    old_rule = run([sys.executable, str(app / "main.py")], cwd=app)  # state in app/.loomk
    assert old_rule.returncode == 0, old_rule.stderr
    assert old_rule.stderr == ""

    moved = run([sys.executable, str(app / "main.py")], cwd=work)
    assert moved.returncode == 0, moved.stderr
    assert moved.stdout.strip() == str(work / ".loomk")
    assert "existing state found beside the program" in moved.stderr
    assert f"found={app / '.loomk'}" in moved.stderr
    again = run([sys.executable, str(app / "main.py")], cwd=work)  # its own state now
    assert again.stderr == ""
