"""Fail fast when pretrained weights or a tokenizer would have to be downloaded but the Hub cannot
be reached.

Without a network, open_clip's download spends over a minute in retries before its error, and a
model whose tokenizer lives on the Hub (SigLIP, ...) spends ~47 s on every ``encode_text`` call.
:func:`check_weights_reachable` and :func:`check_tokenizer_reachable` answer at once: files that
are local or already in the local cache pass; otherwise, when
``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` is set or a TCP connection to the Hub does not open
within a short timeout, they raise :class:`HubUnreachableError` with one line saying so and what
to pass instead. The loading itself stays open_clip's.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

__all__ = ["HubUnreachableError", "check_tokenizer_reachable", "check_weights_reachable",
           "hub_tokenizer", "hub_unreachable_reason", "offline_variable", "tokenizer_unreachable"]

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
# open_clip's weight files on the Hub, newest format first.
_HUB_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
# Any of these in the local cache means a Hugging Face tokenizer loads without the network.
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "spiece.model")


class HubUnreachableError(OSError):
    """Pretrained weights are not cached locally and the Hub cannot be reached."""


def offline_variable() -> str | None:
    """The offline switch (``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE``) set now, or ``None`` (the
    Hub client reads them once, at import, so a later change is seen only here)."""
    for variable in OFFLINE_VARIABLES:
        if os.environ.get(variable, "").strip().lower() in ("1", "on", "yes", "true"):
            return variable
    return None


def hub_unreachable_reason(timeout: float = 2.0, host: str | None = None) -> str | None:
    """Why the Hugging Face Hub cannot be reached now, or ``None`` when it answers.

    Args:
        timeout: seconds to wait for a TCP connection.
        host: the host to try; default: ``$HF_ENDPOINT``'s, else ``huggingface.co``.
    """
    variable = offline_variable()
    if variable is not None:
        return f"{variable} is set"
    host = host or urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return None
    except OSError as error:
        return f"{host} cannot be reached ({type(error).__name__}, timeout {timeout:g} s)"


def _cached_locally(config: dict) -> bool:
    """Whether open_clip would find the weights of a pretrained config without downloading."""
    if config.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache

        parts = config["hf_hub"].rstrip("/").split("/")  # "org/repo/" or "org/repo/file"
        repo_id = "/".join(parts[:2])
        names = ["/".join(parts[2:])] if parts[2:] else list(_HUB_FILES)
        if any(isinstance(try_to_load_from_cache(repo_id, name), str) for name in names):
            return True
    if config.get("url"):
        name = os.path.basename(urlparse(config["url"]).path)
        if (Path.home() / ".cache" / "clip" / name).is_file():
            return True
    return False


def check_weights_reachable(model_name: str, pretrained: str | None,
                            timeout: float = 2.0) -> None:
    """Raise at once when ``pretrained`` weights of ``model_name`` would need a download that
    cannot happen.

    Passes without a check for no weights, a local checkpoint file, an unknown tag (open_clip
    reports it) and weights already in the local cache.

    Raises:
        HubUnreachableError: the weights are not cached and the Hub cannot be reached.
    """
    if pretrained is None or Path(pretrained).is_file():
        return
    import open_clip

    config = open_clip.get_pretrained_cfg(model_name, pretrained)
    if not config or _cached_locally(config):
        return
    reason = hub_unreachable_reason(timeout)
    if reason is not None:
        raise HubUnreachableError(
            f"the {pretrained!r} weights of {model_name} are not in the local cache and cannot "
            f"be downloaded: {reason}. Connect to the network, or give a checkpoint file.")


def hub_tokenizer(model_name: str) -> str | None:
    """The Hugging Face repository ``open_clip.get_tokenizer(model_name)`` downloads its
    tokenizer from, or ``None`` when the tokenizer ships with open_clip (CLIP's BPE)."""
    import open_clip

    config = open_clip.get_model_config(model_name) or {}
    return (config.get("text_cfg") or {}).get("hf_tokenizer_name") or None


def _tokenizer_cached(repo: str) -> bool:
    if Path(repo).is_dir():
        return True
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(repo, name), str) for name in _TOKENIZER_FILES)


def tokenizer_unreachable(model_name: str, timeout: float = 2.0) -> tuple[str, str] | None:
    """``(repository, reason)`` when the tokenizer of open_clip's ``model_name`` would need a
    download that cannot happen now, else ``None``."""
    repo = hub_tokenizer(model_name)
    if repo is None or _tokenizer_cached(repo):
        return None
    reason = hub_unreachable_reason(timeout)
    return None if reason is None else (repo, reason)


def check_tokenizer_reachable(model_name: str, timeout: float = 2.0) -> None:
    """Raise at once when the tokenizer of open_clip's ``model_name`` would need a download that
    cannot happen (instead of retrying on every ``encode_text`` call).

    Raises:
        HubUnreachableError: the tokenizer is not cached and the Hub cannot be reached; the
            message names what to pass instead.
    """
    unreachable = tokenizer_unreachable(model_name, timeout)
    if unreachable is not None:
        repo, reason = unreachable
        raise HubUnreachableError(
            f"the tokenizer of {model_name} ({repo!r} on the Hugging Face Hub) is not in the "
            f"local cache and cannot be downloaded: {reason}. Pass tokenizer= (a callable from a "
            "list of strings to token ids) to HookedCLIP.from_open_clip, or text embeddings "
            "[T, E] instead of strings; or connect once so that it is cached.")
