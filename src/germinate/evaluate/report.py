"""report.html: one self-contained file (images embedded, no scripts, no network) that shows a
run: the data, the model, the plan, the curves, the final metrics, the confusions, the worst
mistakes and the command that repeats it. Built only from files in the run folder."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from germinate.config import TrainConfig
from germinate.run import RunFolder
from germinate.training.plan import Stage
from germinate.training.time_budget import describe_cut, lengthens, recorded_budget_name
from germinate.utils import write_text_atomic

IMAGES = [
    ("curves.png", "Loss and micro-F1 by epoch"),
    ("schedule.png", "Learning rate per layer group"),
    ("confusion.png", "Confusion matrix (with TTA)"),
    ("top_losses.png", "Top losses: each title gives the truth, the prediction, the loss and the probability of the truth"),
]

STYLE = """
body{font:15px/1.45 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:.2em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0} td,th{border:1px solid #ddd;padding:.25em .6em;text-align:right}
th{background:#f4f4f4} td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #eee} figure{margin:1em 0} figcaption{color:#555;font-size:90%}
code,pre{background:#f6f6f6;padding:.2em .4em;border-radius:3px} pre{padding:.8em;white-space:pre-wrap}
.big{font-size:2em;font-weight:600}
"""


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _image(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}"><figcaption>{html.escape(caption)}</figcaption></figure>'


def _fmt(x) -> str:
    return f"{x:.4f}" if isinstance(x, float) else str(x)


def _headline(cfg: dict, final: dict | None) -> str:
    """What a reader wants first: the score with and without TTA, the time, the worst confusions
    and the command that repeats the run."""
    command = f"<pre>{html.escape(cfg.get('command') or '')}</pre>"
    if not final:
        return "<p>The run has not finished: no final evaluation yet.</p>" + command
    p, t = final["plain"], final["tta"]
    where = (f'out of fold, on all {t["n"]} labelled images, each predicted by the one of the {final["folds"]["k"]} '
             'fold models that did not train on it' if "folds" in final else f'on {t["n"]} validation images')
    out = (f'<p class="big">micro-F1 {t["f1_micro"]:.4f} with TTA, {p["f1_micro"]:.4f} without</p>'
           f'<p>{where}; TTA: {final["tta_views"]} views, {final["snapshots"]} model(s); '
           f'{final["seconds"] / 60:.1f} minutes in all.</p>')
    if "final_fit" in final:
        ff = final["final_fit"]
        out += (f'<p><strong>Final fit:</strong> the exported model was trained again with the same plan on all '
                f'{ff["train_images"]} labelled images (training and validation) in {ff["seconds"] / 60:.1f} minutes. '
                f'The figures here are the first fit\'s, on validation images the exported model has since seen; '
                f'the first fit\'s model is in <code>{html.escape(ff["first_fit_model"])}/</code>.</p>')
    pairs = t["most_confused"][:5]
    if pairs:
        out += "<p>Most confused (truth &rarr; predicted: count): " + "; ".join(
            f"{html.escape(a)} &rarr; {html.escape(b)}: {n}" for a, b, n in pairs) + "</p>"
    return out + command


def _sections(run: RunFolder) -> list[tuple[str, str]]:
    cfg = run.read_json("config.json")
    final = json.loads((run / "final.json").read_text()) if (run / "final.json").exists() else None
    skipped = run.read_csv("skipped.csv")
    c = cfg["config"]
    out = [("Result", _headline(cfg, final))]
    if final:
        p, t = final["plain"], final["tta"]
        res = _table(["", "accuracy", "micro-F1", "macro-F1", "loss", "n"],
                     [[name, *(_fmt(m[k]) for k in ("accuracy", "f1_micro", "f1_macro", "loss", "n"))] for name, m in (("plain", p), ("TTA", t))])
        res += _table(["class", "precision", "recall", "F1", "support"],
                      [[k, *(_fmt(v[x]) for x in ("precision", "recall", "f1", "support"))] for k, v in t["per_class"].items()])
        out.append(("Metrics", res))
        pairs = _table(["truth", "predicted as", "count"], t["most_confused"]) if t["most_confused"] else "<p>No confusions.</p>"
        out.append(("Most confused", pairs + "".join(_image(run / n, cap) for n, cap in IMAGES[2:3] if (run / n).exists())))
        if (run / IMAGES[3][0]).exists():
            out.append(("Top losses", _image(run / IMAGES[3][0], IMAGES[3][1])))
    if final and "folds" in final:  # a K-fold run: its folds are runs of their own, each with its report
        rows = [[f'<a href="fold-{f["fold"]}/report.html">fold {f["fold"]}</a>', f["images"], _fmt(f["plain"]),
                 _fmt(f["tta"]), f'{f["seconds"] / 60:.1f}'] for f in final["folds"]["per_fold"]]
        head = "".join(f"<th>{h}</th>" for h in ("fold", "validation images", "micro-F1", "with TTA", "minutes"))
        out.append(("Folds", f"<table><tr>{head}</tr>" + "".join(
            "<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows) + "</table>"))
    if "plan" not in cfg:  # a K-fold run's training, plan and data are its folds'
        out.append(("Reproduce", f"<pre>{html.escape(cfg.get('command') or '')}</pre>"))
        return out
    metrics = run.read_csv("metrics.csv")
    timings = {(r["stage"], r["epoch"]): r["seconds"] for r in run.read_csv("timings.csv")}
    rows = [[*m.values(), f"{float(timings.get((m['stage'], m['epoch']), 'nan')):.1f}"] for m in metrics]
    curves = _table([*metrics[0].keys(), "seconds"], rows) if metrics else "<p>No epochs yet.</p>"
    range_tests = [(f"lr_find_{s['name']}.png", f"LR range test, {s['name']}") for s in cfg["plan"]]  # one a stage
    out.append(("Training", curves + "".join(_image(run / n, cap) for n, cap in IMAGES[:2] + range_tests
                                             if (run / n).exists())))
    plan_rows = [[s["name"], _body(s), s.get("size") or c["size"], _epochs(s), s["schedule"], s["cycles"],
                  f"{s['cycle_len']:g}", s["cycle_mult"], ", ".join(f"{x:.2e}" for x in s["lrs"] or []),
                  "yes" if s["precompute"] else "no"]
                 for s in cfg["plan"]]
    out.append(("Plan", _table(["stage", "trains", "px", "epochs", "schedule", "cycles", "cycle len", "cycle mult",
                                "peak LR per group", "precomputed"], plan_rows) + _budget(cfg.get("time_budget"))))
    counts = cfg.get("class_counts", {})
    data = f"<p>{cfg['counts']['train']} training and {cfg['counts']['valid']} validation images in {len(cfg['classes'])} classes, from <code>{html.escape(c['train_dir'])}</code>.</p>"
    data += _table(["class", "training images", "validation images"], [[k, v["train"], v["valid"]] for k, v in counts.items()])
    data += f"<p>Skipped files: {len(skipped)}</p>" + (_table(["path", "reason"], [[s["path"], s["reason"]] for s in skipped[:50]]) if skipped else "")
    out.append(("Data", data))
    full = TrainConfig.from_dict(c)  # an older run's config.json lacks the newer settings: their defaults
    settings = [[k, getattr(full, k)] for k in ("arch", "pretrained", "size", "flip", "min_scale", "bs", "opt", "wd", "pool", "hidden", "dropout", "seed")]
    settings.insert(3, ["test_size", full.eval_size])
    out.append(("Model", _table(["setting", "value"], settings)))
    out.append(("Reproduce", f"<pre>{html.escape(cfg.get('command') or '')}</pre><p>germinate {html.escape(cfg['germinate_version'])}</p>"))
    return out


def _epochs(stage: dict) -> str:
    """A stage's epochs, and the time budget's cuts (or lengthenings) when it made any."""
    st = Stage.from_dict(stage)
    return f"{st.n_epochs()} (planned {st.epochs}, {st.length_changes()})" if st.cuts else str(st.n_epochs())


def _budget(budget: dict | None) -> str:
    """How a time budget chose the epochs, and any change it made to them as the run went."""
    if not budget:
        return ""
    line = (f"Time budget, {recorded_budget_name(budget)}: {budget['epochs']} epoch(s) "
            f"fit as a speed probe timed this machine (about {budget['estimated_minutes']:.1f} min in all)")
    for cut in budget.get("cuts", []):
        why = "the epochs then ran quicker than the probe said" if lengthens(cut) else "the machine then slowed"
        line += f"; {why}, so {describe_cut(cut)}"
    return f"<p>{html.escape(line)}.</p>"


def _body(stage: dict) -> str:
    groups = stage.get("frozen_groups", 2 if stage.get("frozen") else 0)
    return {0: "whole network", 2: "head only"}.get(groups, f"groups {groups + 1}-3")


def write_report(run_dir: str | Path) -> Path:
    """Write report.html into the run folder from the files there; return its path."""
    run = RunFolder(run_dir)
    title = f"germinate run: {run.path.resolve().name}"
    body = "".join(f'<section id="{name.lower().replace(" ", "-")}"><h2>{name}</h2>{content}</section>' for name, content in _sections(run))
    page = f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>\n'
    write_text_atomic(run / "report.html", page)
    return run / "report.html"
