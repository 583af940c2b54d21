"""The command line: parses arguments, calls the library, turns errors into one line.

    germinate train TRAIN_DIR --out RUN_DIR        the recipe, end to end
    germinate lr-find TRAIN_DIR --out DIR          the LR range test alone
    germinate predict RUN_DIR IMAGES_DIR --submission FILE
    germinate evaluate RUN_DIR LABELLED_DIR [--json FILE]
    germinate show-batch TRAIN_DIR --out batch.png
    germinate report RUN_DIR
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from germinate._version import __version__
from germinate.config import TrainConfig

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (plus where to get help), not a usage block."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        raise SystemExit(EXIT_USER_ERROR)


def _lr(text: str) -> float | str:
    if text == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _on_off(text: str) -> str:
    if text not in ("auto", "on", "off"):
        raise argparse.ArgumentTypeError(f"expected auto, on or off, got {text!r}")
    return text


def _data_args(p: argparse.ArgumentParser) -> None:
    d = TrainConfig()  # help texts quote the real defaults
    g = p.add_argument_group("data")
    g.add_argument("--size", type=int, help=f"training image size in pixels (default {d.size})")
    g.add_argument("--test-size", type=int, metavar="PX", help="size the model is validated and used at (default: 1.25 x --size)")
    g.add_argument("--bs", type=int, help=f"batch size (default {d.bs})")
    g.add_argument("--limit-per-class", type=int, metavar="K", help="use at most K images per class (quick runs)")
    g.add_argument("--seed", type=int, help=f"random seed (default {d.seed}); the same seed repeats a run exactly")
    g.add_argument("--workers", type=int, help="data-loading processes; 0 loads in the main process (default)")
    g.add_argument("--cache-dir", help="where decoded images are cached (default ~/.cache/germinate)")
    g.add_argument("--no-cache", dest="use_cache", action="store_false", default=None, help="decode images from their files every epoch")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default: CUDA when available")
    g.add_argument("--arch", help="backbone (default efficientnet_lite0, offline); resnet18..152 or any timm name")
    g.add_argument("--weights", metavar="FILE", help="pretrained backbone weights (safetensors or state dict)")
    g.add_argument("--no-pretrained", dest="pretrained", action="store_false", default=None, help="train from scratch")
    g.add_argument("--flip", help="augmentation policy: top-down (default), side-on or none")
    g.add_argument("--quiet", action="store_true", default=None, help="no progress bars or tables")


def _train_args(p: argparse.ArgumentParser) -> None:
    _data_args(p)
    d = TrainConfig()
    g = p.add_argument_group("validation")
    v = g.add_mutually_exclusive_group()
    v.add_argument("--valid-pct", type=float, help=f"fraction held out for validation, stratified (default {d.valid_pct})")
    v.add_argument("--valid", dest="valid_dir", metavar="DIR", help="a labelled folder to validate on instead")
    g = p.add_argument_group("recipe")
    g.add_argument("--lr", type=_lr, help="peak LR, or auto (default): the LR range test before each stage")
    g.add_argument("--lrs", type=_floats, help="peak LRs of the unfrozen stage per group: early,late,head")
    g.add_argument("--lr-ratio", type=float, help=f"differential LRs: [lr/r^2, lr/r, lr] (default {d.lr_ratio:g})")
    g.add_argument("--suggest", choices=["valley", "minimum", "steepest"], help="range-test rule (default valley)")
    g.add_argument("--freeze-epochs", "--head-cycles", dest="freeze_epochs", type=int, help="head-only epochs (one-epoch SGDR cycles); "
                   f"0 skips (default {d.freeze_epochs})")
    g.add_argument("--schedule", choices=["sgdr", "cosine", "onecycle", "flat"], help="LR schedule (default sgdr)")
    g.add_argument("--epochs", type=int, help="unfrozen epochs for cosine/onecycle/flat (default 7); 0 skips")
    g.add_argument("--cycles", type=int, help=f"SGDR cycles in the unfrozen stage (default {d.cycles}: {d.unfrozen_epochs():g} epochs); 0 skips")
    g.add_argument("--cycle-len", type=int, help=f"epochs in the first SGDR cycle (default {d.cycle_len})")
    g.add_argument("--cycle-mult", type=int, help=f"each SGDR cycle is this many times longer (default {d.cycle_mult})")
    g.add_argument("--warmup-pct", type=float, help="linear warm-up at the start of each stage (default 0)")
    g.add_argument("--opt", choices=["adamw", "sgd"], help="optimizer (default adamw)")
    g.add_argument("--wd", type=float, help=f"weight decay (default {d.wd:g})")
    g.add_argument("--label-smoothing", type=float, help=f"label smoothing (default {d.label_smoothing:g})")
    g.add_argument("--dropout", type=float, help=f"head dropout (default {d.dropout:g}; the first layer gets half)")
    g.add_argument("--hidden", type=int, help=f"head hidden units (default {d.hidden}; 0: a single linear layer)")
    g.add_argument("--min-scale", type=float, help=f"smallest random crop, as a fraction of the image area (default {d.min_scale:g})")
    g.add_argument("--max-rotate", type=float, help=f"largest random rotation in degrees, corners reflected (default {d.max_rotate:g})")
    g.add_argument("--max-lighting", type=float, help=f"largest brightness/contrast change, as a fraction (default {d.max_lighting:g})")
    g.add_argument("--precompute", type=_on_off, help="head stage on precomputed features: auto (default), on, off")
    g.add_argument("--precompute-augs", type=int, metavar="K", help=f"augmented copies to precompute (default {d.precompute_augs})")
    g.add_argument("--snapshot-ensemble", action="store_true", default=None, help="average the models at each SGDR cycle end")
    g.add_argument("--tta", type=int, metavar="N", help="TTA views besides the plain one for the final evaluation")
    g.add_argument("--amp", type=_on_off, help="bfloat16 autocast: auto (CUDA only), on, off")
    g.add_argument("--channels-last", type=_on_off, help="NHWC memory layout: auto (on), on, off")


def build_parser() -> argparse.ArgumentParser:
    """The germinate command line."""
    parser = Parser(prog="germinate", description="Grow an image classifier from a folder of images.")
    parser.add_argument("--version", action="version", version=f"germinate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("train", help="train with the recipe and write a run folder")
    p.add_argument("train_dir", nargs="?", metavar="TRAIN_DIR", help="labelled folder: TRAIN_DIR/<class>/<image>")
    p.add_argument("--out", metavar="RUN_DIR", help="run folder to write")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    p.add_argument("--overwrite", action="store_true", help="write over an existing run folder")
    _train_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("lr-find", help="run the LR range test and suggest a learning rate")
    p.add_argument("train_dir", metavar="TRAIN_DIR")
    p.add_argument("--out", metavar="DIR", required=True, help="folder for lr_find.png and lr_find.csv")
    p.add_argument("--start", type=float, default=1e-7, help="first LR (default 1e-7)")
    p.add_argument("--end", type=float, default=10.0, help="last LR (default 10)")
    p.add_argument("--steps", type=int, default=100, help="mini-batches (default 100)")
    p.add_argument("--stop-div", type=float, default=4.0, help="stop once the smoothed loss passes this times its minimum (default 4)")
    p.add_argument("--unfrozen", action="store_true", help="test the whole network instead of the head")
    p.add_argument("--probe", type=int, default=64, help="loss measured on a fixed batch of N training images after each step (default 64); 0: each step's own batch")
    p.add_argument("--suggest", choices=["valley", "minimum", "steepest"], default="valley")
    p.add_argument("--valid-pct", type=float)
    _data_args(p)
    p.set_defaults(func=cmd_lr_find)

    p = sub.add_parser("predict", help="predict a folder of images; write a Kaggle submission")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("images_dir", metavar="IMAGES_DIR", help="a flat folder of images")
    p.add_argument("--submission", metavar="FILE", help="submission CSV to write (default RUN_DIR/submission.csv)")
    p.add_argument("--probs", metavar="FILE", help="also write one probability column per class")
    _inference_args(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("evaluate", help="metrics of a trained model on a labelled folder")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("labelled_dir", metavar="LABELLED_DIR")
    p.add_argument("--json", metavar="FILE", help="write the metrics as JSON")
    p.add_argument("--out", metavar="DIR", help="folder for confusion.csv/png (default RUN_DIR/eval-<name>)")
    _inference_args(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("show-batch", help="draw a grid of augmented training images")
    p.add_argument("train_dir", metavar="TRAIN_DIR")
    p.add_argument("--out", metavar="PNG", default="batch.png")
    p.add_argument("--flip", default="top-down", help="top-down (default), side-on or none")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--min-scale", type=float)
    p.add_argument("--max-rotate", type=float)
    p.add_argument("--max-lighting", type=float)
    p.add_argument("--n", type=int, default=16, help="number of images (default 16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir")
    p.set_defaults(func=cmd_show_batch)

    p = sub.add_parser("report", help="write RUN_DIR/report.html again")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.set_defaults(func=cmd_report)
    return parser


def _inference_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tta", type=int, metavar="N", help="views besides the plain one (default: all the flip policy allows; 0: none)")
    p.add_argument("--bs", type=int, default=64)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--cache-dir")
    p.add_argument("--no-cache", dest="use_cache", action="store_false", default=True)
    p.add_argument("--quiet", action="store_true")


def _config_from(args: argparse.Namespace):
    from dataclasses import fields

    names = {f.name for f in fields(TrainConfig)}
    given = {k: v for k, v in vars(args).items() if k in names and v is not None}
    if "train_dir" in given:
        given["train_dir"] = str(given["train_dir"])
    return TrainConfig(**given)


def _reporter(args: argparse.Namespace):
    from germinate.ui import Reporter

    return Reporter(quiet=bool(getattr(args, "quiet", False)))


def cmd_train(args: argparse.Namespace) -> int:
    from germinate.errors import GerminateError
    from germinate.recipe import resume, train

    if args.resume:
        resume(args.resume, _reporter(args))
        return 0
    if not args.train_dir or not args.out:
        raise GerminateError("train needs TRAIN_DIR and --out RUN_DIR (or --resume RUN_DIR)")
    train(_config_from(args), args.out, args.overwrite, _reporter(args))
    return 0


def cmd_lr_find(args: argparse.Namespace) -> int:
    from germinate.recipe import create_learner

    cfg = _config_from(args)
    reporter = _reporter(args)
    learn = create_learner(cfg, None, reporter)
    learn.unfreeze() if args.unfrozen else learn.freeze()
    result = learn.lr_find(args.start, args.end, args.steps, args.stop_div, args.suggest, args.probe)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result.to_csv(out / "lr_find.csv")
    result.plot(out / "lr_find.png", "LR range test (unfrozen)" if args.unfrozen else "LR range test (head)")
    if result.suggestion is None:
        from germinate.errors import GerminateError

        raise GerminateError(f"{result.error} (curve written to {out / 'lr_find.png'})")
    others = ", ".join(f"{k} {v:.2e}" for k, v in result.suggestions.items())
    reporter.info(f"wrote {out / 'lr_find.png'} and {out / 'lr_find.csv'}; suggestions: {others}")
    reporter.result(f"{result.suggestion:.3g}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from germinate.inference import predict_folder

    submission = args.submission or str(Path(args.run_dir) / "submission.csv")
    predict_folder(args.run_dir, args.images_dir, submission, args.probs, args.tta, args.bs, args.device,
                   args.cache_dir, args.use_cache, _reporter(args))
    return 0


def print_evaluation(result: dict, reporter) -> None:
    """The evaluation as tables on the terminal."""
    from rich.table import Table

    summary = Table(title=f"{result['n']} images")
    for col in ("", "accuracy", "micro-F1", "macro-F1", "loss"):
        summary.add_column(col, justify="right")
    for name, r in (("plain", result["plain"]), (f"TTA ({result['tta_views']} views)", result)):
        summary.add_row(name, *(f"{r[k]:.4f}" for k in ("accuracy", "f1_micro", "f1_macro", "loss")))
    per = Table(title="per class (with TTA)")
    for col in ("class", "precision", "recall", "F1", "support"):
        per.add_column(col, justify="right" if col != "class" else "left")
    for c, m in result["per_class"].items():
        per.add_row(c, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", str(m["support"]))
    reporter.out.print(summary)
    reporter.out.print(per)
    if result["most_confused"]:
        reporter.out.print("most confused (actual -> predicted: count): " + "; ".join(f"{a} -> {p}: {n}" for a, p, n in result["most_confused"]))
    reporter.out.print(f"confusion matrix: {result['outputs']}/confusion.csv, confusion.png")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from germinate.inference import evaluate_folder
    from germinate.utils import write_text_atomic

    reporter = _reporter(args)
    result = evaluate_folder(args.run_dir, args.labelled_dir, args.out, args.tta, args.bs, args.device,
                             args.cache_dir, args.use_cache, reporter)
    print_evaluation(result, reporter)
    if args.json:
        write_text_atomic(args.json, json.dumps(result, indent=2))
    return 0


def cmd_show_batch(args: argparse.Namespace) -> int:
    from germinate.show import show_batch

    d = TrainConfig()
    pick = lambda value, default: default if value is None else value
    show_batch(args.train_dir, args.out, args.flip, args.size, pick(args.min_scale, d.min_scale),
               pick(args.max_rotate, d.max_rotate), pick(args.max_lighting, d.max_lighting), args.n, args.seed, args.cache_dir)
    print(args.out)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from germinate.evaluate.report import write_report

    print(write_report(args.run_dir))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: run a command; user errors become `germinate: error: ...` and exit 2."""
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    from germinate.errors import GerminateError, TrainingInterrupted

    try:
        return func(args)
    except GerminateError as e:
        sys.stderr.write(f"germinate: error: {e}\n")
        return EXIT_USER_ERROR
    except TrainingInterrupted as e:
        sys.stderr.write(f"germinate: {e}\n")
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        sys.stderr.write("germinate: interrupted\n")
        return EXIT_INTERRUPTED
    except OSError as e:  # disk full, permission denied, ...: the environment, not a bug
        where = f": {e.filename}" if e.filename else ""
        sys.stderr.write(f"germinate: error: {e.strerror or e}{where}\n")
        return 1
