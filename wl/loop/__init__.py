"""The live loop: drive a trace against the live platform (``load``), fit a platform profile for
the simulator from what happened (``calibrate``), and compare the two (``fidelity``); a live
run rebuilt as a simulator result, so ``wlsim.metrics`` summarises it (``live``).

This package is glue: it imports both ``wlsim`` and ``wlruntime`` (which never import each
other). See README "The live loop" and DESIGN.md.
"""
