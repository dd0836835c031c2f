"""The learned policy: an exported network evaluated with numpy alone (no torch).

An artifact is a folder with two files, written by ``wlsim.rl.export``:

  spec.json    {"format": "wl-learned-policy", "format_version": 1,
                "encoder": <EncoderSpec fields>, "actions": [action names],
                "network": {"layers": [{"in": D, "out": H, "activation": "tanh"}, ...,
                                       {"in": H, "out": A, "activation": "linear"}],
                            "output": "logits" | "q_values"},
                "weights_sha256": <sha256 of weights.npz>, "training": {...metadata}}
  weights.npz  W0, b0, W1, b1, ... (layer i maps x -> act(x @ W_i.T + b_i), torch's layout)

Format 2 with ``"kind": "keepalive-imitation"`` is the imitation-learned keep-alive policy
(``policies.imitation``: its features and bin edges instead of the encoder and actions);
``LearnedPolicy.load`` returns that policy for such an artifact.

At a decision point the policy encodes the view with ``policies.encoder.FeatureEncoder``,
runs the MLP and takes the masked argmax. Idle points with a single valid action (invoke
when requests are queued on the instance; kill when its keep-alive ran out, see
EncoderSpec.reconsider_on_expiry) skip the network.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from policies.encoder import EncoderSpec, FeatureEncoder
from policies.interface import (
    FunctionView,
    IdleDecision,
    InstanceView,
    Policy,
    RequestView,
    RouteDecision,
)

ARTIFACT_FORMAT = "wl-learned-policy"
ARTIFACT_VERSION = 1
SPEC_FILE = "spec.json"
WEIGHTS_FILE = "weights.npz"


class ArtifactError(ValueError):
    """A learned-policy artifact that is missing, corrupt or inconsistent; the message says which."""


def _tanh(x: np.ndarray) -> np.ndarray:
    return np.tanh(x)


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def _identity(x: np.ndarray) -> np.ndarray:
    return x


ACTIVATIONS = {"tanh": _tanh, "relu": _relu, "linear": _identity}


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class LearnedPolicy(Policy):
    """Masked argmax of an exported MLP over the encoder's observation."""

    name: ClassVar[str] = "learned"

    def __init__(self, encoder: FeatureEncoder, weights: list[tuple[np.ndarray, np.ndarray]],
                 activations: list[str], meta: dict[str, Any] | None = None, path: str | None = None) -> None:
        if len(weights) != len(activations):
            raise ArtifactError(f"{len(weights)} layers but {len(activations)} activations")
        self.encoder = encoder
        # float64 for the forward pass: at least as precise as torch's float32.
        self.layers = [(np.ascontiguousarray(w, dtype=np.float64).T.copy(),
                        np.asarray(b, dtype=np.float64)) for w, b in weights]
        try:
            self.activations = [ACTIVATIONS[a] for a in activations]
        except KeyError as e:
            raise ArtifactError(f"unknown activation {e.args[0]!r}; known: {sorted(ACTIVATIONS)}") from None
        self.activation_names = list(activations)
        self.meta = meta or {}
        self.path = path
        self._decisions = 0

    # ----------------------------------------------------------------- loading
    @classmethod
    def load(cls, path: str | Path, **params: Any) -> Policy:
        """Load an artifact folder (or its spec.json). Raises ArtifactError naming the
        file and what is wrong."""
        if params:
            raise ArtifactError(f"learned policy takes no parameters, got {sorted(params)}")
        folder = Path(path)
        if folder.is_file() and folder.name == SPEC_FILE:
            folder = folder.parent
        if not folder.exists():
            raise ArtifactError(f"learned policy artifact not found: {folder}")
        if not folder.is_dir():
            raise ArtifactError(f"learned policy artifact must be a folder with {SPEC_FILE} and "
                                f"{WEIGHTS_FILE}: {folder}")
        spec_path, weights_path = folder / SPEC_FILE, folder / WEIGHTS_FILE
        for p in (spec_path, weights_path):
            if not p.is_file():
                raise ArtifactError(f"learned policy artifact {folder}: missing {p.name}")
        try:
            spec = json.loads(spec_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ArtifactError(f"{spec_path}: not valid JSON: {e}") from None
        if not isinstance(spec, dict) or spec.get("format") != ARTIFACT_FORMAT:
            raise ArtifactError(f"{spec_path}: not a wl learned-policy spec (field 'format' must be "
                                f"{ARTIFACT_FORMAT!r})")
        if spec.get("kind") == "keepalive-imitation" and spec.get("format_version") == 2:
            return cls._load_imitation(spec, spec_path, weights_path, folder)  # type: ignore[return-value]
        if spec.get("format_version") != ARTIFACT_VERSION:
            raise ArtifactError(f"{spec_path}: format_version {spec.get('format_version')!r} "
                                f"not supported (expected {ARTIFACT_VERSION})")
        for key in ("encoder", "actions", "network"):
            if key not in spec:
                raise ArtifactError(f"{spec_path}: missing field {key!r}")
        want_sha = spec.get("weights_sha256")
        if want_sha is not None and file_sha256(weights_path) != want_sha:
            raise ArtifactError(f"{weights_path}: sha256 does not match spec.json's weights_sha256 "
                                f"(file corrupt or from another export)")
        try:
            encoder = FeatureEncoder(EncoderSpec.from_dict(spec["encoder"]))
        except (TypeError, ValueError) as e:
            raise ArtifactError(f"{spec_path}: field 'encoder': {e}") from None
        if list(spec["actions"]) != encoder.actions.names:
            raise ArtifactError(f"{spec_path}: field 'actions' {spec['actions']} does not match the "
                                f"encoder's action map {encoder.actions.names}")
        layers = spec["network"].get("layers") if isinstance(spec["network"], dict) else None
        if not isinstance(layers, list) or not layers:
            raise ArtifactError(f"{spec_path}: field 'network.layers' must be a non-empty list")
        try:
            with np.load(weights_path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:  # all mean "not a readable npz"
            raise ArtifactError(f"{weights_path}: not a readable .npz file: {type(e).__name__}: {e}") from None
        weights: list[tuple[np.ndarray, np.ndarray]] = []
        acts: list[str] = []
        expect_in = encoder.n_features
        for i, layer in enumerate(layers):
            w, b = arrays.get(f"W{i}"), arrays.get(f"b{i}")
            if w is None or b is None:
                raise ArtifactError(f"{weights_path}: missing array W{i} or b{i} (network has {len(layers)} layers)")
            n_in, n_out = layer.get("in"), layer.get("out")
            if w.shape != (n_out, n_in) or b.shape != (n_out,) or n_in != expect_in:
                raise ArtifactError(
                    f"{weights_path}: layer {i} has W{w.shape} b{b.shape}; spec says in={n_in} out={n_out} "
                    f"and the previous layer gives {expect_in}")
            if not (np.all(np.isfinite(w)) and np.all(np.isfinite(b))):
                raise ArtifactError(f"{weights_path}: layer {i} has non-finite weights")
            weights.append((w, b))
            acts.append(layer.get("activation", "linear"))
            expect_in = n_out
        if expect_in != encoder.n_actions:
            raise ArtifactError(f"{spec_path}: the network outputs {expect_in} values but the encoder has "
                                f"{encoder.n_actions} actions")
        if acts[-1] != "linear":
            raise ArtifactError(f"{spec_path}: the last layer must be linear (logits), got {acts[-1]!r}")
        return cls(encoder, weights, acts, meta=spec.get("training", {}), path=str(folder))

    @staticmethod
    def _load_imitation(spec: dict[str, Any], spec_path: Path, weights_path: Path, folder: Path) -> Policy:
        """A format 2 artifact of kind keepalive-imitation (policies.imitation)."""
        from policies.imitation import ImitationPolicy

        want_sha = spec.get("weights_sha256")
        if want_sha is not None and file_sha256(weights_path) != want_sha:
            raise ArtifactError(f"{weights_path}: sha256 does not match spec.json's weights_sha256 "
                                f"(file corrupt or from another export)")
        try:
            with np.load(weights_path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise ArtifactError(f"{weights_path}: not a readable .npz file: {type(e).__name__}: {e}") from None
        try:
            return ImitationPolicy.from_spec(spec, arrays, str(folder))
        except (KeyError, TypeError) as e:
            raise ArtifactError(f"{spec_path}: malformed network spec: {e}") from None

    # ----------------------------------------------------------------- network
    def logits(self, obs: np.ndarray) -> np.ndarray:
        """Network output for one observation (or a batch, shape (n, D))."""
        h = np.asarray(obs, dtype=np.float64)
        for (wt, b), act in zip(self.layers, self.activations):
            h = act(h @ wt + b)
        return h

    def act(self, obs: np.ndarray, mask: np.ndarray) -> int:
        """Masked argmax (the first of equal maxima, like torch.argmax)."""
        out = self.logits(obs)
        return int(np.argmax(np.where(mask, out, -np.inf)))

    # ----------------------------------------------------------------- policy
    def route(self, now_ms: float, request: RequestView, fn: FunctionView) -> RouteDecision:
        obs, mask, cands = self.encoder.encode_route(now_ms, request, fn)
        self._decisions += 1
        return self.encoder.decode(self.act(obs, mask), cands)  # type: ignore[return-value]

    def on_idle(self, now_ms: float, instance: InstanceView, fn: FunctionView) -> IdleDecision:
        forced = self.encoder.forced_idle(now_ms, instance)
        if forced is not None:
            return forced  # a single valid action (the encoder's mask says so too)
        obs, mask = self.encoder.encode_idle(now_ms, instance, fn)
        self._decisions += 1
        return self.encoder.decode(self.act(obs, mask))  # type: ignore[return-value]

    @property
    def n_weights(self) -> int:
        """The network's size (weights and biases): what its decision's cost grows with."""
        return sum(w.size + b.size for w, b in self.layers)

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "path": self.path,
                             "layers": [int(w.shape[1]) for w, _ in self.layers]}
        for key in ("algo", "lambda_gb_s", "steps", "seed", "trace"):
            if key in self.meta:
                d[key] = self.meta[key]
        return d
