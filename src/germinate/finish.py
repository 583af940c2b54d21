"""The end of a run: export the model, evaluate it with and without TTA, draw and report."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from germinate.data.augment import eval_transform
from germinate.data.manifest import relative_path
from germinate.evaluate import metrics as M
from germinate.evaluate import plots
from germinate.evaluate.predict import predict_views, tta_views
from germinate.evaluate.report import write_report
from germinate.models.export import ModelInfo, export_model, load_model
from germinate.models.network import Network
from germinate.run import RunFolder
from germinate.training.learner import Learner

TOP_LOSSES = 12


def model_info(learn: Learner) -> ModelInfo:
    """What model.json records for this learner."""
    net, cfg = learn.net, learn.cfg
    mean = (net.mean.flatten() / 255).tolist()
    std = (net.std.flatten() / 255).tolist()
    return ModelInfo(cfg.arch, list(learn.data.classes), cfg.final_size, cfg.eval_cache_px, mean, std, cfg.flip,
                     cfg.hidden, cfg.dropout, cfg.eval_size, mask=cfg.mask, pool=cfg.pool)


def write_per_class(run, report: dict) -> None:
    """per_class.csv: precision, recall, F1 and support of each class."""
    rows = [{"class": c, **{k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in m.items()}} for c, m in report["per_class"].items()]
    run.write_csv("per_class.csv", rows, ["class", "precision", "recall", "f1", "support"])


def write_valid_probs(learn: Learner, plain: np.ndarray, tta: np.ndarray) -> None:
    """valid_probs.csv: each validation image (path as in split.csv), its class and the model's
    probabilities with TTA (`tta:<class>`) and without (`plain:<class>`): what a K-fold run
    assembles its out-of-fold figures from, and what an analysis of the mistakes starts from."""
    classes, valid = learn.data.classes, learn.data.valid
    root = Path(learn.cfg.valid_dir or learn.cfg.train_dir).absolute()
    rows = [{"file": relative_path(Path(f).absolute(), root), "class": classes[int(y)],
             **{f"tta:{c}": f"{p:.6f}" for c, p in zip(classes, t)},
             **{f"plain:{c}": f"{p:.6f}" for c, p in zip(classes, q)}}
            for f, y, t, q in zip(valid.files, valid.labels, tta, plain)]
    learn.run.write_csv("valid_probs.csv", rows, ["file", "class", *(f"tta:{c}" for c in classes),
                                                  *(f"plain:{c}" for c in classes)])


def read_valid_probs(run_dir: str | Path, classes: list[str] | None = None
                     ) -> tuple[list[dict[str, str]], list[str], np.ndarray, np.ndarray]:
    """A run's valid_probs.csv back (write_valid_probs): its rows, the classes its probability
    columns are read in (`classes`, else the file's own order), and the plain and TTA
    probabilities, an image a row. No rows when the file is missing; a KeyError or ValueError when
    its columns or values do not fit `classes`."""
    rows = RunFolder(run_dir).read_csv("valid_probs.csv")
    if classes is None:
        classes = [k[4:] for k in rows[0] if k.startswith("tta:")] if rows else []
    plain, tta = (np.array([[float(r[f"{kind}:{c}"]) for c in classes] for r in rows]).reshape(len(rows), len(classes))
                  for kind in ("plain", "tta"))
    return rows, classes, plain, tta


def plot_top_losses(learn: Learner, probs: np.ndarray, path) -> None:
    """The validation images the model got most wrong: the truth, the prediction, the loss and the
    probability given to the truth, each named in the title."""
    labels, classes = learn.data.valid.labels, learn.data.classes
    losses = M.cross_entropy(probs, labels)
    worst = np.argsort(-losses)[:TOP_LOSSES]
    tf = eval_transform(learn.cfg.eval_size)
    images = [tf(learn.data.valid.source.get(int(i))).permute(1, 2, 0).numpy() for i in worst]
    titles = [
        f"truth: {classes[labels[i]]}\npredicted: {classes[probs[i].argmax()]}\nloss {losses[i]:.2f}, p(truth) {probs[i, labels[i]]:.2f}"
        for i in worst
    ]
    plots.image_grid(images, titles, path)


def _export(learn: Learner) -> None:
    run = learn.run
    snapshots = sorted((p.name for p in run.path.glob("snapshot-*.safetensors")), key=lambda n: int(n[9:-12]))
    export_model(learn.exported_net(), run.path, model_info(learn), snapshots if learn.cfg.snapshot_ensemble else [])


def _ensemble(learn: Learner) -> list[Network]:
    """The exported model and its snapshots, as read back from the run folder. With several
    processes rank 0 reads the snapshots and hands their weights to the others; the model itself
    is every rank's own network (the ranks hold identical weights)."""
    if not learn.world.active:
        return load_model(learn.run.path, snapshots=True)[0]
    states = learn.world.on_main(lambda: [n.state_dict() for n in load_model(learn.run.path, snapshots=True)[0][1:]])
    nets = [learn.exported_net()]
    for state in states:
        net = copy.deepcopy(learn.net)
        net.load_state_dict(state)
        nets.append(net)
    return nets


def finish_run(learn: Learner, seconds: float) -> dict:
    """Export, evaluate on the validation split (plain and TTA), write plots, CSVs and the report.
    With several processes each evaluates its share of the images; rank 0 writes."""
    run, reporter, world = learn.run, learn.reporter, learn.world
    if world.is_main:
        _export(learn)
    nets, info = _ensemble(learn), model_info(learn)
    views = tta_views(info.flip, learn.cfg.tta)
    n = len(learn.data.valid)
    probs = predict_views(nets, learn.data.valid.source, info, views, learn.cfg.bs * 2, learn.device, reporter,
                          check_stop=learn.check_stop_unsaved, batches=world.shard_batches(n, learn.cfg.bs * 2))
    if world.active:  # each rank filled its share: gather them, images first
        mine = torch.from_numpy(probs[:, world.shard(n)]).transpose(0, 1).contiguous()
        probs = world.gather_rows(mine, n).transpose(0, 1).numpy()
    if not world.is_main:
        return {}
    labels = learn.data.valid.labels
    plain, tta = M.full_report(labels, probs[0], info.classes), M.full_report(labels, probs.mean(0), info.classes)
    final = {"plain": plain, "tta": tta, "tta_views": len(views), "snapshots": len(nets), "seconds": seconds,
             "processes": world.size, **({"identical_weights": learn.ranks_identical} if world.active else {})}
    write_valid_probs(learn, probs[0], probs.mean(0))
    run.write_json("final.json", final)  # after valid_probs.csv: a K-fold run reads it once final.json exists
    write_per_class(run, tta)
    plots.plot_confusion(np.array(tta["confusion"]), info.classes, run / "confusion.png")
    plots.plot_curves(learn.history, run / "curves.png")
    if learn.lr_log:
        plots.plot_schedule(learn.lr_log, run / "schedule.png")
    plot_top_losses(learn, probs.mean(0), run / "top_losses.png")
    write_report(run.path)
    reporter.info(
        f"validation micro-F1 {plain['f1_micro']:.4f}, with TTA ({len(views)} views) {tta['f1_micro']:.4f}; "
        f"{seconds / 60:.1f} min; run folder {run.path}"
    )
    return final
