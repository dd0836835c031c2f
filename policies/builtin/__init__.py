"""The built-in policies, loaded by name through ``policies.registry.BUILTINS``:

- ``fixed_ttl`` (:class:`~policies.builtin.fixed_ttl.FixedTTL`): Lambda-like fixed keep-alive;
- ``hybrid_histogram`` (:class:`~policies.builtin.hybrid_histogram.HybridHistogram`):
  Shahrad et al., ATC 2020, idle-time histogram with pre-warming;
- ``faascache`` (:class:`~policies.builtin.faascache.FaasCache`): greedy-dual keep-alive;
- ``kpa`` (:class:`~policies.builtin.kpa.KPA`): a Knative-KPA-like concurrency autoscaler;
- ``default`` (:class:`~policies.builtin.default.ExpectedWait`): wl's default, queueing on a
  busy instance only when a high quantile of its remaining execution beats a cold start,
  with a cost-minimising keep-alive (and pre-warm) over each function's idle periods;
- ``oracle`` (:class:`~policies.builtin.oracle.Oracle`): the offline reference that knows the
  future (simulator only).

Each module is imported only when its policy is loaded.
"""
