"""``--model``: a local directory or a hub id, checked before anything heavy loads (one line when it cannot work).

- A *local-looking* value — it starts with ``/``, ``./``, ``../`` or ``~``, or its first path component exists
  here as a directory (``runs/sft/final``), or it has more than one ``/`` (hub ids are ``org/name``) — must be an
  existing directory: otherwise one line, at once, and neither transformers nor the hub client is imported.
- A hub id is resolved ONCE before loading: found in the local cache (``config.json``) it is used as is; with
  ``HF_HUB_OFFLINE=1`` and not cached, one line; else one metadata request (``HfApi.model_info``, short timeout),
  and an unknown id, a gated repo or an unreachable hub is one line naming it — instead of a retry loop of
  transformers' warnings for every file.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import TrainSetupError

HUB_TIMEOUT_S = 10.0


def looks_local(value: str) -> bool:
    """Whether ``value`` is meant as a filesystem path rather than a hub id."""
    if value.startswith(("/", "./", "../", "~", ".\\", "..\\")) or value in (".", ".."):
        return True
    parts = Path(value).parts
    if len(parts) > 2 or "\\" in value:
        return True
    return len(parts) > 1 and Path(parts[0]).is_dir()


def check_model_arg(value: str, flag: str = "--model") -> str:
    """``value`` as the loaders should use it (``~`` expanded), or :class:`TrainSetupError` in one line."""
    if not value.strip():
        raise TrainSetupError(f"{flag}: empty")
    if looks_local(value) or Path(value).expanduser().exists():
        path = Path(value).expanduser()
        if not path.exists():
            raise TrainSetupError(f"{flag} {value}: no such directory")
        if not path.is_dir():
            raise TrainSetupError(f"{flag} {value}: not a directory (expected an HF model directory)")
        if not (path / "config.json").exists():
            raise TrainSetupError(f"{flag} {value}: no config.json there (not an HF model directory)")
        return str(path)
    check_hub_id(value, flag)
    return value


def _offline() -> bool:
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def check_hub_id(repo_id: str, flag: str = "--model") -> None:
    """One line when hub id ``repo_id`` cannot be loaded: not cached and offline, unknown, gated or unreachable."""
    try:
        from huggingface_hub import HfApi, try_to_load_from_cache
        from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError
    except ImportError:  # pragma: no cover - transformers depends on huggingface_hub
        return
    try:
        cached = try_to_load_from_cache(repo_id, "config.json")
    except Exception as exc:  # noqa: BLE001 - an invalid repo id raises a validation error
        raise TrainSetupError(f"{flag} {repo_id}: not a local directory nor a valid hub id ({_first(exc)})") from None
    if isinstance(cached, str):
        return
    if _offline():
        raise TrainSetupError(f"{flag} {repo_id}: not in the local hub cache and HF_HUB_OFFLINE is set; download it "
                              f"first (huggingface-cli download {repo_id}) or pass a local directory")
    try:
        HfApi().model_info(repo_id, timeout=HUB_TIMEOUT_S)
    except RepositoryNotFoundError:
        raise TrainSetupError(f"{flag} {repo_id}: no such model on the hub (or it is private: log in with "
                              f"huggingface-cli login); a local path must exist") from None
    except GatedRepoError:
        raise TrainSetupError(f"{flag} {repo_id}: a gated model; accept its terms on the hub and log in "
                              f"(huggingface-cli login)") from None
    except HfHubHTTPError as exc:
        raise TrainSetupError(f"{flag} {repo_id}: the hub refused the request ({_first(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - connection errors, timeouts, DNS failures
        raise TrainSetupError(f"{flag} {repo_id}: the hub is unreachable ({_first(exc)}); download the model "
                              f"where there is network or pass a local directory") from None


def _first(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text or type(exc).__name__)[:200]


__all__ = ["check_hub_id", "check_model_arg", "looks_local"]
