"""Configs as data: dataclasses loaded from JSON, unknown keys rejected.

A model directory's ``config.json`` has three sections:

- ``"model"``: the D-BETA hyper-parameters under the reference implementation's
  key names (``dbeta_base_config.json`` is exactly such a section);
- ``"text_encoder"``: a T5 encoder config; absent means Flan-T5-base;
- ``"preprocess"``: what the weights expect as input (rate, length, lead order,
  units); absent means the defaults below.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import ConfigError

STANDARD_LEADS: tuple[str, ...] = (
    "I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6",
)


def _from_dict(cls, data: dict[str, Any], where: str):
    """Build dataclass ``cls`` from ``data``; unknown keys are an error."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a JSON object, found {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    try:
        return cls(**data)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


@dataclass
class DBetaConfig:
    """D-BETA hyper-parameters, reference key names. Defaults = published base model."""

    _name: str = "D-BETA"
    all_gather: bool = False
    normalize: bool = False
    filter: bool = False
    data: str = ""
    args: Any = None
    # ECG encoder (fairseq-signals transformer)
    encoder_layers: int = 8
    encoder_embed_dim: int = 768
    encoder_ffn_embed_dim: int = 3072
    encoder_attention_heads: int = 12
    layer_norm_first: bool = False
    lead_masking: float = 0.5
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    encoder_layerdrop: float = 0.0
    dropout_input: float = 0.1
    dropout_features: float = 0.1
    # wav2vec-style span masking: unused by D-BETA (apply_mask false), kept for key parity
    apply_mask: bool = False
    mask_length: int = 10
    mask_prob: float = 0.0
    mask_selection: str = "static"
    mask_other: float = 0.0
    no_mask_overlap: bool = False
    mask_min_space: int = 1
    mask_channel_length: int = 10
    mask_channel_prob: float = 0.0
    mask_channel_selection: str = "static"
    mask_channel_other: float = 0.0
    no_mask_channel_overlap: bool = False
    mask_channel_min_space: int = 1
    extractor_mode: str = "default"
    conv_feature_layers: str = "[(256, 2, 2)] * 4"
    in_d: int = 12
    conv_bias: bool = False
    feature_grad_mult: float = 1.0
    conv_pos: int = 128
    conv_pos_groups: int = 16
    load_pretrained_weights: bool = False
    pretrained_model_path: str = ""
    # fusion
    vocab_size: int = 32128
    hidden_dim: int = 768
    num_layers: int = 6
    num_heads: int = 12
    drop_rate: float = 0.1
    num_top_layer: int = 6
    # masked ECG modelling
    mem_layer: int = 3
    mem_prob: float = 0.75
    mem_decoder_hidden_dim: int = 384
    mem_decoder_num_layers: int = 4
    mem_decoder_num_heads: int = 6
    max_text_size: int = 256

    def conv_layers(self) -> list[tuple[int, int, int]]:
        """Parse ``conv_feature_layers`` (a Python list expression) without ``eval``."""
        return parse_conv_layers(self.conv_feature_layers)

    @property
    def token_stride(self) -> int:
        """Input samples per ECG token (product of conv strides; 16 for D-BETA)."""
        s = 1
        for _, _, stride in self.conv_layers():
            s *= stride
        return s

    def num_tokens(self, samples: int) -> int:
        """ECG tokens (class token excluded) for an input of ``samples`` samples."""
        n = samples
        for _, k, stride in self.conv_layers():
            n = (n - k) // stride + 1
        return n


def parse_conv_layers(spec: str) -> list[tuple[int, int, int]]:
    """Parse e.g. ``"[(256, 2, 2)] * 4"`` or ``"[(512, 10, 5)] + [(512, 3, 2)] * 2"``.

    Only list literals of int triples, ``+`` and ``* int`` are accepted: the
    reference ``eval``s this string, we never execute config text.
    """
    import ast

    def ev(node):
        if isinstance(node, ast.List):
            out = []
            for elt in node.elts:
                if not (isinstance(elt, ast.Tuple) and len(elt.elts) == 3):
                    raise ValueError("each layer must be a (dim, kernel, stride) triple")
                out.append(tuple(int(ast.literal_eval(e)) for e in elt.elts))
            return out
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return ev(node.left) + ev(node.right)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
            left, right = node.left, node.right
            if isinstance(left, ast.Constant):
                left, right = right, left
            return ev(left) * int(ast.literal_eval(right))
        raise ValueError(f"unsupported expression {ast.dump(node)[:60]}")

    try:
        layers = ev(ast.parse(spec, mode="eval").body)
    except (SyntaxError, ValueError) as exc:
        raise ConfigError(f"conv_feature_layers {spec!r}: {exc}") from None
    if not layers:
        raise ConfigError(f"conv_feature_layers {spec!r}: no layers")
    return layers


@dataclass
class PreprocessConfig:
    """What the weights expect as input; every command reads it from the model.

    ``leads`` is the channel order of the model input. The published D-BETA
    weights were pretrained on MIMIC-IV-ECG as stored (aVF before aVL), so the
    ``dbeta-base`` preset says so; records are reordered by lead name.
    """

    sample_rate: float = 500.0
    window: int = 5000
    leads: list[str] = field(default_factory=lambda: list(STANDARD_LEADS))
    units: str = "mV"
    filter: str | None = None  # no filtering: the weights saw raw signals
    normalize: str | None = None  # no normalisation either

    def __post_init__(self):
        if self.sample_rate <= 0 or self.window <= 0:
            raise ValueError("sample_rate and window must be positive")
        if self.units != "mV":
            raise ValueError(f"units must be 'mV', got {self.units!r}")
        if self.filter is not None or self.normalize is not None:
            raise ValueError("filter/normalize are not supported (the weights saw raw mV)")
        self.leads = list(self.leads)

    @property
    def window_seconds(self) -> float:
        return self.window / self.sample_rate


@dataclass
class ModelDirConfig:
    """The whole ``config.json`` of a model directory."""

    model: DBetaConfig = field(default_factory=DBetaConfig)
    text_encoder: dict[str, Any] | None = None  # None: Flan-T5-base
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    name: str | None = None  # registry name or hub id, for provenance
    source: dict[str, Any] | None = None  # e.g. hub repo, revision, commit

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "config") -> "ModelDirConfig":
        if not isinstance(data, dict) or "model" not in data:
            raise ConfigError(f"{where}: expected an object with a 'model' section")
        allowed = {"model", "text_encoder", "preprocess", "name", "source"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ConfigError(f"{where}: unknown top-level key(s) {', '.join(unknown)}")
        model = _from_dict(DBetaConfig, data["model"], f"{where}: model")
        pre = _from_dict(PreprocessConfig, data.get("preprocess") or {}, f"{where}: preprocess")
        text = data.get("text_encoder")
        if text is not None and not isinstance(text, dict):
            raise ConfigError(f"{where}: text_encoder must be an object")
        return cls(model=model, text_encoder=text, preprocess=pre,
                   name=data.get("name"), source=data.get("source"))

    def text_encoder_config(self) -> dict[str, Any]:
        """The T5 encoder config, Flan-T5-base when the section is absent."""
        return dict(self.text_encoder) if self.text_encoder is not None else load_json_resource(
            "flan_t5_base_encoder.json")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": dataclasses.asdict(self.model)}
        out["text_encoder"] = self.text_encoder_config()
        out["preprocess"] = dataclasses.asdict(self.preprocess)
        if self.name:
            out["name"] = self.name
        if self.source:
            out["source"] = self.source
        return out


def load_json_resource(name: str) -> Any:
    """Read a JSON file shipped in ``ecgtext/presets``."""
    return json.loads(resources.files("ecgtext.presets").joinpath(name).read_text())


def preset_names() -> list[str]:
    # architecture presets are the JSON files with a "model" section
    out = []
    for p in resources.files("ecgtext.presets").iterdir():
        if p.name.endswith(".json") and '"model"' in p.read_text():
            out.append(p.name[:-5])
    return sorted(out)


def load_preset(name: str) -> ModelDirConfig:
    """A named architecture preset (``dbeta-base``, ``dbeta-tiny``)."""
    if name not in preset_names():
        raise ConfigError(f"unknown preset {name!r}; known: {', '.join(preset_names())}")
    return ModelDirConfig.from_dict(load_json_resource(f"{name}.json"), f"preset {name}")


def load_config(path: str | Path) -> ModelDirConfig:
    """Read a model directory's ``config.json`` (or the file itself)."""
    p = Path(path)
    if p.is_dir():
        p = p / "config.json"
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such config file") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{p}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    return ModelDirConfig.from_dict(data, str(p))
