"""Official WavTokenizer release files -> :class:`~audio.wavtokenizer.model.WavTokenizer`.

A release is a PyTorch-Lightning ``.ckpt`` (a zip pickle holding ``state_dict`` plus optimizer/loop state) and
the training YAML of the original repo (LightningCLI format). The checkpoint is read with
``torch.load(weights_only=True)`` (no pickled code runs); the YAML with ``yaml.safe_load`` (nothing is imported
from its ``class_path`` entries, which are only checked against the three classes WavTokenizer uses).

The architecture comes from tensor shapes (the SEANet widths are hard-coded in the original code and absent
from the YAML); the YAML, when given, is a cross-check (ratios, codebook size, backbone widths, FFT size) and
provides the k-means iteration count used for training. Loading is strict: every tensor of the checkpoint is
either mapped into the model or lies under one of :data:`TRAINING_ONLY_PREFIXES`, otherwise the load fails
listing the keys.
"""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import torch

from zoo.quantizers import convert_state
from zoo.registry import load_state_strict

from .config import WavTokenizerConfig

__all__ = ["read_checkpoint", "read_yaml", "infer_config", "convert_state_dict", "load_official_wavtokenizer",
           "TRAINING_ONLY_PREFIXES", "ENCODER_PREFIX", "QUANTIZER_PREFIX"]

PathLike = Union[str, Path]

ENCODER_PREFIX = "feature_extractor.encodec.encoder."
QUANTIZER_PREFIX = "feature_extractor.encodec.quantizer."
BACKBONE_PREFIX = "backbone."
HEAD_PREFIX = "head."
#: tensors a release holds that inference never uses: the SEANet decoder the original builds but never calls,
#: the GAN discriminators (two DAC copies in some files), and the mel loss' window/filterbank buffers
TRAINING_ONLY_PREFIXES = ("feature_extractor.encodec.decoder.", "multiperioddisc.", "multiresddisc.", "dac.",
                          "dacdiscriminator.", "melspec_loss.")
#: the class paths of the original YAML this converter understands
EXPECTED_CLASSES = {
    "feature_extractor": "decoder.feature_extractors.EncodecFeatures",
    "backbone": "decoder.models.VocosBackbone",
    "head": "decoder.heads.ISTFTHead",
}
_CKPT_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
_YAML_SUFFIXES = (".yaml", ".yml")


# ---------------------------------------------------------------------------------------------- reading

def read_checkpoint(path: PathLike) -> Dict[str, torch.Tensor]:
    """The ``state_dict`` of a Lightning checkpoint (or a bare state dict), loaded without running pickled code."""
    from zoo.hub import torch_load

    obj = torch_load(path)
    if isinstance(obj, Mapping) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: expected a Lightning checkpoint (a dict with 'state_dict') or a state dict, "
                         f"got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{path}: the state dict holds non-tensor entries {bad[:5]}; not a WavTokenizer checkpoint")
    if not any(k.startswith(ENCODER_PREFIX) for k in obj):
        raise ValueError(f"{path} is not a WavTokenizer checkpoint: no tensors under {ENCODER_PREFIX!r} "
                         f"(first keys: {list(obj)[:5]})")
    return dict(obj)


def read_yaml(path: PathLike) -> Dict[str, Dict[str, Any]]:
    """The ``init_args`` of ``feature_extractor``, ``backbone`` and ``head`` from the original training YAML."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read WavTokenizer config {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not valid YAML: {exc}") from exc
    try:
        model_args = data["model"]["init_args"]
    except (TypeError, KeyError) as exc:
        raise ValueError(f"{path} is not a WavTokenizer LightningCLI config: no model.init_args") from exc
    out: Dict[str, Dict[str, Any]] = {}
    for part, expected in EXPECTED_CLASSES.items():
        node = model_args.get(part) if isinstance(model_args, dict) else None
        if not isinstance(node, dict) or not isinstance(node.get("init_args"), dict):
            raise ValueError(f"{path}: model.init_args.{part} with class_path/init_args is missing")
        if node.get("class_path") != expected:
            raise ValueError(f"{path}: model.init_args.{part}.class_path is {node.get('class_path')!r}; this "
                             f"converter supports {expected!r} only")
        out[part] = dict(node["init_args"])
    sr = model_args.get("sample_rate")
    out["model"] = {"sample_rate": sr} if sr is not None else {}
    return out


def _split_paths(paths: Iterable) -> Tuple[Path, Optional[Path]]:
    ckpt: Optional[Path] = None
    cfg: Optional[Path] = None
    for p in paths:
        if p is None:
            continue
        if not isinstance(p, (str, Path)):
            raise TypeError(f"load_official('wavtokenizer', ...) takes file paths, got {type(p).__name__}")
        p = Path(p)
        if p.is_dir():
            ckpts = sorted(q for q in p.iterdir() if q.suffix.lower() in _CKPT_SUFFIXES)
            cfgs = sorted(q for q in p.iterdir() if q.suffix.lower() in _YAML_SUFFIXES)
            if len(ckpts) != 1 or len(cfgs) > 1:
                raise ValueError(f"{p}: expected one checkpoint ({'/'.join(_CKPT_SUFFIXES)}) and at most one YAML, "
                                 f"found {[q.name for q in ckpts + cfgs]}; pass the files explicitly")
            items = ckpts + cfgs
        else:
            items = [p]
        for q in items:
            if not q.is_file():
                raise FileNotFoundError(f"no such file {q}")
            kind = q.suffix.lower()
            if kind in _CKPT_SUFFIXES:
                if ckpt is not None:
                    raise ValueError(f"two checkpoints given: {ckpt} and {q}")
                ckpt = q
            elif kind in _YAML_SUFFIXES:
                if cfg is not None:
                    raise ValueError(f"two configs given: {cfg} and {q}")
                cfg = q
            else:
                raise ValueError(f"{q}: unknown file type {q.suffix!r}; expected a checkpoint "
                                 f"({', '.join(_CKPT_SUFFIXES)}) or the training YAML (.yaml)")
    if ckpt is None:
        raise ValueError("load_official('wavtokenizer', ...) needs the release checkpoint (.ckpt)")
    return ckpt, cfg


# ---------------------------------------------------------------------------------------------- shapes

def _conv_weight(state: Mapping[str, torch.Tensor], prefix: str) -> Optional[torch.Tensor]:
    """The direction tensor ``v`` (or the plain weight) of the original conv under ``prefix`` (``...conv.conv.``)."""
    for key in ("weight_v", "parametrizations.weight.original1", "weight"):
        if prefix + key in state:
            return state[prefix + key]
    return None


def _check_state(state) -> None:
    if not isinstance(state, Mapping):
        raise TypeError(f"expected a state dict (a mapping of names to tensors), got {type(state).__name__}")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise TypeError(f"the state dict holds non-tensor entries or non-string keys: {bad[:5]}")


def _encoder_layout(state: Mapping[str, torch.Tensor]) -> Dict[int, str]:
    kinds: Dict[int, str] = {}
    pat = re.compile(re.escape(ENCODER_PREFIX) + r"model\.(\d+)\.(.*)$")
    for key in state:
        m = pat.match(key)
        if not m:
            if key.startswith(ENCODER_PREFIX):
                raise ValueError(f"unrecognised encoder tensor {key!r} (expected {ENCODER_PREFIX}model.<i>...)")
            continue
        i, rest = int(m.group(1)), m.group(2)
        kind = "res" if rest.startswith(("block.", "shortcut.")) else "lstm" if rest.startswith("lstm.") else \
            "conv" if rest.startswith("conv.") else None
        if kind is None:
            raise ValueError(f"unrecognised encoder tensor {key!r}")
        if kinds.setdefault(i, kind) != kind:
            raise ValueError(f"encoder module {i} mixes {kinds[i]} and {kind} tensors ({key!r})")
    if not kinds:
        raise ValueError(f"no encoder tensors under {ENCODER_PREFIX!r}")
    return kinds


def _fail_shape(what: str, got, expected) -> None:
    raise ValueError(f"WavTokenizer checkpoint: {what} is {got}, expected {expected}")


def infer_config(state: Mapping[str, torch.Tensor], yaml_args: Optional[Dict[str, Dict[str, Any]]] = None,
                 sample_rate: int = 24000) -> WavTokenizerConfig:
    """The architecture from the tensor shapes of a (full or generator-only) state dict; ``yaml_args`` (from
    :func:`read_yaml`) is cross-checked and supplies ``vq_kmeans``. Raises ``ValueError`` naming any conflict."""
    _check_state(state)
    kinds = _encoder_layout(state)
    convs = sorted(i for i, k in kinds.items() if k == "conv")
    if len(convs) < 3 or convs[0] != 0:
        raise ValueError(f"encoder layout not recognised: conv modules at {convs} (expected a first conv at 0, "
                         "strided convs, and a last conv)")
    mp = ENCODER_PREFIX + "model."
    w0 = _conv_weight(state, f"{mp}0.conv.conv.")
    if w0 is None or w0.ndim != 3 or w0.shape[1] != 1:
        _fail_shape("the first encoder conv weight", None if w0 is None else tuple(w0.shape), "[n_filters, 1, k]")
    n_filters, kernel_size = int(w0.shape[0]), int(w0.shape[2])
    last = convs[-1]
    wl = _conv_weight(state, f"{mp}{last}.conv.conv.")
    dimension, last_kernel = int(wl.shape[0]), int(wl.shape[2])
    downs = convs[1:-1]
    strides: List[int] = []
    width = n_filters
    for i in downs:
        w = _conv_weight(state, f"{mp}{i}.conv.conv.")
        if tuple(w.shape[:2]) != (2 * width, width) or w.shape[2] % 2:
            _fail_shape(f"encoder downsampling conv {i} weight", tuple(w.shape), f"[{2 * width}, {width}, 2*stride]")
        strides.append(int(w.shape[2]) // 2)
        width *= 2
    # residual blocks: the same number before every downsampling conv
    bounds = [0] + downs
    n_res = None
    res_kernel, compress, true_skip = 3, 2, False
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        count = sum(1 for i in range(lo + 1, hi) if kinds.get(i) == "res")
        if n_res is None:
            n_res = count
        elif count != n_res:
            raise ValueError(f"encoder stages hold different numbers of residual blocks ({n_res} vs {count})")
        if count:
            rb = next(i for i in range(lo + 1, hi) if kinds.get(i) == "res")
            w = _conv_weight(state, f"{mp}{rb}.block.1.conv.conv.")
            if w is None:
                raise ValueError(f"encoder residual block {rb} has no block.1 conv")
            res_kernel, compress = int(w.shape[2]), int(w.shape[1]) // int(w.shape[0])
            true_skip = _conv_weight(state, f"{mp}{rb}.shortcut.conv.conv.") is None
    lstm_idx = [i for i, k in kinds.items() if k == "lstm"]
    lstm_layers = 0
    if lstm_idx:
        if lstm_idx != [downs[-1] + 1] or last != downs[-1] + 3:
            raise ValueError(f"encoder LSTM at {lstm_idx} not where SEANet puts it (after conv {downs[-1]})")
        lstm_layers = sum(1 for k in state if k.startswith(f"{mp}{lstm_idx[0]}.lstm.weight_ih_l"))
        w = state[f"{mp}{lstm_idx[0]}.lstm.weight_ih_l0"]
        if tuple(w.shape) != (4 * width, width):
            _fail_shape("the encoder LSTM weight_ih_l0", tuple(w.shape), f"[{4 * width}, {width}]")
    if tuple(wl.shape[1:2]) != (width,):
        _fail_shape(f"the last encoder conv ({last}) weight", tuple(wl.shape), f"[dimension, {width}, k]")

    # quantizer: one codebook (LanguageVectorQuantization with num_quantizers 1 in every release)
    layers = sorted({int(m.group(1)) for k in state
                     for m in [re.match(re.escape(QUANTIZER_PREFIX) + r"vq\.layers\.(\d+)\._codebook\.", k)] if m})
    if layers != [0]:
        raise ValueError(f"WavTokenizer checkpoint has quantizer layers {layers}; only one codebook "
                         "(num_quantizers 1, as in every release) is supported")
    embed = state.get(QUANTIZER_PREFIX + "vq.layers.0._codebook.embed")
    if embed is None or embed.ndim != 2:
        raise ValueError(f"missing or malformed codebook {QUANTIZER_PREFIX}vq.layers.0._codebook.embed")
    codebook_size, code_dim = map(int, embed.shape)
    if code_dim != dimension:
        _fail_shape("the codebook dimension", code_dim, f"the encoder's latent dimension {dimension}")

    # backbone and head
    def need(key):
        if key not in state:
            raise ValueError(f"WavTokenizer checkpoint is missing {key!r}")
        return state[key]

    emb = need("backbone.embed.weight")
    backbone_dim = int(emb.shape[0])
    if emb.shape[1] != dimension:
        _fail_shape("backbone.embed.weight", tuple(emb.shape), f"[dim, {dimension}, 7]")
    if "backbone.norm.scale.weight" not in state:
        raise ValueError("backbone.norm.scale.weight is missing: WavTokenizer's backbone uses adaptive LayerNorm")
    adanorm = int(state["backbone.norm.scale.weight"].shape[0])
    intermediate = int(need("backbone.convnext.0.pwconv1.weight").shape[0])
    num_layers = len({int(m.group(1)) for k in state for m in [re.match(r"backbone\.convnext\.(\d+)\.", k)] if m})
    out_w = need("head.out.weight")
    if out_w.shape[1] != backbone_dim:
        _fail_shape("head.out.weight", tuple(out_w.shape), f"[n_fft + 2, {backbone_dim}]")
    n_fft = int(out_w.shape[0]) - 2
    hop = math.prod(strides)

    cfg = dict(sample_rate=sample_rate, n_filters=n_filters, ratios=tuple(reversed(strides)), dimension=dimension,
               n_residual_layers=n_res or 0, residual_kernel_size=res_kernel, compress=compress,
               true_skip=true_skip, kernel_size=kernel_size, last_kernel_size=last_kernel, lstm_layers=lstm_layers,
               codebook_size=codebook_size, backbone_dim=backbone_dim, intermediate_dim=intermediate,
               num_layers=num_layers, adanorm_num_embeddings=adanorm, n_fft=n_fft, hop_length=hop)
    if yaml_args is not None:
        _cross_check(cfg, yaml_args)
        kmeans = yaml_args["feature_extractor"].get("vq_kmeans")
        if kmeans is not None:
            cfg["vq_kmeans_iters"] = int(kmeans)
    return WavTokenizerConfig(**cfg)


def _cross_check(cfg: Dict[str, Any], y: Dict[str, Dict[str, Any]]) -> None:
    fe, bb, hd = y["feature_extractor"], y["backbone"], y["head"]
    checks = [
        ("feature_extractor.dowmsamples", fe.get("dowmsamples"), list(cfg["ratios"]), "encoder strides (reversed)"),
        ("feature_extractor.vq_bins", fe.get("vq_bins"), cfg["codebook_size"], "codebook rows"),
        ("feature_extractor.num_quantizers", fe.get("num_quantizers", 1), 1, "codebooks"),
        ("backbone.input_channels", bb.get("input_channels"), cfg["dimension"], "latent dimension"),
        ("backbone.dim", bb.get("dim"), cfg["backbone_dim"], "backbone width"),
        ("backbone.intermediate_dim", bb.get("intermediate_dim"), cfg["intermediate_dim"], "ConvNeXt MLP width"),
        ("backbone.num_layers", bb.get("num_layers"), cfg["num_layers"], "ConvNeXt blocks"),
        ("backbone.adanorm_num_embeddings", bb.get("adanorm_num_embeddings"), cfg["adanorm_num_embeddings"],
         "adaptive LayerNorm rows"),
        ("head.dim", hd.get("dim"), cfg["backbone_dim"], "backbone width"),
        ("head.n_fft", hd.get("n_fft"), cfg["n_fft"], "head output rows - 2"),
        ("head.hop_length", hd.get("hop_length"), cfg["hop_length"], "product of the encoder strides"),
    ]
    bad = []
    for name, got, expected, what in checks:
        if got is None:
            continue
        got_v = list(got) if isinstance(got, (list, tuple)) else got
        if got_v != expected:
            bad.append(f"{name} = {got!r} but the checkpoint's {what} give {expected!r}")
    padding = hd.get("padding", "same")
    if padding != "same":
        bad.append(f"head.padding = {padding!r}; only 'same' is supported")
    if bad:
        raise ValueError("the YAML does not match the checkpoint (wrong config for this .ckpt?): " + "; ".join(bad))


# ---------------------------------------------------------------------------------------------- conversion

_CONV_RENAMES = (
    (".conv.conv.weight_g", ".conv.parametrizations.weight.original0"),
    (".conv.conv.weight_v", ".conv.parametrizations.weight.original1"),
    (".conv.conv.parametrizations.weight.original0", ".conv.parametrizations.weight.original0"),
    (".conv.conv.parametrizations.weight.original1", ".conv.parametrizations.weight.original1"),
    (".conv.conv.bias", ".conv.bias"),
)


def convert_state_dict(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The original state dict -> this implementation's (a pure function; nothing is modified).

    Raises ``ValueError`` listing tensors that are neither generator weights nor under
    :data:`TRAINING_ONLY_PREFIXES`.
    """
    _check_state(state)
    out: Dict[str, torch.Tensor] = {}
    unknown: List[str] = []
    cb_prefix = QUANTIZER_PREFIX + "vq.layers.0._codebook."
    for key, value in state.items():
        if key.startswith(ENCODER_PREFIX):
            rest = key[len(ENCODER_PREFIX):]
            for old, new in _CONV_RENAMES:
                if rest.endswith(old):
                    rest = rest[:-len(old)] + new
                    break
            else:
                if rest.endswith(".conv.conv.weight"):  # weight norm already removed: g = |w|, v = w
                    base = rest[:-len(".conv.conv.weight")]
                    out[f"encoder.{base}.conv.parametrizations.weight.original0"] = \
                        torch.linalg.vector_norm(value, dim=tuple(range(1, value.ndim)), keepdim=True)
                    rest = f"{base}.conv.parametrizations.weight.original1"
            out["encoder." + rest] = value
        elif key.startswith(QUANTIZER_PREFIX):
            if not key.startswith(cb_prefix) or key[len(cb_prefix):] not in ("inited", "cluster_size", "embed",
                                                                            "embed_avg"):
                unknown.append(key)
        elif key.startswith((BACKBONE_PREFIX, HEAD_PREFIX)):
            out[key] = value
        elif not key.startswith(TRAINING_ONLY_PREFIXES):
            unknown.append(key)
    if unknown:
        raise ValueError(f"WavTokenizer checkpoint holds {len(unknown)} tensors that are neither generator "
                         f"weights nor known training-only state: {sorted(unknown)[:20]}")
    # EnCodec EuclideanCodebook buffers -> the quantizer core. The codebook is always marked initialised: the
    # stored rows are the codebook to use, and a k-means re-initialisation (which the original runs even in eval
    # mode when `inited` is 0) must never happen at inference or when fine-tuning a release.
    for k, v in convert_state("encodec", state, cb_prefix).items():
        out["quantizer." + k] = v
    out["quantizer.codebook.initted"] = torch.tensor(True)
    return out


def load_official_wavtokenizer(*paths, sample_rate: int = 24000, device=None):
    """Build a ready (eval-mode) :class:`WavTokenizer` from the release's ``.ckpt`` and optional YAML."""
    from .model import WavTokenizer

    ckpt, cfg_path = _split_paths(paths)
    state = read_checkpoint(ckpt)
    yaml_args = read_yaml(cfg_path) if cfg_path is not None else None
    if yaml_args is not None and yaml_args["model"].get("sample_rate") is not None:
        sample_rate = int(yaml_args["model"]["sample_rate"])
    config = infer_config(state, yaml_args, sample_rate=sample_rate)
    converted = convert_state_dict(state)
    model = WavTokenizer(config)
    load_state_strict(model, converted, source=str(ckpt))
    inited = state.get(QUANTIZER_PREFIX + "vq.layers.0._codebook.inited")
    if inited is not None and not bool((inited != 0).all()):
        warnings.warn(f"{ckpt}: the codebook is stored as uninitialised (inited = 0; every release has 1). It is "
                      "used as stored; the original code would instead re-run k-means on its first input.",
                      stacklevel=2)
    model.eval()
    if device is not None:
        model.to(device)
    return model
