"""The command line: parses arguments, calls the library, turns errors into one line.

    germinate train TRAIN_DIR --out RUN_DIR        train, end to end (--preset recipe: the course recipe)
    germinate lr-find TRAIN_DIR --out DIR          the LR range test alone
    germinate predict RUN_DIR... IMAGES_DIR --submission FILE
    germinate evaluate RUN_DIR... LABELLED_DIR [--json FILE]
    germinate show-batch TRAIN_DIR --out batch.png
    germinate report RUN_DIR
    germinate serve RUN_DIR                        HTTP API and an upload page
    germinate export RUN_DIR --onnx FILE           the model as ONNX
    germinate cache --info | --clear               the decoded-image cache
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from germinate._version import __version__
from germinate.config import SGDR_ONLY, TrainConfig, cli_fields, flag_of

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
    value = _number(text, float)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number or auto, got {text}")
    return value


def _number(text: str, kind: type) -> float:
    try:
        return kind(text)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def value_parser(f: dataclasses.Field) -> Callable[[str], object]:
    """A function that parses and checks one command-line value of config field `f`, so that a
    value out of range is a one-line usage error at parse time."""
    from germinate.config import check_value

    kind = f.metadata["kind"]

    def parse(text: str) -> object:
        if kind == "lr":
            return _lr(text)
        if kind == "floats":
            value = _floats(text)
        elif kind == "ints":
            value = [int(x) if x == int(x) else x for x in _floats(text)]  # 1.5 stays, to be refused by name
        elif kind in ("int", "float"):
            value = _number(text, int if kind == "int" else float)
        else:
            value = text
        problem = check_value(f, value)
        if problem:  # argparse puts "argument --flag: " before it
            raise argparse.ArgumentTypeError(problem if problem.startswith("Invalid") else problem.split(" ", 1)[1])
        return value

    return parse


def _help(f: dataclasses.Field) -> str:
    meta = f.metadata
    default = meta["default_text"] or (f.default if f.default is not None else "none")
    return f"{meta['help']} (default: {default})"


def add_config_options(p: argparse.ArgumentParser, groups: tuple[str, ...] | None = None) -> None:
    """One option per TrainConfig field (of `groups`, or all), its help, default and check taken
    from the field. Every option defaults to None: "not given", so the config's default applies."""
    sections: dict[str, argparse._ArgumentGroup] = {}
    for f in cli_fields():
        group = f.metadata["group"]
        if groups is not None and group not in groups:
            continue
        g = sections.setdefault(group, p.add_argument_group(group))
        flags = f.metadata["flags"] or (flag_of(f),)
        if f.metadata["kind"] == "bool":
            g.add_argument(*flags, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=_help(f))
            continue
        choices = f.metadata["choices"]
        metavar = f.metadata["metavar"] or ("{" + ",".join(choices) + "}" if choices else f.name.upper())
        g.add_argument(*flags, dest=f.name, type=value_parser(f), default=None, metavar=metavar, help=_help(f))


def _field(name: str) -> dataclasses.Field:
    return next(f for f in dataclasses.fields(TrainConfig) if f.name == name)


def build_parser() -> argparse.ArgumentParser:
    """The germinate command line."""
    parser = Parser(prog="germinate", description="Grow an image classifier from a folder of images.")
    parser.add_argument("--version", action="version", version=f"germinate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("train", help="train (the default: a plain fine-tuning loop; --preset recipe: the course recipe) and write a run folder")
    p.add_argument("train_dir", nargs="?", metavar="TRAIN_DIR", help="labelled folder: TRAIN_DIR/<class>/<image>")
    p.add_argument("--out", metavar="RUN_DIR", help="run folder to write")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run (--device, --workers may change)")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out (only files germinate wrote)")
    p.add_argument("--quiet", action="store_true", default=None, help="no progress bars or tables")
    add_config_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("lr-find", help="run the LR range test and print the LR to train with")
    p.add_argument("train_dir", metavar="TRAIN_DIR")
    p.add_argument("--out", metavar="DIR", required=True, help="folder for lr_find.png, .csv and .json")
    p.add_argument("--start", type=float, default=1e-7, help="first LR (default 1e-7)")
    p.add_argument("--end", type=float, default=10.0, help="last LR (default 10)")
    p.add_argument("--steps", type=int, help="mini-batches (default: --lr-find-steps, 100)")
    p.add_argument("--stop-div", type=float, default=4.0, help="stop once the smoothed loss passes this times its minimum (default 4)")
    p.add_argument("--unfrozen", action="store_true", help="test the whole network instead of the head")
    p.add_argument("--probe", type=int, default=64, help="loss measured on a fixed batch of N training images after each step (default 64); 0: each step's own batch")
    p.add_argument("--quiet", action="store_true", default=None, help="no progress bars")
    add_config_options(p)
    p.set_defaults(func=cmd_lr_find)

    p = sub.add_parser("predict", help="predict a folder of images; write a Kaggle submission")
    p.add_argument("run_dir", metavar="RUN_DIR", nargs="+", help="a run folder, or several: their TTA probabilities "
                   "are averaged (an ensemble)")
    p.add_argument("images_dir", metavar="IMAGES_DIR", help="a flat folder of images")
    p.add_argument("--submission", metavar="FILE", help="submission CSV to write (default RUN_DIR/submission.csv)")
    p.add_argument("--probs", metavar="FILE", help="also write one probability column per class")
    _inference_args(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("evaluate", help="metrics of a trained model on a labelled folder")
    p.add_argument("run_dir", metavar="RUN_DIR", nargs="+", help="a run folder, or several (an ensemble)")
    p.add_argument("labelled_dir", metavar="LABELLED_DIR")
    p.add_argument("--json", metavar="FILE", help="write the metrics as JSON")
    p.add_argument("--out", metavar="DIR", help="folder for confusion.csv/png (default RUN_DIR/eval-<name>)")
    _inference_args(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("show-batch", help="draw a grid of augmented training images")
    p.add_argument("train_dir", metavar="TRAIN_DIR")
    p.add_argument("--out", metavar="PNG", default="batch.png")
    p.add_argument("--n", type=_count(1, 256), default=16, help="number of images (default 16)")
    add_config_options(p, ("augmentation",))
    for name in ("size", "seed", "cache_dir"):
        f = _field(name)
        p.add_argument(flag_of(f), dest=name, type=value_parser(f), default=None, help=_help(f))
    p.set_defaults(func=cmd_show_batch)

    p = sub.add_parser("report", help="write RUN_DIR/report.html again")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("serve", help="serve a trained model: HTTP API and an upload page")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=_count(0, 65535), default=8000, help="port (default 8000)")
    p.add_argument("--tta", type=value_parser(_field("tta")), metavar="N",
                   help="TTA views besides the plain one, up to the flip policy's fixed views (default: all of them)")
    p.add_argument("--max-batch", type=_count(1, 1024), default=32, help="images classified together at most (default 32)")
    p.add_argument("--max-wait-ms", type=_count(0, 1000), default=5, help="how long a batch waits for more images (default 5)")
    p.add_argument("--max-bytes", type=_count(1), default=10 * 2**20, help="largest image file accepted, in bytes (default 10 MiB)")
    p.add_argument("--max-pixels", type=_count(1), default=40_000_000, help="largest image accepted, in pixels (default 40 M)")
    p.add_argument("--max-files", type=_count(1, 1024), default=16, help="images per request at most (default 16)")
    p.add_argument("--backend", choices=["auto", "pytorch", "onnxruntime"], default="auto",
                   help="auto (default): ONNX Runtime on CPU (measured 2-3x faster; RUN_DIR/model.onnx is exported "
                   "once), PyTorch on CUDA")
    p.add_argument("--onnx", metavar="FILE", help="answer with ONNX Runtime and this export")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("export", help="export a trained model (ONNX)")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--onnx", metavar="FILE", required=True, help="ONNX file to write (uint8 images in, probabilities out)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("cache", help="show or clear the decoded-image cache")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--info", action="store_true", help="sizes and images per resolution")
    what.add_argument("--clear", action="store_true", help="delete every cached image")
    p.add_argument("--cache-dir", metavar="DIR", help="the cache folder (default: $GERMINATE_CACHE or ~/.cache/germinate)")
    p.set_defaults(func=cmd_cache)
    return parser


def _count(lo: int, hi: int | None = None) -> Callable[[str], int]:
    from germinate.config import Bound

    bound = Bound(lo, hi, integer=True)

    def parse(text: str) -> int:
        value = _number(text, int)
        if not bound.ok(value):
            raise argparse.ArgumentTypeError(f"must be {bound.describe()}, got {text}")
        return int(value)

    return parse


def _inference_args(p: argparse.ArgumentParser) -> None:
    tta = _field("tta")
    p.add_argument("--tta", type=value_parser(tta), metavar="N", help="views besides the plain one (default: all the flip policy allows; 0: none)")
    p.add_argument("--bs", type=_count(1, 4096), default=64, help="images per batch (default 64)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--cache-dir")
    p.add_argument("--no-cache", dest="use_cache", action="store_false", default=True)
    p.add_argument("--quiet", action="store_true")


def _given(args: argparse.Namespace) -> dict:
    """The config settings given on the command line (everything not given is None)."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


def _config_from(args: argparse.Namespace) -> TrainConfig:
    given = _given(args)
    if "valid_dir" in given and "valid_pct" in given:
        from germinate.errors import GerminateError

        raise GerminateError("--valid and --valid-pct exclude each other: validate on a folder, or on a hold-out")
    if "train_dir" in given:
        given["train_dir"] = str(given["train_dir"])
    cfg = TrainConfig.from_preset(given.pop("preset", "fast"), **given)
    sgdr_only = [flag_of(f) for f in cli_fields() if f.name in SGDR_ONLY and f.name in given]
    # --cycles with the preset's cosine would be ignored: the run would not be the one asked for
    if sgdr_only and "schedule" not in given and cfg.schedule != "sgdr":
        from germinate.errors import GerminateError

        raise GerminateError(f"{sgdr_only[0]} applies to SGDR, and the {cfg.preset} preset's schedule is "
                             f"{cfg.schedule}: add --schedule sgdr (or --preset recipe, the course recipe)")
    if "sam_last" in given and not cfg.sam:  # it would change nothing: not the run asked for
        from germinate.errors import GerminateError

        raise GerminateError(f"--sam-last applies to sharpness-aware minimisation, which the {cfg.preset} preset "
                             "leaves off: add --sam RHO (0.05 is usual)")
    return cfg


def _reporter(args: argparse.Namespace):
    from germinate.ui import Reporter

    return Reporter(quiet=bool(getattr(args, "quiet", False)))


def cmd_train(args: argparse.Namespace) -> int:
    from germinate.errors import GerminateError
    from germinate.recipe import RESUME_SAFE, resume, train

    if args.resume:
        others = [name for name, given in (("TRAIN_DIR", args.train_dir), ("--out", args.out), ("--overwrite", args.overwrite)) if given]
        if others:
            raise GerminateError(f"--resume continues the run where it is; drop {', '.join(others)}")
        changes = {k: v for k, v in _given(args).items() if k != "train_dir"}
        names = {f.name: flag_of(f) for f in cli_fields()}
        unsafe = [names.get(k, "--" + k) for k in changes if k not in RESUME_SAFE]
        if unsafe:
            allowed = ", ".join("--" + k for k in RESUME_SAFE)
            raise GerminateError(f"--resume keeps the run's settings; {', '.join(unsafe)} cannot change (only {allowed} "
                                 "may); start a new run with --out to change them")
        resume(args.resume, _reporter(args), **changes)
        return 0
    if not args.train_dir or not args.out:
        raise GerminateError("train needs TRAIN_DIR and --out RUN_DIR (or --resume RUN_DIR)")
    train(_config_from(args), args.out, args.overwrite, _reporter(args))
    return 0


def cmd_lr_find(args: argparse.Namespace) -> int:
    from germinate.errors import GerminateError
    from germinate.recipe import create_learner, join_world

    cfg = _config_from(args)
    world, reporter = join_world(cfg, _reporter(args))
    learn = create_learner(cfg, None, reporter, world)
    if args.unfrozen:
        learn.unfreeze()
    else:
        learn.freeze()
    result = learn.lr_find(args.start, args.end, args.steps or cfg.lr_find_steps, args.stop_div, cfg.suggest,
                           args.probe)
    if not world.is_main:
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result.save(out, "lr_find", "LR range test (unfrozen)" if args.unfrozen else "LR range test (head)")
    if result.suggestion is None:
        raise GerminateError(f"{result.error} (curve written to {out / 'lr_find.png'})")
    others = ", ".join(f"{k} {v:.2e}" for k, v in result.suggestions.items())
    where = (f"the curve's {result.method} ({result.curve_suggestion:.2e}) goes to the early body, lr = that x "
             f"{result.scale:g} to the head" if result.scale != 1 else f"{result.method} rule")
    reporter.info(f"wrote {out}/lr_find.png, .csv, .json; curve readings: {others}; {where}")
    reporter.info("train with it: germinate train ... --lr <this number>")
    reporter.result(f"{result.suggestion:g}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from germinate.inference import predict_folder

    submission = args.submission or str(Path(args.run_dir[0]) / "submission.csv")
    predict_folder(args.run_dir, args.images_dir, submission, args.probs, args.tta, args.bs, args.device,
                   args.cache_dir, args.use_cache, _reporter(args))
    return 0


def print_evaluation(result: dict, reporter) -> None:
    """The evaluation as tables on the terminal."""
    from rich.table import Table

    models = f", an ensemble of {result['models']} models" if result.get("models", 1) > 1 else ""
    summary = Table(title=f"{result['n']} images{models}")
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
    from germinate.utils import require_file_path, write_text_atomic

    reporter = _reporter(args)
    if args.json:
        require_file_path(args.json, "--json")
    result = evaluate_folder(args.run_dir, args.labelled_dir, args.out, args.tta, args.bs, args.device,
                             args.cache_dir, args.use_cache, reporter)
    print_evaluation(result, reporter)
    if args.json:
        write_text_atomic(args.json, json.dumps(result, indent=2))
    return 0


def cmd_show_batch(args: argparse.Namespace) -> int:
    from germinate.show import show_batch

    cfg = TrainConfig(**_given(args)).validate()
    show_batch(args.train_dir, args.out, cfg.flip, cfg.size, cfg.min_scale, cfg.max_rotate, cfg.max_lighting, args.n,
               cfg.seed, cfg.cache_dir, cfg.mask, cfg.erase, cfg.trivial_augment)
    print(args.out)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from germinate.evaluate.report import write_report

    print(write_report(args.run_dir))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from germinate.serve.app import create_app
    from germinate.serve.predictor import Limits, Predictor

    _require_free_port(args.host, args.port)  # before the model loads and "serving ..." is printed
    predictor = Predictor(args.run_dir, args.tta, _onnx_for(args), args.device)
    limits = Limits(args.max_bytes, args.max_pixels, args.max_files)
    app = create_app(predictor, limits, args.max_batch, args.max_wait_ms / 1000)
    print(f"serving {args.run_dir} ({predictor.info.arch}, {predictor.backend}) on http://{args.host}:{args.port}/",
          file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _require_free_port(host: str, port: int) -> None:
    """Refuse, in one line, a port another process listens on (uvicorn would say so after a banner)."""
    import socket

    from germinate.errors import GerminateError

    if port == 0:  # any free port
        return
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            s.bind((host, port))
    except OSError as e:
        raise GerminateError(f"cannot serve on {host}:{port} ({e.strerror}): choose another --port or --host") from e


def _onnx_for(args: argparse.Namespace) -> str | None:
    """The ONNX file to serve with, or None for PyTorch."""
    from germinate.errors import GerminateError
    from germinate.models.export import read_info
    from germinate.models.onnx_export import ensure_onnx

    read_info(args.run_dir)  # not a run with a model: said once, not as a failed ONNX export first
    if args.onnx or args.backend == "pytorch" or (args.backend == "auto" and args.device != "cpu"):
        return args.onnx
    try:
        return str(ensure_onnx(args.run_dir))
    except (GerminateError, OSError) as e:
        if args.backend == "onnxruntime":
            raise
        print(f"germinate: warning: serving with PyTorch: no ONNX export ({e})", file=sys.stderr)
        return None


def cmd_export(args: argparse.Namespace) -> int:
    from germinate.models.onnx_export import export_onnx

    print(export_onnx(args.run_dir, args.onnx))
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from germinate.data.cache import cache_info, cache_limit_bytes, clear_cache, default_cache_dir

    root = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    if args.clear:
        freed, n = clear_cache(root)
        print(f"removed {n} cached size(s), {freed / 2**20:.1f} MiB, from {root}")
        return 0
    info = cache_info(root)
    print(f"{root}: {sum(e['bytes'] for e in info) / 2**20:.1f} MiB in {len(info)} size(s); "
          f"limit {cache_limit_bytes() / 2**30:.1f} GiB (set GERMINATE_CACHE_GB to change it)")
    for e in info:
        print(f"  {e['px']:>5} px  {e['images']:>7} images  {e['bytes'] / 2**20:>9.1f} MiB  last used {e['last_used']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: run a command; user errors become `germinate: error: ...` and exit 2."""
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    from germinate.errors import GerminateError, TrainingInterrupted
    from germinate.training import distributed

    succeeded = False
    try:
        if distributed.launched() and func not in (cmd_train, cmd_lr_find):
            if os.environ.get("RANK", "0") != "0":
                return EXIT_USER_ERROR  # rank 0 says why
            raise GerminateError(f"only train and lr-find run on several processes; run {args.command} without torchrun")
        code = func(args)
        succeeded = code == 0
        return code
    except GerminateError as e:
        world = distributed.current()
        if world.is_main or not isinstance(e, distributed.SharedError):  # a shared error: rank 0 says it
            sys.stderr.write(f"germinate: {_rank(world)}error: {e}\n")
        return EXIT_USER_ERROR
    except TrainingInterrupted as e:
        if distributed.current().is_main:
            sys.stderr.write(f"germinate: {e}\n")
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        sys.stderr.write("germinate: interrupted\n")
        return EXIT_INTERRUPTED
    except OSError as e:  # disk full, permission denied, ...: the environment, not a bug
        where = f": {e.filename}" if e.filename else ""
        sys.stderr.write(f"germinate: {_rank(distributed.current())}error: {e.strerror or e}{where}\n")
        return 1
    except RuntimeError as e:
        world = distributed.current()
        if not (world.active and distributed.is_lost_peer(e)):
            raise
        first = re.sub(r"\[[^\]]*:\d+\]\s*", "", str(e).strip().splitlines()[0])[:120] if str(e).strip() else type(e).__name__
        sys.stderr.write(f"germinate: {_rank(world)}error: lost contact with the other processes of the run "
                         f"(one stopped or failed; {first})\n")
        return 1
    finally:
        distributed.shutdown(together=succeeded)


def _rank(world) -> str:
    """'rank N: ' in a distributed run, so that several processes' messages can be told apart."""
    return f"rank {world.rank}: " if world.active else ""
