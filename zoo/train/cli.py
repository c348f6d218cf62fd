"""``tokenzoo train RECIPE --config FILE --data DIR --out DIR [--resume] [--init NAME_OR_PATH]``."""

from __future__ import annotations

from pathlib import Path


def add_arguments(p) -> None:
    p.add_argument("recipe", help="recipe name (see zoo.train.list_recipes())")
    p.add_argument("--config", help="training YAML with 'train:' and 'recipe:' sections (defaults when omitted)")
    p.add_argument("--data", required=True, nargs="+", help="training folder(s) or webdataset .tar shards")
    p.add_argument("--eval-data", nargs="+", help="held-out folder(s) (else train.holdout_files of --data)")
    p.add_argument("--out", required=True, help="run folder: checkpoints, logs, and the trained tokenizer")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    p.add_argument("--init", help="warm-start from a registered name, a saved folder or a Hub repo id")
    p.add_argument("--no-progress", action="store_true")


def run_from_args(args) -> int:
    from .engine import fit
    from .registry import load_recipe_config

    for d in list(args.data) + list(args.eval_data or []):
        if not Path(d).exists():
            raise ValueError(f"data {d} does not exist")
    recipe = load_recipe_config(args.recipe, args.config)
    data = [Path(d) for d in args.data]
    eval_data = [Path(d) for d in args.eval_data] if args.eval_data else None
    summary = fit(recipe, data if len(data) > 1 else data[0], args.out, resume=args.resume, init=args.init,
                  eval_data=eval_data, progress=not args.no_progress)
    if summary.get("interrupted"):
        print(f"interrupted at step {summary['step']}; continue with --resume")
        return 130
    print(f"trained {recipe.name} for {summary['step']} steps ({summary['samples_per_s']:.2f} samples/s); "
          f"final held-out {summary['final_eval']}; tokenizer saved in {args.out}")
    return 0
