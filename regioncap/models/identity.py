"""The identity of a model: what decides which vectors it computes.

An index remembers the identity of the model that built it and refuses another; ``analyze(objects=)``
refuses a result of another model. Two models share an identity only if they embed identically: same
config, same vocabulary (token ids), same weights (names, dtypes, shapes, bytes).
"""

from __future__ import annotations

import hashlib
import json
import weakref
from collections.abc import Mapping

import torch

_IDENTITIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def model_identity(model) -> str:
    """sha256 hex of ``model``'s config, vocabulary and weights. Remembered per model object (its
    weights are not expected to change while it serves an index or a result). A model that carries its
    identity (``TextModel``: the text side of a saved model, identified by all of its weights) gives it."""
    known = getattr(model, "identity", None)
    if isinstance(known, str):
        return known
    if model not in _IDENTITIES:
        _IDENTITIES[model] = state_identity(model.config.to_dict(), model.vocab.id_to_token, model.state_dict())
    return _IDENTITIES[model]


def state_identity(config: dict, tokens: list[str], tensors: Mapping[str, torch.Tensor]) -> str:
    """The identity from its parts: ``config`` (``RegionCaptionerConfig.to_dict()``), the vocabulary's
    tokens in id order, and every weight by name: a saved model's files give its loaded model's identity
    without building it."""
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    h.update(json.dumps(list(tokens), ensure_ascii=False).encode())
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
