"""The platform model's ``Spawn(evict=[...])`` hook (wlmodel.platform): a route answer that names
idle instances to kill before the spawn, checked like every answer, and FaasCache's hard memory
cap built on it. The model is driven directly by a minimal driver that records its effects."""

from __future__ import annotations

from typing import Any

import pytest

from policies.builtin.faascache import FaasCache
from policies.interface import BUSY, DEAD, IDLE, Policy, RequestView, Spawn
from wlmodel.platform import Platform, PolicyAnswerError
from wlmodel.records import Function, Node

pytestmark = pytest.mark.unit


class Recorder(Platform):
    """A driver that carries out nothing and records every effect, in order."""

    def __init__(self, policy: Policy, *, on_bad_answer: Any = "raise", nodes: int = 1,
                 node_mb: float = 1e9) -> None:
        super().__init__(policy, on_bad_answer=on_bad_answer)
        self.effects: list[tuple] = []
        self.requests = 0
        for k in range(nodes):
            self.add_node(Node(f"node{k}", node_mb))

    def emit_execute(self, inst, req, now):
        self.effects.append(("execute", inst.id, req))

    def emit_spawn(self, inst, req, now):
        self.effects.append(("spawn", inst.id, req))

    def emit_kill(self, inst, now):
        self.effects.append(("kill", inst.id))

    def emit_keep_alive(self, inst, until):
        self.effects.append(("keep_alive", inst.id, until))

    def emit_reject(self, req, now, reason, retry_after_ms):
        self.effects.append(("reject", req, str(reason)))

    def emit_prewarm_timer(self, f, at):
        f.prewarm_handle = at

    def request_view(self, req, f):
        return RequestView(req, f.name, 0.0)

    # ---- what a driver does when the outside world moves
    def call(self, f: Function, now: float) -> int:
        self.requests += 1
        self.arrive(f, self.requests, now)
        return self.requests

    def idle_instance(self, f: Function, now: float):
        """A started, executed and idle instance of ``f`` (the policy keeps it)."""
        req = self.call(f, now)
        inst = next(i for i in f.instances.values() if i.queue and i.queue[0] == req)
        self.instance_ready(inst, now + 1, cold_start_ms=f.cold_start_ms)   # priorities stay simple
        self.end_execution(inst, req, now + 2, busy_ms=1.0)
        assert inst.state is IDLE
        return inst

    def used_mb(self) -> float:
        return sum(n.used_mb for n in self.nodes)


class Scripted(Policy):
    """Answers route with what the test sets in ``answer`` (once), else the base policy;
    keeps idle instances (an hour)."""

    def __init__(self) -> None:
        self.answer: Any = None

    def route(self, now_ms, request, fn):
        answer, self.answer = self.answer, None
        return answer if answer is not None else super().route(now_ms, request, fn)

    def on_idle(self, now_ms, instance, fn):
        from policies.interface import INVOKE, KeepAlive
        return INVOKE if instance.queue else KeepAlive(3_600_000.0)


def functions(*specs: tuple[str, float]) -> list[Function]:
    return [Function(name, memory_mb=mb, cold_start_ms=100.0) for name, mb in specs]


def test_spawn_with_evict_kills_the_named_idle_instances_before_the_spawn():
    p = Scripted()
    m = Recorder(p, nodes=2)
    a, b, c = functions(("a", 256), ("b", 512), ("c", 1024))
    ia, ib = m.idle_instance(a, 0), m.idle_instance(b, 10)
    assert ia.node != ib.node                    # the victims may be on any node
    m.effects.clear()
    p.answer = Spawn(evict=[ib, ia])
    req = m.call(c, 20)
    assert m.effects[:2] == [("kill", ib.id), ("kill", ia.id)]      # in the answer's order, first
    assert m.effects[2][0] == "spawn" and m.effects[2][2] == req
    assert ia.state is DEAD and ib.state is DEAD and ia.evicted and ib.evicted
    assert m.used_mb() == 1024
    assert not a.instances and not b.instances and len(c.instances) == 1


@pytest.mark.parametrize("victim", ["busy", "dead", "foreign", "twice", "not an instance"])
def test_an_evict_list_naming_anything_but_live_idle_instances_is_an_invalid_answer(victim):
    p = Scripted()
    m = Recorder(p)
    a, b, c = functions(("a", 256), ("b", 256), ("c", 256))
    ia = m.idle_instance(a, 0)
    ib = m.idle_instance(b, 10)
    if victim == "busy":
        m.call(b, 15)                            # ib runs it
        assert ib.state is BUSY
        named = [ia, ib]
    elif victim == "dead":
        m.kill(ib, 15)
        named = [ia, ib]
    elif victim == "foreign":                    # an idle instance of another platform
        other = Recorder(Scripted())
        named = [ia, other.idle_instance(Function("b", memory_mb=256), 0)]
    elif victim == "twice":
        named = [ia, ia]
    else:
        named = [ia, ib.id]
    m.effects.clear()
    p.answer = Spawn(evict=named)
    with pytest.raises(PolicyAnswerError, match="evict"):
        m.call(c, 20)
    assert ia.state is IDLE and not any(e[0] == "kill" for e in m.effects)   # nothing half done


def test_live_an_invalid_evict_list_falls_back_to_the_base_policy_and_is_counted():
    p = Scripted()
    failures: list[tuple] = []
    m = Recorder(p, on_bad_answer="fallback")
    m.policy_failed = lambda decision, problem: failures.append((decision, str(problem)))
    a, b = functions(("a", 256), ("b", 256))
    ia = m.idle_instance(a, 0)
    m.call(a, 5)                                 # ia is busy now
    m.effects.clear()
    p.answer = Spawn(evict=[ia])
    req = m.call(b, 10)
    assert m.fallbacks == {"route": 1} and failures[0][0] == "route" and "idle" in failures[0][1]
    assert ia.state is BUSY                      # not killed
    assert [e[0] for e in m.effects] == ["spawn"] and m.effects[0][2] == req   # the base policy's SPAWN


# ----------------------------------------------------------------------------- FaasCache's cap

def test_faascache_cap_evicts_lowest_priority_first_and_memory_never_passes_it():
    cap = 1024.0
    m = Recorder(FaasCache(memory_cap_mb=cap))
    rare, hot = functions(("rare", 256), ("hot", 256))      # priority 100 ms / 256 MB per call
    big = Function("big", memory_mb=512, cold_start_ms=1000.0)  # 1000 ms / 512 MB: dearer to lose
    ir = m.idle_instance(rare, 0)
    ih = m.idle_instance(hot, 10)
    for t in (20, 30, 40):                       # hot is used more: higher priority
        m.call(hot, t)
        m.end_execution(ih, m.requests, t + 1, busy_ms=1.0)
    ib = m.idle_instance(big, 50)
    assert m.used_mb() == cap                    # full, all idle
    other = Function("other", memory_mb=256, cold_start_ms=100.0)
    m.effects.clear()
    m.call(other, 60)                            # needs 256 MB: rare (lowest priority) goes
    assert m.effects[0] == ("kill", ir.id) and ir.evicted
    assert m.used_mb() == cap and ih.state is IDLE and ib.state is IDLE
    peak = m.used_mb()
    m.effects.clear()
    for k in range(20):                          # churn: every new function must evict
        f = Function(f"g{k}", memory_mb=128.0 * (1 + k % 4), cold_start_ms=100.0)
        m.idle_instance(f, 100 + 10 * k)
        peak = max(peak, m.used_mb())
    assert peak <= cap
    kinds = [e[0] for e in m.effects]
    assert "reject" not in kinds and kinds.count("kill") >= 10   # room was always made by evicting


def test_faascache_cap_rejects_when_every_instance_is_busy():
    m = Recorder(FaasCache(memory_cap_mb=512.0, retry_after_ms=500.0))
    a, b = functions(("a", 256), ("b", 512))
    m.call(a, 0)
    m.call(a, 1)                                 # two starting instances of a: 512 MB, none idle
    m.effects.clear()
    req = m.call(b, 2)
    assert m.effects == [("reject", req, "policy")]
    assert m.used_mb() == 512.0
