"""`--final-fit-all`: the run's plan trained again on the training and validation images together.

The first fit chose the plan (its LRs from the range tests, its epochs) and measured it on the
validation images. The final fit repeats that plan from the pretrained weights on every labelled
image, with nothing left to validate on, and its model is the one the run exports (what predict,
evaluate, serve and export use). The first fit's model is kept in RUN/first-fit/ (a model folder:
`germinate evaluate RUN/first-fit ...` works); final.json's figures are the first fit's, and its
`final_fit` entry says so. The final fit's logs and checkpoint are in RUN/final-fit/.
"""

from __future__ import annotations

import os
import shutil

from germinate.config import TrainConfig
from germinate.data.bundle import DataBundle
from germinate.evaluate.report import write_report
from germinate.models.export import export_model
from germinate.models.network import create_network
from germinate.run import RunFolder
from germinate.training.checkpoint import saved_bn_eps
from germinate.training.distributed import World
from germinate.training.learner import Learner
from germinate.training.plan import Stage
from germinate.ui import Reporter
from germinate.utils import seed_everything

FIRST, FINAL = "first-fit", "final-fit"


class FinalFitFolder(RunFolder):
    """RUN/final-fit: the final fit's logs and its resumable checkpoint (no model, no report)."""

    @property
    def checkpoint(self):
        return self.path / "last.pt"


def pending(run: RunFolder, cfg: TrainConfig) -> bool:
    """True when a finished first fit still owes its final fit."""
    return cfg.final_fit_all and (run / "final.json").exists() and "final_fit" not in run.read_json("final.json")


def final_learner(cfg: TrainConfig, run: RunFolder, plan: list[dict], data: DataBundle, reporter: Reporter,
                  world: World, state: dict | None = None) -> Learner:
    """A learner for `plan` (every LR chosen) on `data` (loaded with merge_valid), writing into
    RUN/final-fit on rank 0 and not validating; from `state` (its checkpoint) when resuming."""
    seed_everything(cfg.seed)  # the first fit's start: the same head
    net = create_network(cfg.arch, len(data.classes), cfg.pretrained and state is None, cfg.weights, cfg.hidden,
                         cfg.dropout, probe_size=min(cfg.train_sizes), drop_path=cfg.drop_path,
                         bn_eps=None if state is None else saved_bn_eps(state), pool=cfg.pool)
    folder = FinalFitFolder(run / FINAL)
    if world.is_main:
        folder.path.mkdir(exist_ok=True)
    learn = Learner(net, data, cfg, folder if world.is_main else None, reporter, world)
    learn.validating = False
    if state is not None:
        learn.load_state_dict(state)
    else:
        learn.plan = [Stage.from_dict(s) for s in plan]
    reporter.info(f"final fit: the same plan on all {len(data.train)} labelled images (training and validation); "
                  "its model is the one exported")
    return learn


def finish_final_fit(learn: Learner, run: RunFolder, seconds: float) -> None:
    """Keep the first fit's model in RUN/first-fit, export the final fit's into RUN, record it."""
    from germinate.finish import model_info

    first = run / FIRST
    if not (first / "model.json").exists():  # a finish stopped half-way has copied it already
        first.mkdir(exist_ok=True)
        for name in ("model.safetensors", "model.json"):  # model.json last: it marks the copy whole
            tmp = first / f".{name}.tmp"
            shutil.copy2(run / name, tmp)
            os.replace(tmp, first / name)
    export_model(learn.exported_net(), run.path, model_info(learn))
    final = run.read_json("final.json")
    final["final_fit"] = {"train_images": len(learn.data.train), "seconds": seconds, "first_fit_model": FIRST,
                          "figures": "the validation figures are the first fit's; the exported model is the final fit's"}
    run.write_json("final.json", final)
    write_report(run.path)
    learn.reporter.info(f"final fit on {len(learn.data.train)} images done in {seconds / 60:.1f} min; exported to "
                        f"{run.path} (the first fit's model is in {first})")
