"""`leadflow dev` as a user runs it, on a machine where other programs hold ports: a real subprocess, real
listeners on its ports, real signals, and the processes it starts looked for in /proc afterwards."""

from __future__ import annotations

import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from leadflow.intake.tracking.sample_site import SAMPLE_SITE_KEY
from tests.support.helpers import Inbox, free_port

LEADFLOW = Path(sys.executable).parent / "leadflow"
BANNER = "Press Ctrl-C to stop."


@dataclass
class Stack:
    """One `leadflow dev` run's data folder and ports."""

    data_dir: Path
    api: int
    temporal: int
    smtp: int

    @property
    def temporal_ui(self) -> int:
        return self.temporal + 1000

    def environment(self, **more: str) -> dict[str, str]:
        inherited = {name: value for name, value in os.environ.items() if not name.startswith("LEADFLOW_")}
        return {
            **inherited,
            "LEADFLOW_DATA_DIR": str(self.data_dir),
            "LEADFLOW_API_PORT": str(self.api),
            "LEADFLOW_TEMPORAL_ADDRESS": f"127.0.0.1:{self.temporal}",
            "LEADFLOW_SMTP_URL": f"smtp://127.0.0.1:{self.smtp}",
            "LEADFLOW_ROUTER_POLL_SECONDS": "0.2",
            **more,
        }

    def processes(self) -> dict[int, str]:
        """Every live process of this run (`leadflow dev` and whatever it started: they all carry its data
        folder in their environment), with its command line."""
        marker = f"LEADFLOW_DATA_DIR={self.data_dir}".encode()
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue  # gone meanwhile, or a zombie
        return found

    def listening(self) -> list[int]:
        """This run's ports that still accept connections."""
        still = []
        for port in (self.api, self.temporal, self.temporal_ui, self.smtp):
            with socket.socket() as probe:
                probe.settimeout(1)
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    still.append(port)
        return still


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    ports = {free_port() for _ in range(6)}
    api, temporal, smtp = sorted(ports)[:3]
    run = Stack(tmp_path / "data", api, temporal, smtp)
    yield run
    for pid in run.processes():  # a failing test must not leave a stack running on a shared machine
        kill_quietly(pid)


def kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@contextmanager
def listener(port: int) -> Iterator[None]:
    """Another program's listening socket on this port (it accepts connections, says nothing)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()
        yield


def start_dev(stack: Stack, output: Path, **environment: str) -> subprocess.Popen[bytes]:
    with output.open("wb") as out:
        return subprocess.Popen(
            [str(LEADFLOW), "dev"],
            env=stack.environment(**environment),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, as in a terminal: Ctrl-C goes to the group
        )


def wait_for(condition: Callable[[], object], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {seconds} s")
        time.sleep(0.05)


def stops_within(dev: subprocess.Popen[bytes], seconds: float) -> int:
    try:
        return dev.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"`leadflow dev` still running {seconds} s after the signal") from None


def assert_nothing_left(stack: Stack) -> None:
    wait_for(lambda: not stack.processes(), 3, "exit of every process it started")
    assert stack.listening() == []


def run_until_exit(stack: Stack, output: Path) -> int:
    """`leadflow dev` run to its end, which must come within seconds (importing it takes a few on a busy
    machine; the version before this check hung for good)."""
    dev = start_dev(stack, output)
    try:
        return dev.wait(timeout=30)
    except subprocess.TimeoutExpired:
        raise AssertionError("`leadflow dev` did not exit with a port taken") from None


def test_the_api_port_held_by_another_program_stops_dev_with_one_line(stack: Stack, tmp_path: Path) -> None:
    with listener(stack.api):
        code = run_until_exit(stack, tmp_path / "out")
        output = (tmp_path / "out").read_text().strip()
        assert code == 1
        assert output.startswith(
            f"leadflow dev: port {stack.api} (the API) is in use by another program: "
        ), output
        assert "LEADFLOW_API_PORT=" in output and "\n" not in output, output  # one line, no traceback
        assert not stack.processes()
        assert stack.listening() == [stack.api]  # the other program's: nothing of leadflow's started
    assert not (stack.data_dir / "temporal.db").exists()


def test_every_port_taken_gets_its_line_naming_the_setting_that_moves_it(
    stack: Stack, tmp_path: Path
) -> None:
    with listener(stack.temporal), listener(stack.smtp):
        code = run_until_exit(stack, tmp_path / "out")
        lines = (tmp_path / "out").read_text().strip().splitlines()
        assert code == 1
        assert len(lines) == 2, lines
        temporal, smtp = lines
        assert f"port {stack.temporal} (the Temporal dev server) is in use" in temporal, temporal
        assert "LEADFLOW_TEMPORAL_ADDRESS=127.0.0.1:" in temporal, temporal
        assert (
            f"port {stack.smtp} (the mail catcher) is in use by a program that does not answer SMTP" in smtp
        )
        assert "LEADFLOW_SMTP_URL=smtp://127.0.0.1:" in smtp, smtp
        assert not stack.processes()
        assert sorted(stack.listening()) == sorted([stack.temporal, stack.smtp])
    assert not (stack.data_dir / "temporal.db").exists()


@pytest.mark.parametrize(
    "signum, started_yet",
    [(signal.SIGINT, "start-dev"), (signal.SIGTERM, "worker.py")],
    ids=["ctrl-c-once-temporal-runs", "sigterm-once-a-worker-process-runs"],
)
def test_a_signal_while_starting_stops_everything_started_so_far(
    stack: Stack, tmp_path: Path, signum: int, started_yet: str
) -> None:
    dev = start_dev(stack, tmp_path / "out", LEADFLOW_WORKER_PROCESSES="2")
    wait_for(lambda: any(started_yet in command for command in stack.processes().values()), 60, started_yet)
    if signum == signal.SIGINT:
        os.killpg(dev.pid, signum)  # what a terminal's Ctrl-C does
    else:
        dev.send_signal(signum)
    code = stops_within(dev, 15)
    output = (tmp_path / "out").read_text()
    assert BANNER not in output, output  # the signal came while starting
    assert code == 0, output
    assert_nothing_left(stack)


def test_the_banner_comes_once_everything_answers_and_ctrl_c_then_stops_everything(
    stack: Stack, tmp_path: Path
) -> None:
    with listener(stack.temporal_ui):  # the Temporal UI's usual port is taken: the UI moves, and says so
        dev = start_dev(stack, tmp_path / "out", LEADFLOW_WORKER_PROCESSES="2")
        wait_for(lambda: BANNER in (tmp_path / "out").read_text(), 90, "banner")
        # The moment the banner is out, every part answers.
        health = httpx.get(
            f"http://127.0.0.1:{stack.api}/v1/health", headers={"Authorization": "Bearer dev-key"}, timeout=5
        )
        assert health.status_code == 200, health.text
        with smtplib.SMTP("127.0.0.1", stack.smtp, timeout=5) as catcher:
            assert catcher.noop()[0] == 250
        banner = (tmp_path / "out").read_text()
        moved = re.search(
            r"Temporal UI +http://127\.0\.0\.1:(\d+) +\(port (\d+) is taken by another program\)", banner
        )
        assert moved and int(moved[2]) == stack.temporal_ui, banner
        ui = int(moved[1])
        assert httpx.get(f"http://127.0.0.1:{ui}/", timeout=5).status_code == 200
        assert set(stack.listening()) == {stack.api, stack.temporal, stack.temporal_ui, stack.smtp}
        commands = list(stack.processes().values())
        assert sum("start-dev" in command for command in commands) == 1
        assert sum("worker.py" in command for command in commands) == 1

        os.killpg(dev.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        assert stops_within(dev, 15) == 0
        assert "Stopped." in (tmp_path / "out").read_text()
        wait_for(lambda: not stack.processes(), 3, "exit of every process it started")
        assert stack.listening() == [stack.temporal_ui]  # the other program's
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", ui)) != 0


def test_an_smtp_server_already_listening_gets_the_email_and_no_catcher_starts(
    stack: Stack, tmp_path: Path, smtp_server: tuple[Inbox, int], inbox: Inbox
) -> None:
    _, smtp_port = smtp_server
    stack.smtp = smtp_port
    dev = start_dev(stack, tmp_path / "out")
    wait_for(lambda: BANNER in (tmp_path / "out").read_text(), 90, "banner")
    banner = (tmp_path / "out").read_text()
    assert f"your SMTP server at 127.0.0.1:{smtp_port} answers: email goes there (no mail catcher)" in banner
    assert "Mail catcher" not in banner

    # The demo lead's ebook email goes through the stack to the server that was already there.
    wait_for(lambda: inbox.to("ada@acme-robotics.test"), 60, "ebook email at the SMTP server")
    assert not list((stack.data_dir / "mail").glob("*.eml"))

    dev.send_signal(signal.SIGTERM)
    assert stops_within(dev, 15) == 0
    wait_for(lambda: not stack.processes(), 3, "exit of every process it started")
    assert [port for port in stack.listening() if port != smtp_port] == []


def test_temporal_dying_under_a_running_stack_stops_the_rest_with_one_line(
    stack: Stack, tmp_path: Path
) -> None:
    dev = start_dev(stack, tmp_path / "out")
    wait_for(lambda: BANNER in (tmp_path / "out").read_text(), 90, "banner")
    [temporal] = [pid for pid, command in stack.processes().items() if "start-dev" in command]
    os.kill(temporal, signal.SIGKILL)  # a crash, the OOM killer

    assert stops_within(dev, 15) == 1
    last = (tmp_path / "out").read_text().strip().splitlines()[-1]
    assert last.startswith("leadflow dev: the Temporal dev server stopped (exit -9)"), last
    assert_nothing_left(stack)


def test_a_first_start_makes_a_vapid_key_pair_that_later_starts_keep(stack: Stack, tmp_path: Path) -> None:
    """Without LEADFLOW_VAPID_PRIVATE_KEY the sample site's push opt-in still works: `leadflow dev` makes a
    key pair once, keeps it in the data folder, and gives it to its worker processes."""

    def public_key() -> str:
        answer = httpx.get(
            f"http://127.0.0.1:{stack.api}/v1/push/key",
            headers={"Authorization": "Bearer dev-key"},
            timeout=5,
        )
        assert answer.status_code == 200, answer.text
        key: str = answer.json()["public_key"]
        snippet = httpx.get(f"http://127.0.0.1:{stack.api}/t/leadflow.js?site={SAMPLE_SITE_KEY}", timeout=5)
        assert f'"push_key": "{key}"' in snippet.text  # what the opt-in button subscribes with
        return key

    dev = start_dev(stack, tmp_path / "first", LEADFLOW_WORKER_PROCESSES="2")
    wait_for(lambda: BANNER in (tmp_path / "first").read_text(), 90, "banner")
    first = public_key()
    kept = stack.data_dir / "vapid.key"
    assert kept.stat().st_mode & 0o777 == 0o600
    [worker] = [pid for pid, command in stack.processes().items() if "worker.py" in command]
    environment = Path(f"/proc/{worker}/environ").read_bytes().split(b"\0")
    assert f"LEADFLOW_VAPID_PRIVATE_KEY={kept.read_text().strip()}".encode() in environment
    dev.send_signal(signal.SIGTERM)
    assert stops_within(dev, 15) == 0
    assert_nothing_left(stack)

    dev = start_dev(stack, tmp_path / "second")
    wait_for(lambda: BANNER in (tmp_path / "second").read_text(), 90, "banner")
    assert public_key() == first  # browsers subscribed with it can still be sent to
    dev.send_signal(signal.SIGTERM)
    assert stops_within(dev, 15) == 0
