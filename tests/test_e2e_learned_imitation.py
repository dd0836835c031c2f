"""The bundled imitation-learned policies (examples/learned/azure40 and its fewer-cold-starts
operating point azure40-fewer-cold, numpy only) decide in the live router: warm and cold
requests are served, and after an execution it answers keep-alive decisions (the instance
stays idle and serves the next request warm)."""

from __future__ import annotations

from pathlib import Path

import pytest

from wl.testing import PlatformClient, start_platform

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "examples" / "build"
ARTIFACTS = ROOT / "examples" / "learned"


@pytest.mark.parametrize("artifact", ["azure40", "azure40-fewer-cold"])
def test_bundled_imitation_policy_decides_live(tmp_path: Path, request: pytest.FixtureRequest, artifact: str) -> None:
    platform = start_platform(tmp_path / "wl", policy=f"learned:{ARTIFACTS / artifact}",
                              cache_dir=request.config.cache.mkdir("wl-node-cache"))
    try:
        wl = PlatformClient(platform)
        assert wl.policy()["name"] == "learned"
        wl.deploy("echo", BUILD / "echo.wasm", {"memory_mb": 16})
        first = wl.invoke("echo", b"one")
        assert first.status == 200 and first.output == b"one" and first.cold
        # the network's keep-alive after that execution (at least its shortest rung, 825 ms,
        # for a function whose cold start is far longer than its gap) keeps the instance warm
        second = wl.invoke("echo", b"two")
        assert second.status == 200 and second.output == b"two"
        assert not second.cold
        outputs = [wl.invoke("echo", f"{i}".encode()).output for i in range(10)]
        assert outputs == [f"{i}".encode() for i in range(10)]
    finally:
        platform.stop()
