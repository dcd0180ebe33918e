"""Starts `custos server --dev` as a subprocess for the hvac suite."""
import os
import re
import socket
import subprocess
import time

import hvac
import pytest

ROOT = "hvac-root"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server():
    binary = os.environ.get("CUSTOS_BIN", os.path.join(os.path.dirname(__file__), "../../../target/debug/custos"))
    port = _free_port()
    proc = subprocess.Popen(
        [binary, "server", "--dev", "--dev-root-token-id", ROOT, "--dev-listen-address", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    unseal_key = None
    deadline = time.time() + 30
    while time.time() < deadline:
        line = proc.stdout.readline()
        m = re.match(r"Unseal Key:\s+(\S+)", line)
        if m:
            unseal_key = m.group(1)
        if line.startswith("export CUSTOS_ADDR"):
            break
    assert unseal_key, "dev server did not print its unseal key"
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield {"url": url, "root": ROOT, "unseal_key": unseal_key}
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture()
def root_client(server):
    return hvac.Client(url=server["url"], token=server["root"])
