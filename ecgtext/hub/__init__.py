"""Named models and the Hugging Face Hub: registry, download, cache, checkpoint conversion.

A model *source* is

- a registry name (``dbeta-base``): the table in ``presets/registry.json``, plus
  the entries of the JSON file named by ``$ECGTEXT_REGISTRY`` (same format; its
  entries win), or
- ``hf-hub:org/repo[@revision]``: a Hub repo that holds either a ready ecgtext
  model directory (``config.json`` + ``model.safetensors`` + tokenizer files),
  used as is, or a published-format D-BETA checkpoint (``{"model": state_dict}``
  in a ``*.pt``), assembled like ``dbeta-base``.

A local model directory is a path (``./dir``, absolute, ``~``): see :mod:`ecgtext.hub.sources`.

Files come through ``huggingface_hub`` (its cache, progress bars, ``HF_HOME``,
``HF_ENDPOINT``, ``HF_HUB_OFFLINE``, ``HF_TOKEN``) and are assembled once into
our own cache, so a cached model loads without touching the network::

    $ECGTEXT_CACHE/models/<name>/<commit>/    config.json (+ "source"), model.safetensors, tokenizer files
    $ECGTEXT_CACHE/models/<name>/refs/<rev>   the commit <rev> resolved to at the last download
    $ECGTEXT_CACHE/models/<name>/latest       the commit of the last download

Neither torch nor huggingface_hub is imported at module level: ``--help`` and
cached runs stay fast.
"""

from __future__ import annotations

from ecgtext.hub.cache import _cached, _complete, _model_root
from ecgtext.hub.convert import read_verified_checkpoint, save_safetensors
from ecgtext.hub.download import (
                                  CHECKPOINT_SUFFIXES,
                                  NOT_CHECKPOINTS,
                                  DownloadResult,
                                  download,
                                  licence_notice,
                                  resolve_model,
)
from ecgtext.hub.load import load_model, resolve_source
from ecgtext.hub.registry import DEFAULT_MODEL, DEFAULT_PRESET, DEFAULT_TOKENIZER_REPO, RegistryEntry, registry
from ecgtext.hub.sources import HF_HUB_PREFIX, ModelSpec, is_path_source, parse_source

__all__ = ["CHECKPOINT_SUFFIXES", "DEFAULT_MODEL", "DEFAULT_PRESET", "DEFAULT_TOKENIZER_REPO", "DownloadResult",
           "HF_HUB_PREFIX", "ModelSpec", "NOT_CHECKPOINTS", "RegistryEntry", "download",
           "is_path_source", "licence_notice", "load_model", "parse_source", "read_verified_checkpoint", "registry",
           "resolve_model", "resolve_source", "save_safetensors", "_cached", "_complete", "_model_root"]
