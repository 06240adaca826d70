"""The console scripts' launcher: a Ctrl-C while a command line is still importing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import console_script


def test_ctrl_c_while_a_command_line_imports_is_one_line_and_exit_130(tmp_path):
    # A stand-in command line whose import blocks (as torch's does for about two seconds) until
    # the test interrupts it; the marker says the import has begun.
    marker = tmp_path / "importing"
    (tmp_path / "slow_cli.py").write_text(
        f"import pathlib, time\npathlib.Path({str(marker)!r}).touch()\ntime.sleep(60)\napp = None\n")
    process = subprocess.Popen(
        [sys.executable, "-c", "from offline_dynamite.launch import launch; launch('slow_cli')"],
        env={**os.environ, "PYTHONPATH": str(tmp_path)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130
    assert stderr == "error: interrupted before the command started: nothing was done\n"


@pytest.mark.parametrize("script", ["dynamite-offline", "dynamite-collect", "dynamite-eval", "dynamite-experiment"])
def test_every_console_script_goes_through_the_launcher(script):
    path = console_script(script)
    assert "offline_dynamite.launch" in Path(path).read_text()
    result = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout
