"""The browser set-up: scripts/install-chromium where it cannot install (it says why and exits 0), how the UI test
finds its browser (tests/ui_driver.py), and that without one the UI test fails saying so instead of skipping.

The script runs as a real process with a PATH of our making: real bash and coreutils, and stand-ins for `sudo` and
`apt-get` where a case needs them (never the machine's own, which would install for real). When this test runs as
root, the "not root" cases run the script as the unprivileged user `nobody`.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ui_driver import CHROMIUM_ENV, find_chromium, require_chromium

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "install-chromium"
TOOLS = ("bash", "id", "cat", "tail", "tr", "env", "true", "chmod")  # what the script and the stand-ins use, real ones
# Stand-ins; BIN is replaced by the PATH directory they live in, where they log their calls.
FAKE_SUDO = '#!/bin/sh\necho "sudo $*" >> BIN/calls.log\nwhile [ "${1#-}" != "$1" ]; do shift; done\nexec "$@"\n'
FAKE_APT = """#!/bin/sh
echo "apt-get $* DEBIAN_FRONTEND=${DEBIAN_FRONTEND:-}" >> BIN/calls.log
case "$1" in
  update) exit 0 ;;
  install) %s ;;
esac
"""
APT_FAILS = 'echo "E: Unable to locate package chromium" >&2; exit 100'
APT_INSTALLS = 'printf "#!/bin/sh\\n" > BIN/chromium; chmod 755 BIN/chromium; exit 0'


@pytest.fixture
def bin_dir() -> Iterator[Path]:
    """A PATH directory `nobody` can use (pytest's tmp_path is private to its user)."""
    path = Path(tempfile.mkdtemp(prefix="install-chromium-"))
    path.chmod(0o777)
    for tool in TOOLS:
        real = shutil.which(tool)
        assert real, f"{tool} is needed by scripts/install-chromium"
        (path / tool).symlink_to(real)
    (path / "calls.log").touch(mode=0o666)
    (path / "calls.log").chmod(0o666)
    yield path
    shutil.rmtree(path)


def fake(path: Path, name: str, text: str) -> None:
    (path / name).write_text(text.replace("BIN", str(path)))
    (path / name).chmod(stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)


def not_root() -> dict[str, Any]:
    """Run a process as an unprivileged user: `nobody` when we are root, else ourselves."""
    if os.geteuid() != 0:
        return {}
    nobody = pwd.getpwnam("nobody")
    return {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}


def install_chromium(path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    # A copy in `path`: `nobody` may not reach the checkout (a clone under a private directory, as in CI).
    script = path / "install-chromium"
    shutil.copyfile(SCRIPT, script)
    script.chmod(0o755)
    return subprocess.run([str(script)], env={"PATH": str(path), "HOME": "/", **env}, cwd="/", capture_output=True,
                          text=True, timeout=60, check=False, **not_root())


def calls(path: Path) -> list[str]:
    return (path / "calls.log").read_text().splitlines()


def test_without_root_or_sudo_it_says_the_ui_test_will_fail_and_how_to_fix_it_and_exits_0(bin_dir: Path) -> None:
    fake(bin_dir, "apt-get", FAKE_APT % APT_INSTALLS)  # there, but it must not be tried without privileges
    done = install_chromium(bin_dir)
    assert done.returncode == 0 and done.stdout == ""
    assert "no Chromium here, and it cannot be installed: this user is not root and has no password-less sudo" \
        in done.stderr
    assert "The browser test (tests/kit/test_ui_approval.py) will FAIL; every other test runs." in done.stderr
    assert "`apt-get install -y chromium`" in done.stderr and "UI_TEST_CHROMIUM=/path/to/chromium" in done.stderr
    assert calls(bin_dir) == [] and not (bin_dir / "chromium").exists()


def test_when_apt_get_fails_it_says_so_and_exits_0(bin_dir: Path) -> None:
    fake(bin_dir, "sudo", FAKE_SUDO)
    fake(bin_dir, "apt-get", FAKE_APT % APT_FAILS)
    done = install_chromium(bin_dir)
    assert done.returncode == 0
    assert "cannot be installed: `apt-get install chromium` failed: E: Unable to locate package chromium" in done.stderr
    assert "tests/kit/test_ui_approval.py) will FAIL" in done.stderr
    apt = [c for c in calls(bin_dir) if c.startswith("apt-get")]
    assert apt == ["apt-get update -qq DEBIAN_FRONTEND=", "apt-get install -y -qq chromium DEBIAN_FRONTEND=noninteractive"]
    if os.geteuid() == 0:  # ran as nobody: through sudo, never asking for a password
        assert [c for c in calls(bin_dir) if c.startswith("sudo")][0] == "sudo -n true"


def test_it_installs_with_apt_get_and_is_silent_when_chromium_is_there(bin_dir: Path) -> None:
    fake(bin_dir, "sudo", FAKE_SUDO)
    fake(bin_dir, "apt-get", FAKE_APT % APT_INSTALLS)
    done = install_chromium(bin_dir)
    assert (done.returncode, "cannot" in done.stderr) == (0, False), done.stderr
    assert (bin_dir / "chromium").exists() and len([c for c in calls(bin_dir) if c.startswith("apt-get")]) == 2
    before = calls(bin_dir)
    again = install_chromium(bin_dir)  # found now: nothing to do, nothing said
    assert (again.returncode, again.stderr, calls(bin_dir)) == (0, "", before)


def test_a_broken_override_is_reported_not_installed_over(bin_dir: Path) -> None:
    fake(bin_dir, "apt-get", FAKE_APT % APT_INSTALLS)
    fake(bin_dir, "chromium", "#!/bin/sh\n")
    done = install_chromium(bin_dir, **{CHROMIUM_ENV: "/nowhere/chromium"})
    assert done.returncode == 0
    assert "cannot be installed: UI_TEST_CHROMIUM=/nowhere/chromium is not an executable file" in done.stderr
    assert calls(bin_dir) == []


def test_the_ui_test_finds_its_browser_by_override_then_on_path(tmp_path: Path) -> None:
    first, second, empty = tmp_path / "a", tmp_path / "b", tmp_path / "empty"
    for d in (first, second, empty):
        d.mkdir()
    fake(first, "chromium-browser", "#!/bin/sh\n")
    fake(second, "chromium", "#!/bin/sh\n")
    path = f"{empty}{os.pathsep}{first}{os.pathsep}{second}"
    assert find_chromium({"PATH": path}) == str(second / "chromium")  # Debian's name first, wherever it is on PATH
    assert find_chromium({"PATH": f"{empty}{os.pathsep}{first}"}) == str(first / "chromium-browser")
    assert find_chromium({"PATH": path, CHROMIUM_ENV: str(first / "chromium-browser")}) == str(first / "chromium-browser")
    assert find_chromium({"PATH": str(empty)}) is None
    (second / "chromium").chmod(0o644)  # not executable: not a browser
    assert find_chromium({"PATH": f"{second}{os.pathsep}{first}"}) == str(first / "chromium-browser")

    assert require_chromium(str(first / "chromium-browser")) == ""  # playwright is in the dev extra
    missing = require_chromium(None)
    assert "no Chromium found (none of chromium, chromium-browser on PATH, UI_TEST_CHROMIUM unset)" in missing
    assert "scripts/install-chromium" in missing
    assert "UI_TEST_CHROMIUM=/nowhere is not an executable file" in require_chromium("/nowhere")
    assert "is not an executable file" in require_chromium(str(second / "chromium"))


def test_without_a_browser_the_ui_test_fails_and_says_why(tmp_path: Path) -> None:
    """A real pytest run of the UI test with no Chromium on PATH: it fails before starting anything; no skip."""
    env = {k: v for k, v in os.environ.items() if k != CHROMIUM_ENV}
    env["PATH"] = str(tmp_path)  # empty: no chromium, no chromium-browser
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", "-q",
                          "tests/kit/test_ui_approval.py"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300, check=False)
    assert run.returncode == 1, run.stdout + run.stderr
    assert re.search(r"^2 failed", run.stdout, re.M) and "skipped" not in run.stdout, run.stdout  # both UI tests
    assert "the UI approval test needs a browser: no Chromium found" in run.stdout
    assert "[prefect-server] starting" not in run.stdout + run.stderr  # failed before any fixture started a server
