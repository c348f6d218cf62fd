"""The ``tokenzoo`` command.

::

    tokenzoo list [--modality M] [--family F] [--json]
    tokenzoo info NAME [--json]
    tokenzoo encode NAME INPUT... -o TOKENS [--format npz|safetensors] [--option KEY=VALUE ...]
    tokenzoo decode NAME TOKENS... -o OUTPUT [--option KEY=VALUE ...] [--seed N]
    tokenzoo bench NAME... --data DIR --out DIR
    tokenzoo tokenize NAME --data DIR... --out DIR      (zoo.tokenize: sharded corpus tokenization)
    tokenzoo train ...                                 (zoo.train, when it provides a command line)
    tokenzoo demo

``NAME`` is a registry name (``tokenzoo list``), a folder written by ``save_pretrained``, or a Hub repo id.

Files: audio is anything soundfile reads (mixed down to mono, resampled with soxr to the model's rate; both
are reported), images anything Pillow reads (converted to RGB, resized and centre-cropped when the model
needs a fixed size; reported), video a ``.npz`` with ``frames`` uint8 ``[F, H, W, 3]`` (and ``fps``), EEG a
``.npz`` with ``signal`` ``[C, T]`` and ``sfreq`` (or EDF/BDF when pyedflib is installed).

Layout of token files: with one input, ``-o`` is the tokens file (``.npz`` or ``.safetensors``, see
``zoo.Tokens.save``). With several inputs, ``-o`` is a folder and each input ``DIR/x.wav`` gives
``OUT/x.npz`` (``--format`` picks the suffix); two inputs with the same stem are refused. ``decode`` mirrors
this: one tokens file and ``-o FILE``, or several and ``-o FOLDER`` with ``FOLDER/<stem><suffix>``, the suffix
being the modality's default (``.wav``, ``.png``, ``.npz``) unless ``--suffix`` says otherwise. A tokens file
holding a batch of several items decodes to ``<stem>_<i><suffix>``, one file per item.

Exit status: 0 on success, 2 on bad arguments, unknown models, unreadable or malformed files (one line on
stderr), 1 on any other failure (one line; ``TOKENZOO_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

TOKEN_SUFFIXES = (".npz", ".safetensors")
OUTPUT_SUFFIXES = {
    "audio": (".wav", ".flac"),
    "image": (".png", ".jpg", ".jpeg", ".bmp", ".webp"),
    "video": (".npz",),
    "eeg": (".npz",),
}


class UsageError(Exception):
    """A problem with the command line or the files it names (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit status 2
        raise UsageError(f"{message} (see '{self.prog} --help')")


# ---------------------------------------------------------------------------------------------- helpers

def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, KeyError) and len(exc.args) == 1:
        text = str(exc.args[0])
    text = " ".join(text.split())
    return text or type(exc).__name__


def _parse_options(items: Optional[Sequence[str]]) -> Dict[str, Any]:
    import yaml

    out: Dict[str, Any] = {}
    for item in items or ():
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise UsageError(f"--option expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


def _load_model(args):
    import zoo

    kwargs: Dict[str, Any] = {}
    if getattr(args, "revision", None):
        kwargs["revision"] = args.revision
    if getattr(args, "cache_dir", None):
        kwargs["cache_dir"] = args.cache_dir
    if getattr(args, "offline", False):
        kwargs["local_files_only"] = True
    model = zoo.from_pretrained(args.name, **kwargs)
    device = getattr(args, "device", None)
    if device:
        import torch

        try:
            model = model.to(torch.device(device))
        except (RuntimeError, ValueError, AssertionError) as exc:
            raise UsageError(f"cannot use device {device!r}: {_one_line(exc)}") from exc
    model.eval()
    if not getattr(model, "registry_name", None):
        try:
            model.registry_name = str(args.name)
        except Exception:  # noqa: BLE001
            pass
    return model


def _check_inputs(paths: Sequence[str], what: str) -> List[Path]:
    out = []
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise UsageError(f"cannot read {what} {p}: no such file")
        if not os.access(path, os.R_OK):
            raise UsageError(f"cannot read {what} {p}: permission denied")
        out.append(path)
    return out


def _outputs(inputs: Sequence[Path], out: str, suffix: str, allowed: Sequence[str], what: str) -> List[Path]:
    """One output path per input (see the module docstring for the layout)."""
    target = Path(out)
    as_dir = len(inputs) > 1 or out.endswith(("/", os.sep)) or target.is_dir()
    if not as_dir:
        if target.suffix.lower() not in allowed:
            raise UsageError(f"-o {out}: {what} file must end with one of {list(allowed)}")
        paths = [target]
    else:
        paths = _folder_outputs(inputs, target, out, suffix)
    for src, dst in zip(inputs, paths):
        if dst.exists() and dst.resolve() == src.resolve():
            raise UsageError(f"-o {out}: writing {dst} would overwrite the input {src}")
    return paths


def _folder_outputs(inputs: Sequence[Path], target: Path, out: str, suffix: str) -> List[Path]:
    if target.exists() and not target.is_dir():
        raise UsageError(f"-o {out}: with several inputs -o must be a folder, and {out} is a file")
    paths, seen = [], {}
    for p in inputs:
        stem = p.name[: -len(".tokens" + p.suffix)] if p.name.endswith(".tokens" + p.suffix) else p.stem
        if stem in seen:
            raise UsageError(f"inputs {seen[stem]} and {p} would both write {target / (stem + suffix)}; "
                             "rename one or run them separately")
        seen[stem] = p
        paths.append(target / (stem + suffix))
    return paths


def _progress(items, desc: str, quiet: bool):
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="file", disable=quiet or len(items) < 2, file=sys.stderr)


def _say(msg: str, quiet: bool = False):
    if quiet:
        return
    from tqdm.auto import tqdm

    tqdm.write(msg, file=sys.stdout)


def _entry_table(entries) -> str:
    rows = [("name", "family", "modality", "codebook", "books", "rate", "bundled")]
    for e in entries:
        rate = "" if e.token_rate is None else f"{e.token_rate:g} {e.token_rate_unit or ''}".strip()
        rows.append((e.name, e.family, e.modality, "" if e.codebook_size is None else str(e.codebook_size),
                     "" if e.num_codebooks is None else str(e.num_codebooks), rate, "yes" if e.bundled else ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


# ---------------------------------------------------------------------------------------------- commands

def cmd_list(args) -> int:
    import zoo

    if args.family is not None and args.family not in zoo.list_families():
        raise UsageError(f"unknown family {args.family!r}; known families: {zoo.list_families()}")
    entries = zoo.list_models(modality=args.modality, family=args.family)
    if args.json:
        print(json.dumps([e.summary() for e in entries], indent=2))
        return 0
    if not entries:
        filt = " ".join(f"{k}={v}" for k, v in (("modality", args.modality), ("family", args.family)) if v)
        print(f"no registered checkpoints{(' with ' + filt) if filt else ''}")
    else:
        print(_entry_table(entries))
    return 0


def _cache_state(entry, cache_dir) -> Dict[str, str]:
    from huggingface_hub import try_to_load_from_cache

    state = {}
    for f in entry.files:
        if f.local is not None:
            path = entry.local_path(f)
            state[f.filename] = "local" if path.is_file() else "missing"
            continue
        try:
            hit = try_to_load_from_cache(f.repo_id or entry.repo_id, f.filename, cache_dir=cache_dir,
                                         revision=f.revision or entry.revision)
        except Exception:  # noqa: BLE001 - an odd revision string is not worth failing `info` for
            hit = None
        state[f.filename] = "cached" if isinstance(hit, str) else "not cached"
    return state


def cmd_info(args) -> int:
    from zoo.hub import entry_info
    from zoo.hub_configs_schema import get_entry

    entry = get_entry(args.name)
    if entry is not None:
        info = entry_info(entry)
        info["files_state"] = _cache_state(entry, args.cache_dir)
    else:
        model = _load_model(args)
        n_params = sum(p.numel() for p in model.parameters())
        info = {"name": args.name, "family": model.family, "modality": model.modality,
                "spec": model.spec.to_dict(), "parameters": n_params, "config": model.config.to_dict()}
        for attr in ("sample_rate", "sfreq"):
            if hasattr(type(model), attr):
                try:
                    info[attr] = getattr(model, attr)
                except Exception:  # noqa: BLE001
                    pass
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        import yaml

        print(yaml.safe_dump(json.loads(json.dumps(info, default=str)), sort_keys=False).rstrip())
    return 0


def cmd_encode(args) -> int:
    inputs = _check_inputs(args.inputs, "input file")
    suffix = "." + args.format if args.format else None
    if suffix is None:
        suffix = Path(args.output).suffix.lower() if len(inputs) == 1 and Path(args.output).suffix else ".npz"
    outputs = _outputs(inputs, args.output, suffix, TOKEN_SUFFIXES, "tokens")
    if args.format and len(outputs) == 1 and outputs[0].suffix.lower() != suffix:
        raise UsageError(f"-o {args.output} does not end with .{args.format} (--format {args.format})")
    options = _parse_options(args.option)
    model = _load_model(args)
    if not model.spec.discrete:
        raise UsageError(f"{args.name} is a continuous tokenizer ({model.spec.latent_channels} latent channels); "
                         "it has no discrete tokens to write")
    for path, out in zip(inputs, _progress(outputs, "encode", args.quiet)):
        tokens = model.encode_file(path, **options)
        tokens.metadata["model"] = str(args.name)
        tokens.save(out)
        notes = tokens.metadata.get("notes")
        _say(f"{path} -> {out}: ids {list(tokens.ids.shape)}" + (f" ({notes})" if notes else ""), args.quiet)
    return 0


def _decode_kwargs(model, options: Dict[str, Any], seed: Optional[int]) -> Dict[str, Any]:
    kwargs = dict(options)
    if seed is not None:
        import torch

        torch.manual_seed(seed)
        params = inspect.signature(model._decode).parameters
        if "generator" in params and "generator" not in kwargs:
            kwargs["generator"] = torch.Generator(device=model.device).manual_seed(seed)
    return kwargs


def cmd_decode(args) -> int:
    from zoo.tokens import Tokens

    inputs = _check_inputs(args.tokens, "tokens file")
    for p in inputs:
        if p.suffix.lower() not in TOKEN_SUFFIXES:
            raise UsageError(f"cannot read tokens file {p}: expected one of {list(TOKEN_SUFFIXES)}")
    loaded = []
    for p in inputs:
        try:
            loaded.append(Tokens.load(p))
        except (ValueError, TypeError) as exc:
            raise UsageError(f"cannot read tokens file {p}: {_one_line(exc)}") from exc
    options = _parse_options(args.option)
    model = _load_model(args)
    allowed = OUTPUT_SUFFIXES.get(model.modality, (model.output_suffix(),))
    suffix = args.suffix or model.output_suffix()
    if not suffix.startswith("."):
        suffix = "." + suffix
    if suffix.lower() not in allowed:
        raise UsageError(f"--suffix {suffix}: {model.modality} output must be one of {list(allowed)}")
    outputs = _outputs(inputs, args.output, suffix, allowed, f"{model.modality} output")
    for tokens, p in zip(loaded, inputs):
        fam = tokens.metadata.get("family")
        if fam and fam != model.family:
            raise UsageError(f"{p} was made by a {fam!r} tokenizer, {args.name} is {model.family!r}")
    kwargs = _decode_kwargs(model, options, args.seed)
    for tokens, out in zip(loaded, _progress(outputs, "decode", args.quiet)):
        written = []
        for i in range(tokens.batch_size):
            item = tokens[i]
            if item.lengths is not None:
                n = int(item.lengths[0])
                item = Tokens(item.ids[..., :n], None, dict(item.metadata))
            y = model.decode(item, **kwargs)
            target = out if tokens.batch_size == 1 else out.with_name(f"{out.stem}_{i}{out.suffix}")
            model.write_file(y, target, tokens.metadata)
            written.append(str(target))
        _say(f"{out if len(written) == 1 else ', '.join(written)}: decoded {list(tokens.ids.shape)} ids",
             args.quiet)
    return 0


def cmd_bench(args) -> int:
    from zoo import bench

    data = Path(args.data)
    if not data.is_dir():
        raise UsageError(f"--data {args.data}: no such folder")
    extractors = {}
    for item in args.extractor or []:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise UsageError(f"--extractor {item!r}: expected METRIC=PATH (e.g. rfid=pt_inception-2015-12-05.pth, "
                             "asr_wer=DIR)")
        if key in extractors:
            raise UsageError(f"--extractor {key} given twice")
        if not Path(value).expanduser().exists():
            raise UsageError(f"--extractor {key}={value}: no such file" + (" or folder" if key == "asr_wer" else ""))
        extractors[key] = str(Path(value).expanduser())
    try:
        results = bench.run(args.names, data, out=args.out, metrics=args.metrics or None, limit=args.limit,
                            batch_size=args.batch_size, device=args.device or "cpu", progress=not args.quiet,
                            decode_kwargs=_parse_options(args.option), seed=args.seed,
                            transcripts=args.transcripts, extractors=extractors or None)
    except ValueError as exc:
        if "extractors has unknown metrics" in str(exc):
            raise UsageError(f"--extractor: {exc}") from exc
        raise
    print(bench.markdown_table(results))
    print(f"report: {Path(args.out) / 'report.html'}")
    return 0


# ---------------------------------------------------------------------------------------------- parser

# Commands whose options live in their own module: ``add_arguments(parser)`` + ``run_from_args(args)``.
# The module is imported only when its command runs, so the other commands stay quick.
DELEGATED = {
    "tokenize": ("zoo.tokenize", "tokenize a corpus into token shards (see docs/tokenize.md)"),
    "train": ("zoo.train", "train a tokenizer with the shared accelerate loop (see docs/training.md)"),
    "demo": ("zoo.demo", "run the bundled tokenizers on the shipped example files, offline, with an HTML report"),
}


def _run_delegated(command: str, rest: Sequence[str]) -> int:
    import importlib

    module_name, _ = DELEGATED[command]
    module = importlib.import_module(module_name)
    if not (callable(getattr(module, "add_arguments", None)) and callable(getattr(module, "run_from_args", None))):
        raise UsageError(f"'tokenzoo {command}' is not available in this version ({module_name} has no command line "
                         "yet); use its Python API")
    parser = _Parser(prog=f"tokenzoo {command}", description=DELEGATED[command][1])
    module.add_arguments(parser)
    args = parser.parse_args(list(rest))
    return int(module.run_from_args(args) or 0)


def _add_model_options(p):
    p.add_argument("--revision", help="Hub branch, tag or commit sha")
    p.add_argument("--cache-dir", help="Hugging Face cache folder (default: the HF_HUB_CACHE / HF_HOME one)")
    p.add_argument("--offline", action="store_true", help="use only the local cache (like HF_HUB_OFFLINE=1)")
    p.add_argument("--device", help="torch device, e.g. cpu or cuda:0 (default: cpu)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tokenzoo", description="Multimodal tokenizer zoo: signals to integer tokens and back.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("list", help="registered checkpoints")
    p.add_argument("--modality", choices=["audio", "image", "video", "eeg"])
    p.add_argument("--family")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("info", help="what a checkpoint is: registry entry, or a loaded model's spec and config")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_model_options(p)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("encode", help="files -> token files")
    p.add_argument("name", metavar="NAME")
    p.add_argument("inputs", metavar="INPUT", nargs="+")
    p.add_argument("-o", "--output", required=True, metavar="TOKENS",
                   help="tokens file (one input) or folder (several inputs)")
    p.add_argument("--format", choices=["npz", "safetensors"], help="token file format (default: from -o, else npz)")
    p.add_argument("--option", action="append", metavar="KEY=VALUE", help="keyword argument for encode (repeatable)")
    p.add_argument("-q", "--quiet", action="store_true")
    _add_model_options(p)
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("decode", help="token files -> files")
    p.add_argument("name", metavar="NAME")
    p.add_argument("tokens", metavar="TOKENS", nargs="+")
    p.add_argument("-o", "--output", required=True, metavar="OUTPUT",
                   help="output file (one tokens file) or folder (several)")
    p.add_argument("--suffix", help="output suffix in folder mode (default: .wav / .png / .npz by modality)")
    p.add_argument("--option", action="append", metavar="KEY=VALUE", help="keyword argument for decode (repeatable)")
    p.add_argument("--seed", type=int, help="seed for stochastic decoders")
    p.add_argument("-q", "--quiet", action="store_true")
    _add_model_options(p)
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("bench", help="reconstruction benchmark: metrics, codebook usage, throughput, report")
    p.add_argument("names", metavar="NAME", nargs="+")
    p.add_argument("--data", required=True, help="folder of input files")
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--metrics", nargs="*", help="metric names (default: all of the modality)")
    p.add_argument("--limit", type=int, help="at most this many files")
    p.add_argument("--batch-size", type=int, default=1, help="batch for the throughput measurement")
    p.add_argument("--device", help="torch device (default: cpu)")
    p.add_argument("--option", action="append", metavar="KEY=VALUE", help="keyword argument for decode")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--transcripts", help="JSON or TSV of file name -> transcript (text-aware codecs such as TaDiCodec; "
                   "also the reference of asr_wer/asr_cer)")
    p.add_argument("--extractor", action="append", metavar="METRIC=PATH",
                   help="weights file of a metric's feature network, e.g. rfid=pt_inception-2015-12-05.pth, "
                        "fvd=i3d_torchscript.pt, utmos=utmos22_strong_step7459_v1.pt, "
                        "speaker_sim_wavlm=wavlm_large_finetune.pth, or asr_wer=DIR, a faster-whisper model folder "
                        "used by asr_wer and asr_cer (repeatable; see docs/benchmark.md)")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_bench)

    for command, (_, help_text) in DELEGATED.items():
        p = sub.add_parser(command, help=help_text, add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(func=lambda args, command=command: _run_delegated(command, args.rest))

    return parser


def _version() -> str:
    try:
        from importlib.metadata import version

        return f"tokenzoo {version('tokenzoo')}"
    except Exception:  # noqa: BLE001
        return "tokenzoo"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 bad usage or unreadable input, 1 other failure)."""
    from zoo.hub import ChecksumError
    from zoo.hub_configs_schema import HubConfigError

    parser = build_parser()
    debug = os.environ.get("TOKENZOO_DEBUG", "") not in ("", "0")
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        if argv and argv[0] in DELEGATED:  # its own options, parsed by its own module's parser
            return _run_delegated(argv[0], argv[1:])
        args = parser.parse_args(argv)
        if getattr(args, "func", None) is None:
            raise UsageError("a command is required: list, info, encode, decode, bench, tokenize, train or demo "
                             "(see 'tokenzoo --help')")
        return int(args.func(args) or 0)
    except SystemExit as exc:  # --help / --version
        return int(exc.code or 0) if isinstance(exc.code, int) else 0
    except (UsageError, ValueError, TypeError, FileNotFoundError, PermissionError, IsADirectoryError, KeyError,
            HubConfigError, ChecksumError) as exc:
        if debug:
            raise
        print(f"tokenzoo: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tokenzoo: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `tokenzoo list | head`: the reader left; stop quietly
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 1
    except Exception as exc:  # noqa: BLE001 - one line, not a stack trace; TOKENZOO_DEBUG=1 shows it
        if debug:
            raise
        print(f"tokenzoo: error: {type(exc).__name__}: {_one_line(exc)} (set TOKENZOO_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
