"""The cost of one decision of the wasm example policy against its Python twin, same run.

    make -C examples policies
    .venv/bin/python examples/policies/wasm/bench_decision.py [--batches 60] [--calls 200]

A realistic function: a few thousand recorded arrivals and completions, 5 instances (2 idle,
3 busy, one of them with a queue). Batches of calls alternate between the two policies; the
script prints the median per-call cost of each (µs) and their ratio, for route and on_idle,
plus the wasm host's parts (building the input, and the two calls into wasm).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from policies.interface import BUSY, IDLE, FunctionView, InstanceView, RequestView
from policies.registry import load_policy

ROOT = Path(__file__).resolve().parents[3]
WASM = ROOT / "examples" / "build" / "policies" / "keep_warm.wasm"
TWIN = ROOT / "tests" / "test_policies_wasm.py"


def function_with_five_instances(now_ms: float) -> tuple[FunctionView, InstanceView]:
    fn = FunctionView("f", memory_mb=256.0)
    for i in range(3000):
        t = now_ms - 3000 * 200.0 + i * 200.0
        fn.stats.record_arrival(t)
        fn.stats.record_completion(t + 80.0, 80.0 + (i % 7), payload_bytes=1000 + i % 50)
    fn.stats.record_cold_start(300.0)
    for i in range(5):
        inst = InstanceView(i, fn, "n0", 256.0, 1, created_ms=now_ms - 60_000.0)
        inst.invocations = 100 + i
        if i < 3:
            inst.state, inst.active, inst.exec_started_ms = BUSY, 1, now_ms - 20.0 * (i + 1)
            if i == 2:
                inst.queue.extend(["a", "b"])
        else:
            inst.state, inst.idle_since_ms = IDLE, now_ms - 500.0 * i
            fn.idle.append(inst)
        fn.instances[i] = inst
    return fn, fn.instances[4]


def per_call_us(fn_call, calls: int) -> float:
    t = time.perf_counter_ns()
    for _ in range(calls):
        fn_call()
    return (time.perf_counter_ns() - t) / calls / 1000.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, default=60)
    ap.add_argument("--calls", type=int, default=200)
    args = ap.parse_args()
    if not WASM.is_file():
        raise SystemExit(f"{WASM} is missing: run `make -C examples policies` first")
    wasm = load_policy(f"wasm:{WASM}")
    twin = load_policy(f"custom:{TWIN}:KeepWarmTwin")
    now = 1_000_000.0
    fn, idle_inst = function_with_five_instances(now)
    request = RequestView(1, "f", now, payload_bytes=1024)
    assert wasm.route(now, request, fn) == twin.route(now, request, fn)
    assert wasm.on_idle(now, idle_inst, fn) == twin.on_idle(now, idle_inst, fn)
    duration = fn.stats.predict_duration(1024)
    values = wasm._input(now, fn, 1024, None, duration)

    cases = {
        "route wasm": lambda: wasm.route(now, request, fn),
        "route python": lambda: twin.route(now, request, fn),
        "on_idle wasm": lambda: wasm.on_idle(now, idle_inst, fn),
        "on_idle python": lambda: twin.on_idle(now, idle_inst, fn),
        "  host: build input": lambda: wasm._input(now, fn, 1024, None, duration),
        "  host: write + 2 wasm calls + read": lambda: wasm._decide("wl_route", values),
    }
    samples: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.batches):          # interleaved, so machine noise hits all alike
        for name, call in cases.items():
            samples[name].append(per_call_us(call, args.calls))
    med = {k: statistics.median(v) for k, v in samples.items()}
    print(f"one decision, 5 instances, median of {args.batches} batches x {args.calls} calls (µs per call):")
    for name, value in med.items():
        print(f"  {name:36s} {value:8.2f}")
    print(f"  route   wasm / python = {med['route wasm'] / med['route python']:.2f}x")
    print(f"  on_idle wasm / python = {med['on_idle wasm'] / med['on_idle python']:.2f}x")


if __name__ == "__main__":
    main()
