"""Find a policy by spec string, the same way in the simulator and the live router.

Spec grammar (one policy):
  NAME[:key=value[:key=value...]]       a built-in, e.g. ``fixed_ttl:ttl_ms=60000``
  custom:PATH.py[:ClassName][:key=value...]   a user's Python file (the class defaults to the
                                        only Policy subclass defined in the file)
  learned:PATH[:key=value...]           an exported learned-policy artifact (a folder)
  wasm:PATH.wasm[:key=value...]         a sandboxed WebAssembly module (ABI wl-policy v1, see
                                        policies/wasm.py); parameters memory_mb, fuel
Values are parsed as int, float, true/false, else kept as strings.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from pathlib import Path
from typing import Any

from policies.interface import Policy, PolicySpecError

# name -> "module:Class"; imported lazily so loading one policy never imports the others.
BUILTINS: dict[str, str] = {
    "fixed_ttl": "policies.builtin.fixed_ttl:FixedTTL",
    "hybrid_histogram": "policies.builtin.hybrid_histogram:HybridHistogram",
    "faascache": "policies.builtin.faascache:FaasCache",
    "kpa": "policies.builtin.kpa:KPA",
    "default": "policies.builtin.default:ExpectedWait",
    "oracle": "policies.builtin.oracle:Oracle",
}


def _parse_value(v: str) -> Any:
    low = v.lower()
    if low in ("true", "false"):
        return low == "true"
    for conv in (int, float):
        try:
            return conv(v)
        except ValueError:
            pass
    return v


def _split_params(parts: list[str], spec: str) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for p in parts:
        if "=" not in p:
            raise PolicySpecError(f"policy spec {spec!r}: expected key=value, got {p!r}")
        k, v = p.split("=", 1)
        if not k.isidentifier():
            raise PolicySpecError(f"policy spec {spec!r}: bad parameter name {k!r}")
        params[k] = _parse_value(v)
    return params


def parameters_of(cls: type) -> dict[str, Any]:
    """A policy class's constructor parameters and their defaults (``inspect.Parameter.empty``
    when required)."""
    try:
        signature = inspect.signature(cls.__init__)
    except (TypeError, ValueError):
        return {}
    return {name: p.default for name, p in signature.parameters.items()
            if name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def describe_parameters(cls: type) -> str:
    """``ttl_ms (default 600000.0), ...`` or ``none``: for error messages."""
    params = parameters_of(cls)
    shown = [name if default is inspect.Parameter.empty else f"{name} (default {default!r})"
             for name, default in params.items()]
    return ", ".join(shown) or "none"


def _construct(cls: type, params: dict[str, Any], spec: str) -> Policy:
    known = parameters_of(cls)
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in _signature_params(cls))
    unknown = sorted(set(params) - set(known)) if not accepts_any else []
    if unknown:
        raise PolicySpecError(f"policy spec {spec!r}: unknown parameter{'s' if len(unknown) > 1 else ''} "
                              f"{', '.join(unknown)}; valid parameters: {describe_parameters(cls)}")
    try:
        return cls(**params)
    except PolicySpecError:
        raise
    except (TypeError, ValueError) as e:  # a constructor rejecting a value: say what is valid
        raise PolicySpecError(f"policy spec {spec!r}: {e} (valid parameters: {describe_parameters(cls)})") from None


def _signature_params(cls: type) -> list[inspect.Parameter]:
    try:
        return list(inspect.signature(cls.__init__).parameters.values())
    except (TypeError, ValueError):
        return []


def load_custom(path: str | Path, class_name: str | None = None, **params: Any) -> Policy:
    """Load a Policy subclass from a user's Python file."""
    path = Path(path)
    spec_str = f"custom:{path}"
    if not path.is_file():
        raise PolicySpecError(f"custom policy file not found: {path}")
    mod_name = f"wl_custom_policy_{abs(hash(str(path.resolve())))}"
    mspec = importlib.util.spec_from_file_location(mod_name, path)
    if mspec is None or mspec.loader is None:
        raise PolicySpecError(f"cannot import custom policy file {path}")
    module = importlib.util.module_from_spec(mspec)
    try:
        mspec.loader.exec_module(module)
    except (Exception, SystemExit) as e:  # the user's code: report, don't crash with a bare traceback
        raise PolicySpecError(f"custom policy file {path} failed to import: {type(e).__name__}: {e}") from e
    if class_name:
        cls = getattr(module, class_name, None)
        if cls is None:
            raise PolicySpecError(f"custom policy file {path} has no class {class_name!r}")
    else:
        found = [c for _, c in inspect.getmembers(module, inspect.isclass)
                 if issubclass(c, Policy) and c is not Policy and c.__module__ == module.__name__]
        if len(found) != 1:
            names = ", ".join(c.__name__ for c in found) or "none"
            raise PolicySpecError(
                f"custom policy file {path} must define exactly one Policy subclass "
                f"(found: {names}); name one with custom:{path}:ClassName")
        cls = found[0]
    if not (inspect.isclass(cls) and issubclass(cls, Policy)):
        raise PolicySpecError(f"{class_name} in {path} is not a subclass of policies.Policy")
    return _construct(cls, params, spec_str)


def load_policy(spec: str) -> Policy:
    """Build a policy from its spec string (see module docstring)."""
    spec = spec.strip()
    if not spec:
        raise PolicySpecError("empty policy spec")
    head, *rest = spec.split(":")
    if head == "custom":
        if not rest:
            raise PolicySpecError("custom policy spec needs a path: custom:PATH.py[:ClassName]")
        path, *more = rest
        class_name = None
        if more and "=" not in more[0]:
            class_name, more = more[0], more[1:]
        return load_custom(path, class_name, **_split_params(more, spec))
    if head == "learned":
        if not rest:
            raise PolicySpecError("learned policy spec needs a path: learned:PATH")
        from policies.learned import ArtifactError, LearnedPolicy
        try:
            return LearnedPolicy.load(rest[0], **_split_params(rest[1:], spec))
        except (ArtifactError, OSError) as e:  # a spec error like any other (the router answers 400)
            raise PolicySpecError(str(e)) from None
    if head == "wasm":
        if not rest:
            raise PolicySpecError("wasm policy spec needs a path: wasm:PATH.wasm[:key=value...]")
        from policies.wasm import WasmPolicy  # lazy: imports wasmtime only when used
        return WasmPolicy.load(rest[0], **_split_params(rest[1:], spec))
    target = BUILTINS.get(head)
    if target is None:
        known = ", ".join(sorted(BUILTINS) + ["custom:PATH", "learned:PATH", "wasm:PATH"])
        raise PolicySpecError(f"unknown policy {head!r}; known: {known}")
    mod_name, cls_name = target.split(":")
    cls = getattr(importlib.import_module(mod_name), cls_name)
    return _construct(cls, _split_params(rest, spec), spec)


def with_absolute_path(spec: str, cwd: str | Path | None = None) -> str:
    """``spec`` with its file path made absolute when it names a file or folder under ``cwd``
    (default: the current directory), for handing a spec to a process elsewhere (the router).
    Built-in specs and paths that do not exist here are returned unchanged."""
    head, sep, rest = spec.strip().partition(":")
    if head not in ("custom", "learned", "wasm") or not rest:
        return spec
    path, colon, tail = rest.partition(":")
    full = Path(cwd or Path.cwd()) / path
    if Path(path).is_absolute() or not full.exists():
        return spec
    return f"{head}{sep}{full.resolve()}{colon}{tail}"


def split_specs(specs: str) -> list[str]:
    """Split a comma-separated list of specs (``--policies a,b:k=v,c``)."""
    out = [s.strip() for s in specs.split(",") if s.strip()]
    if not out:
        raise PolicySpecError("no policies given")
    return out
