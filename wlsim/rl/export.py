"""Export a trained stable-baselines3 policy to the framework-free artifact that
``policies.learned.LearnedPolicy`` runs with numpy (format described there).

Supported: PPO and MaskablePPO (the actor: mlp_extractor.policy_net + action_net; the
argmax of the logits is the deterministic action) and DQN (q_net; the argmax of the
Q-values). Only MLP policies over the flat observation (FlattenExtractor) are exported.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from policies.encoder import FeatureEncoder
from policies.learned import (
    ARTIFACT_FORMAT,
    ARTIFACT_VERSION,
    SPEC_FILE,
    WEIGHTS_FILE,
    ArtifactError,
    file_sha256,
)
from wlcommon.files import atomic_output, atomic_write


def _sequential_layers(modules: Any) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """(W, b, activation) for each Linear in a sequence of Linear and activation modules."""
    from torch import nn

    out: list[list[Any]] = []
    for m in modules:
        if isinstance(m, nn.Linear):
            out.append([m.weight.detach().cpu().numpy().astype(np.float32),
                        m.bias.detach().cpu().numpy().astype(np.float32), "linear"])
        elif isinstance(m, (nn.Tanh, nn.ReLU)):
            if not out or out[-1][2] != "linear":
                raise ArtifactError(f"cannot export: activation {type(m).__name__} without a Linear before it")
            out[-1][2] = "tanh" if isinstance(m, nn.Tanh) else "relu"
        elif isinstance(m, (nn.Identity, nn.Flatten)):
            continue
        else:
            raise ArtifactError(f"cannot export layer {type(m).__name__}: only Linear, Tanh and ReLU")
    return [tuple(x) for x in out]  # type: ignore[misc]


def network_layers(model: Any) -> tuple[list[tuple[np.ndarray, np.ndarray, str]], str]:
    """The deterministic decision network of an sb3 model as (W, b, activation) layers,
    and what it outputs ("logits" or "q_values")."""
    from stable_baselines3.common.torch_layers import FlattenExtractor

    policy = model.policy
    if hasattr(policy, "q_net"):  # DQN
        if not isinstance(policy.q_net.features_extractor, FlattenExtractor):
            raise ArtifactError("cannot export: DQN with a custom features extractor")
        return _sequential_layers(policy.q_net.q_net), "q_values"
    if hasattr(policy, "mlp_extractor") and hasattr(policy, "action_net"):  # (Maskable)PPO, A2C
        fe = policy.pi_features_extractor if not policy.share_features_extractor else policy.features_extractor
        if not isinstance(fe, FlattenExtractor):
            raise ArtifactError("cannot export: a policy with a custom features extractor")
        layers = _sequential_layers(policy.mlp_extractor.policy_net)
        layers += _sequential_layers([policy.action_net])
        return layers, "logits"
    raise ArtifactError(f"cannot export policy type {type(policy).__name__}")


def export_model(model: Any, encoder: FeatureEncoder, out_dir: str | Path,
                 training: dict[str, Any] | None = None) -> Path:
    """Write spec.json + weights.npz for ``model`` into ``out_dir`` (created; existing
    artifact files replaced). Written to temporary names first, so a failed export never
    leaves a half-written artifact behind."""
    layers, output = network_layers(model)
    n_in = encoder.n_features
    if layers[0][0].shape[1] != n_in or layers[-1][0].shape[0] != encoder.n_actions:
        raise ArtifactError(f"model maps {layers[0][0].shape[1]} -> {layers[-1][0].shape[0]} but the encoder "
                            f"has {n_in} features and {encoder.n_actions} actions")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    layer_specs = []
    for i, (w, b, act) in enumerate(layers):
        arrays[f"W{i}"], arrays[f"b{i}"] = w, b
        layer_specs.append({"in": int(w.shape[1]), "out": int(w.shape[0]), "activation": act})
    with atomic_output(out / WEIGHTS_FILE) as tmp_weights:
        with open(tmp_weights, "wb") as f:  # a file object: np.savez would append .npz to a name
            np.savez(f, **arrays)
        spec = {
            "format": ARTIFACT_FORMAT,
            "format_version": ARTIFACT_VERSION,
            "encoder": encoder.spec.to_dict(),
            "actions": encoder.actions.names,
            "feature_names": encoder.feature_names,
            "network": {"layers": layer_specs, "output": output},
            "weights_sha256": file_sha256(tmp_weights),
            "training": training or {},
        }
    atomic_write(out / SPEC_FILE, json.dumps(spec, indent=2, sort_keys=False) + "\n")
    return out


ENCODER_FILE = "encoder.json"


def find_encoder_spec(model_path: str | Path) -> Path | None:
    """The encoder.json train() writes into its output folder, found from a model or
    checkpoint path (the run folder or its checkpoints/ subfolder)."""
    p = Path(model_path).resolve()
    for folder in (p.parent, p.parent.parent):
        if (folder / ENCODER_FILE).is_file():
            return folder / ENCODER_FILE
    return None


def export_checkpoint(model_path: str | Path, out_dir: str | Path, encoder_spec: str | Path | None = None,
                      training: dict[str, Any] | None = None) -> Path:
    """Export an sb3 model or checkpoint (.zip) saved by ``wl train``; the encoder spec comes
    from ``encoder_spec`` (a JSON file) or the run's encoder.json."""
    from policies.encoder import EncoderSpec

    model_path = Path(model_path)
    if not model_path.is_file():
        raise ArtifactError(f"model file not found: {model_path}")
    spec_path = Path(encoder_spec) if encoder_spec is not None else find_encoder_spec(model_path)
    if spec_path is None:
        raise ArtifactError(f"no {ENCODER_FILE} next to {model_path} or in its run folder; pass the encoder spec")
    try:
        encoder = FeatureEncoder(EncoderSpec.from_dict(json.loads(Path(spec_path).read_text())))
    except (OSError, ValueError, TypeError) as e:
        raise ArtifactError(f"{spec_path}: not a valid encoder spec: {e}") from None
    algo, Algo = _algorithm_of(model_path)
    model = Algo.load(model_path, device="cpu")
    meta = {"exported_from": str(model_path), "algo": algo, **(training or {})}
    return export_model(model, encoder, out_dir, training=meta)


def _algorithm_of(model_path: Path) -> tuple[str, type]:
    """The stable-baselines3 algorithm that saved ``model_path`` (its ``wl train --algo`` name and
    class), told by the policy class the file deserializes to (each algorithm declares the
    policy classes it trains)."""
    import zipfile

    from sb3_contrib import MaskablePPO
    from stable_baselines3 import DQN, PPO
    from stable_baselines3.common.save_util import load_from_zip_file

    try:
        data, _, _ = load_from_zip_file(model_path, device="cpu")
    except (zipfile.BadZipFile, KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ArtifactError(f"{model_path}: not a stable-baselines3 model file: {e}") from None
    policy = (data or {}).get("policy_class")
    # most specific first: MaskablePPO's policies are actor-critic policies too
    for name, algo in (("maskable_ppo", MaskablePPO), ("dqn", DQN), ("ppo", PPO)):
        if isinstance(policy, type) and any(issubclass(policy, known) for known in algo.policy_aliases.values()):
            return name, algo
    raise ArtifactError(f"{model_path}: a model of policy {getattr(policy, '__name__', policy)!r}, "
                        "not one wl trains (MaskablePPO, PPO or DQN)")
