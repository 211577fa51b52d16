"""`leadflow dev`: the whole embedded stack in one command.

A Temporal dev server (SQLite file under the data folder, so workflows survive restarts), the worker and
outbox router, the HTTP API and a mail catcher, in one process tree. Every port it needs is checked before
anything starts: a taken one stops it with one line naming the setting that moves it (only the Temporal UI
moves by itself). The banner is printed once everything answers. Ctrl-C or SIGTERM stops everything it
started, in whatever state it is; a second one kills what is left at once. Starting again resumes where it
stopped.

Modules: `processes` (the Temporal dev server and worker processes), `ports` (every port checked before
anything starts, the mail catcher), `seeding` (the development key and demo leads) and `stack` (the run).
"""

from leadflow.cli.dev.ports import LOCAL_HOSTS, DevPorts, claim_ports
from leadflow.cli.dev.processes import (
    StartFailed,
    connect_when_ready,
    kill_running_processes,
    temporal_cli,
    temporal_dev_server,
    temporal_dev_server_command,
    temporal_host_port,
    temporal_ui_port,
    worker_processes,
)
from leadflow.cli.dev.seeding import DEV_KEY, DEV_KEY_NAME, seed_demo, seed_dev_key
from leadflow.cli.dev.stack import console, run_dev, with_dev_vapid_key

__all__ = [
    "DEV_KEY",
    "DEV_KEY_NAME",
    "LOCAL_HOSTS",
    "DevPorts",
    "StartFailed",
    "claim_ports",
    "connect_when_ready",
    "console",
    "kill_running_processes",
    "run_dev",
    "seed_demo",
    "seed_dev_key",
    "temporal_cli",
    "temporal_dev_server",
    "temporal_dev_server_command",
    "temporal_host_port",
    "temporal_ui_port",
    "with_dev_vapid_key",
    "worker_processes",
]
