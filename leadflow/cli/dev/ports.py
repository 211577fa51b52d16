"""Every port `leadflow dev` needs, checked before anything starts, and the development mail catcher."""

from __future__ import annotations

import contextlib
import errno
import smtplib
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from leadflow.cli.dev.mailcatcher import MailCatcher
from leadflow.cli.dev.processes import StartFailed, temporal_host_port, temporal_ui_port
from leadflow.platform.settings import Settings

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _bound_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port the way servers bind (SO_REUSEADDR: a port a previous run left in
    TIME_WAIT is free, one another program listens on is not). Raises OSError."""
    family, kind, protocol, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, protocol)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def _port_free(host: str, port: int) -> bool:
    try:
        _bound_socket(host, port).close()
    except OSError:
        return False
    return True


def _any_free_port(host: str) -> int:
    with _bound_socket(host, 0) as sock:
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class _Port:
    """A port `leadflow dev` listens on, and the setting that moves it."""

    what: str
    host: str
    port: int
    setting: str
    value: Callable[[int], str]  # the setting's value that puts it on another port

    def refusal(self, error: OSError, holder: str = "another program") -> StartFailed:
        if error.errno != errno.EADDRINUSE:
            reason = error.strerror or str(error)
            return StartFailed(
                f"cannot listen on {_host_port(self.host, self.port)} ({self.what}): {reason}; check {self.setting}"
            )
        free = next(
            (port for port in range(self.port + 1, self.port + 100) if _port_free(self.host, port)), None
        )
        move = f"set {self.setting}={self.value(free)} (free now)" if free else f"move it with {self.setting}"
        return StartFailed(f"port {self.port} ({self.what}) is in use by {holder}: stop it, or {move}")


@dataclass(frozen=True)
class _Mail:
    """Where email goes: the mail catcher to start (host, port), or none, and the banner's line for it."""

    catcher: tuple[str, int] | None
    banner: str


def _answers_smtp(host: str, port: int) -> bool:
    """Whether an SMTP server greets at host:port (Mailpit, a company relay, a test sink)."""
    try:
        with smtplib.SMTP(host, port, timeout=3) as server:
            server.noop()
    except (OSError, smtplib.SMTPException):
        return False
    return True


def _catcher_port(host: str, port: int) -> _Port:
    return _Port(
        "the mail catcher", host, port, "LEADFLOW_SMTP_URL", lambda free: f"smtp://{_host_port(host, free)}"
    )


def _mail_plan(settings: Settings) -> _Mail:
    """The mail catcher when LEADFLOW_SMTP_URL names a free local port; else the server it names, which
    `leadflow dev` sends to as it is (an SMTP server already answering on a local port included)."""
    smtp = urlsplit(settings.smtp_url)
    host = smtp.hostname or "127.0.0.1"
    port = smtp.port or (465 if smtp.scheme == "smtps" else 25)
    where = _host_port(host, port)
    if smtp.scheme != "smtp" or host not in LOCAL_HOSTS:
        return _Mail(None, f"sent to {where} (LEADFLOW_SMTP_URL); no mail catcher")
    try:
        _bound_socket(host, port).close()
    except OSError as error:
        if error.errno == errno.EADDRINUSE and _answers_smtp(host, port):
            return _Mail(None, f"your SMTP server at {where} answers: email goes there (no mail catcher)")
        raise _catcher_port(host, port).refusal(error, "a program that does not answer SMTP") from None
    return _Mail((host, port), f"smtp://{where}   list: leadflow mail")


@dataclass
class DevPorts:
    """What the checks before the start found: the API's socket (held from the check on, so no other program
    takes the port meanwhile), the Temporal UI's port and where email goes."""

    api: socket.socket
    temporal_ui: int
    temporal_ui_taken: int | None  # the UI's usual port, when another program holds it
    mail: _Mail


def claim_ports(settings: Settings) -> DevPorts:
    """Checks every port `leadflow dev` needs, before anything starts. StartFailed names each one taken."""
    problems: list[str] = []
    api: socket.socket | None = None
    try:
        api = _bound_socket(settings.api_host, settings.api_port)
        api.listen(2048)
    except OSError as error:
        if api is not None:
            api.close()
            api = None
        api_port = _Port("the API", settings.api_host, settings.api_port, "LEADFLOW_API_PORT", str)
        problems.append(str(api_port.refusal(error)))
    host, port = temporal_host_port(settings)
    try:
        _bound_socket(host, port).close()
    except OSError as error:
        temporal = _Port(
            "the Temporal dev server",
            host,
            port,
            "LEADFLOW_TEMPORAL_ADDRESS",
            lambda free: _host_port(host, free),
        )
        problems.append(str(temporal.refusal(error)))
    ui, ui_taken = temporal_ui_port(settings), None
    if not _port_free(host, ui):
        ui, ui_taken = _any_free_port(host), ui
    try:
        mail = _mail_plan(settings)
    except StartFailed as problem:
        problems.append(str(problem))
    if problems or api is None:
        if api is not None:
            api.close()
        raise StartFailed("\n".join(problems))
    return DevPorts(api, ui, ui_taken, mail)


@contextlib.contextmanager
def _mail_catcher(settings: Settings, mail: _Mail) -> Iterator[None]:
    if mail.catcher is None:
        yield
        return
    catcher = MailCatcher(settings.data_dir / "mail", *mail.catcher)
    try:
        catcher.start()
    except OSError as error:  # taken between the check and now
        raise _catcher_port(*mail.catcher).refusal(error) from None
    try:
        yield
    finally:
        catcher.stop()
