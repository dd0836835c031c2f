"""The learned (imitation) policy decides the same live and simulated when the live requests
carry what ``wl load`` sends: the synthetic function's payloads.

The simulator replays a trace without payloads (size 0); the router sees the driver's requests
("<duration_ms> <touch_mb> <mode>"). The platform's duration estimate (``DurationPredictor``)
fits duration on payload size, and the learned policy reads it (its predicted-duration
feature), so payload sizes that vary with the duration's digits gave the router a slope the
simulator never saw. The driver now pads them to one size (``synthetic_payloads``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_parity import compare, whole_ms_trace

from policies.features import FunctionStats
from policies.registry import load_policy
from wl.loop.load import SYNTHETIC_PAYLOAD_BYTES, synthetic_payloads

pytestmark = pytest.mark.unit

AZURE40 = Path(__file__).resolve().parents[1] / "examples" / "learned" / "azure40"


def test_synthetic_payloads_have_one_size_and_say_what_the_row_asks() -> None:
    durations = np.array([0.0, 1.5, 12.345, 999.999, 123456.789, 900000.0])
    payloads = synthetic_payloads(durations, np.full(durations.size, 3.5), "busy")
    assert {len(p) for p in payloads} == {SYNTHETIC_PAYLOAD_BYTES}
    assert [p.split() for p in payloads][2] == [b"12.345", b"3.5", b"busy"]


@pytest.mark.parametrize("seed", [9, 12])
def test_the_learned_policy_decides_the_same_with_the_drivers_payloads_live(seed: int) -> None:
    trace = whole_ms_trace(seed, n=400)
    # durations spanning 1-4 digits before the point, as a trace slice's do
    payloads = synthetic_payloads(trace["duration_ms"], np.full(len(trace), 4.0), "sleep")
    assert len({len(p) for p in payloads}) == 1
    compare(trace, lambda: load_policy(f"learned:{AZURE40}"), payloads=payloads)


def test_a_policy_swap_with_fresh_statistics_forgets_the_warm_up_traffic() -> None:
    # wl fidelity warms the platform up under the run's function names (the node's per-function
    # state must be warm), then swaps the policy: the warm-up's arrivals, 20 ms durations and
    # first cold starts stayed in the statistics the learned policy reads, which the simulator,
    # starting the trace fresh, never has
    import asyncio

    import httpx

    from wlruntime.router.server import create_app
    from wlruntime.router.virtual import VirtualPlatform

    async def main() -> tuple[list[int], list[int], list[float]]:
        platform = await VirtualPlatform.create(load_policy("fixed_ttl:ttl_ms=1"), ["node0"], 4096.0,
                                                duration_ms=lambda invoke: 20.0, cold_start_ms=lambda name: 5.0)
        for name in ("a", "b"):
            platform.deploy(name, {"memory_mb": 128})
        await platform.run((10.0 * k, k, "ab"[k % 2], b"", None) for k in range(20))
        fns = platform.router.functions
        before = [fns[name].stats.arrivals for name in "ab"]
        app = create_app(platform.router, admin_token="secret")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://router") as http:
            headers = {"Authorization": "Bearer secret"}
            kept = await http.put("/admin/policy", json={"spec": "default"}, headers=headers)
            assert kept.status_code == 200 and [fns[name].stats.arrivals for name in "ab"] == before
            fresh = await http.put("/admin/policy", json={"spec": f"learned:{AZURE40}", "fresh_statistics": True},
                                   headers=headers)
            assert fresh.status_code == 200, fresh.text
        return before, [fns[name].stats.arrivals for name in "ab"], [fns[name].stats.cold_start_ms for name in "ab"]

    before, after, cold = asyncio.run(main())
    assert before == [10, 10]
    assert after == [0, 0] and cold == [FunctionStats().cold_start_ms] * 2
