"""The OpenAPI document, fuzzed with schemathesis against a real server: no 500 answers on generated input."""

from __future__ import annotations

import base64
import shutil
import subprocess
import sys
from pathlib import Path

import httpx

from omnithread.api.keys import KeyStore
from omnithread.privacy.secret import load_secret
from tests.conftest import Server, track


def test_no_server_errors_on_generated_input(tmp_path):
    store = KeyStore(tmp_path, load_secret(tmp_path))
    admin = store.create("admin", "fuzz", rate_per_second=1e6)[0]
    store.close()
    server = Server(tmp_path).start()
    st = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")
    try:
        auth = "Basic " + base64.b64encode(f"{admin}:".encode()).decode()
        for phase in ("empty log", "with events"):
            run = subprocess.run(
                [
                    st,
                    "run",
                    f"{server.url}/openapi.json",
                    "-H",
                    f"Authorization: {auth}",
                    "--checks",
                    "not_a_server_error",
                    "-n",
                    "25",
                    "--seed",
                    "7",
                ],
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert run.returncode == 0, f"{phase}:\n{run.stdout[-4000:]}"
            httpx.post(
                f"{server.url}/v1/batch", json={"batch": [track(i) for i in range(30)]}, headers={"Authorization": auth}
            )
    finally:
        server.stop()
