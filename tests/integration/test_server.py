"""The real process: serves on the embedded default, and on SIGTERM flips
readiness to 503 first, finishes in-flight requests, then exits 0."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx

from tests.support.postgres import free_port
from tests.support.processes import clean_env, wait_for_line

SERVER = Path(__file__).resolve().parent.parent / "support" / "slow_server.py"


def test_sigterm_drains_in_flight_requests_and_flips_readiness_first(tmp_path: Path) -> None:
    port = free_port()
    env = clean_env(tmp_path, APP_ENV="test", SECRET_KEY="x" * 48, LOG_FORMAT="json", SHUTDOWN_READINESS_DELAY="1.5")
    process = subprocess.Popen(
        [sys.executable, str(SERVER), str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen: list[str] = []
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_line(process, "Application startup complete", seen)
        assert httpx.get(f"{base}/health/ready").status_code == 200
        slow_result: dict[str, object] = {}

        def slow() -> None:
            response = httpx.get(f"{base}/slow", timeout=30)
            slow_result.update(status=response.status_code, body=response.text)

        worker = threading.Thread(target=slow)
        worker.start()
        wait_for_line(process, "slow_request_started", seen)

        process.send_signal(signal.SIGTERM)
        wait_for_line(process, "shutdown_requested", seen)
        ready = httpx.get(f"{base}/health/ready")
        assert ready.status_code == 503 and ready.json()["status"] == "draining"
        worker.join(timeout=30)
        assert slow_result == {"status": 200, "body": '{"finished":true}'}
        assert process.wait(timeout=30) == 0
        assert process.stdout is not None
        seen.append(process.stdout.read())
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
    output = "".join(seen)
    assert output.index("shutdown_requested") < output.index("Shutting down") < output.index("app_stopped")
