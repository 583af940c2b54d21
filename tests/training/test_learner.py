"""The fit loop on real and synthetic data: learning, freezing, range tests, logs, resume."""

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from germinate import TrainConfig, create_learner, train
from germinate.training.learner import Learner
from germinate.training.plan import Stage
from germinate.utils import derive_seed
from tests.conftest import PROB_ATOL


def tiny_cfg(train_dir, **kw) -> TrainConfig:
    base = dict(train_dir=str(train_dir), size=32, bs=8, freeze_epochs=1, cycles=2, cycle_len=1, cycle_mult=1,
                precompute_augs=1, quiet=True, seed=5, lr=3e-3, lr_find_steps=40)  # range tests: 40 steps, not 100
    return TrainConfig.from_preset("recipe", **{**base, **kw})


def _train_loss(learn: Learner) -> float:
    """Eval-mode loss on the plain (unaugmented) training images."""
    learn.net.eval()
    n = len(learn.data.train)
    batches = [np.arange(i, min(i + 32, n)) for i in range(0, n, 32)]
    with torch.no_grad():
        logits = torch.cat([learn.net(x) for x in learn.plain("train", batches, learn.cfg.size)])
    return float(torch.nn.functional.cross_entropy(logits, torch.as_tensor(learn.data.train.labels)))


@pytest.mark.parametrize("seed", [5, 6])
def test_two_epochs_on_a_tiny_real_subset_lower_the_loss(data_dir: Path, seed: int):
    # Batches of 16: with 8, the batchnorm running statistics of a few steps are too noisy for
    # the eval-mode loss to fall reliably (measured on seeds 5-8, before and after batched augmentation).
    learn = create_learner(tiny_cfg(data_dir / "train", limit_per_class=8, size=48, bs=16, seed=seed))
    before = _train_loss(learn)
    learn.unfreeze()
    learn.fit(2, 1e-3)
    after = _train_loss(learn)
    assert after < before - 0.05, (before, after)  # measured drops 0.09 to 0.22


def test_amp_auto_is_bf16_where_it_is_fast_but_not_for_a_compiled_network(monkeypatch: pytest.MonkeyPatch):
    import germinate.utils as utils

    cuda = torch.device("cuda")
    monkeypatch.setattr(utils, "bf16_is_fast", lambda device: device.type == "cuda")  # a GPU with bf16
    assert utils.use_bf16("auto", cuda) and not utils.use_bf16("auto", torch.device("cpu"))
    assert not utils.use_bf16("auto", cuda, compiled=True)  # compiled bf16 training diverged there
    assert utils.use_bf16("on", cuda, compiled=True) and utils.use_bf16("on", torch.device("cpu"))
    assert not utils.use_bf16("off", cuda)


def test_augmentation_path_auto_is_per_image_on_cpu_and_batched_on_cuda(labelled: Path):
    from germinate.training.learner import augment_path

    assert augment_path("auto", torch.device("cpu")) == "image"
    assert augment_path("auto", torch.device("cuda")) == "batch"
    assert augment_path("batch", torch.device("cpu")) == "batch"
    # the learner's training batches are the chosen path's views, each under its sample's seed
    from germinate.data.loaders import EpochBatches

    for augment in ("image", "batch"):
        learn = create_learner(tiny_cfg(labelled, augment=augment))
        order = EpochBatches(len(learn.data.train), learn.cfg.bs, learn.cfg.seed)
        order.set_epoch(("e",))
        idx = next(iter(order))
        x, _ = next(learn._train_batches(("e",), 0, precompute=False))
        expected = torch.cat([_one_view(learn, int(i), derive_seed(5, "e", int(i))) for i in idx])
        assert torch.allclose(x.float(), expected.float(), atol=1e-3)


def test_freeze_keeps_batchnorm_trainable(labelled: Path):
    learn = create_learner(tiny_cfg(labelled))
    net = learn.net
    early, late, head = net.layer_groups
    learn.freeze()
    assert all(p.requires_grad for p in head)
    assert all(p.requires_grad == (id(p) in net.norm_params) for p in early + late)
    assert any(id(p) in net.norm_params for p in early) and any(id(p) not in net.norm_params for p in early)
    learn.freeze_to(1)
    assert all(p.requires_grad for p in late + head)
    assert not all(p.requires_grad for p in early)
    learn.unfreeze()
    assert all(p.requires_grad for p in net.parameters())


@pytest.mark.parametrize("wd_norm_bias", [True, False])
def test_weight_decay_reaches_norms_and_biases_only_when_asked_at_each_group_s_lr(labelled: Path, wd_norm_bias: bool):
    wd, lrs = 0.5, [0.02, 0.05, 0.1]  # differential LRs: each layer group decays by its own
    learn = create_learner(tiny_cfg(labelled, wd=wd, wd_norm_bias=wd_norm_bias))
    learn.unfreeze()
    learn._set_lrs(lrs)
    before = [[p.detach().clone() for p in params] for params in learn.net.layer_groups]
    for p in learn.net.parameters():
        p.grad = torch.zeros_like(p)  # AdamW with a zero gradient: only the decay moves a tensor
    learn.opt.step()
    one_d = 0
    for g, params in enumerate(learn.net.layer_groups):
        for p, b in zip(params, before[g]):
            decays = wd_norm_bias or p.ndim > 1
            one_d += p.ndim <= 1
            assert torch.allclose(p.detach(), b * (1 - lrs[g] * wd) if decays else b, atol=1e-6), (g, p.shape)
    assert one_d > 0 and any(p.ndim > 1 for p in learn.net.layer_groups[0])


def test_fixed_blocks_stay_as_pretrained_through_every_stage(labelled: Path, tmp_path: Path):
    from germinate.models.network import create_network

    learn = train(tiny_cfg(labelled, fixed_blocks=2, precompute="off", freeze_epochs=1, cycles=1), tmp_path / "run")
    assert learn.fixed_blocks == 2
    fresh = create_network("efficientnet_lite0", 3, pretrained=True)
    for unit, (old, new) in enumerate(zip(fresh.blocks, learn.net.blocks)):
        same = all(torch.equal(a, b.cpu()) for a, b in zip(old.state_dict().values(), new.state_dict().values()))
        assert same == (unit <= 2), unit  # the stem and 2 blocks, batchnorm statistics included; not the next
    assert not any(p.requires_grad for m in learn.net.blocks[:3] for p in m.parameters())
    learn.net.train()
    assert [unit[0].training for unit in learn.net.blocks[:4]] == [False, False, False, True]
    assert not learn.net.blocks[0][1].training  # the stem's batchnorm, inside the unit


def test_freeze_bn_keeps_the_pretrained_statistics_while_the_body_trains(labelled: Path):
    from torch.nn.modules.batchnorm import _BatchNorm

    learn = create_learner(tiny_cfg(labelled, freeze_bn=True, precompute="off"))
    bns = [m for m in learn.net.body.modules() if isinstance(m, _BatchNorm)]
    stats = [(m.running_mean.clone(), m.running_var.clone()) for m in bns]
    scales = [m.weight.detach().clone() for m in bns]
    learn.unfreeze()
    learn.fit(1, 1e-3)
    assert all(torch.equal(m.running_mean, a) and torch.equal(m.running_var, b) for m, (a, b) in zip(bns, stats))
    assert sum(not torch.equal(m.weight, w) for m, w in zip(bns, scales)) > len(bns) // 2  # scales still learn
    learn.net.train()
    assert not any(m.training for m in bns)
    assert learn.net.head.training and any(m.training for m in learn.net.head.modules() if isinstance(m, _BatchNorm))
    # without it, the body's statistics move with the batches
    plain = create_learner(tiny_cfg(labelled, precompute="off"))
    plain.unfreeze()
    plain.fit(1, 1e-3)
    moved = [m for m in plain.net.body.modules() if isinstance(m, _BatchNorm)]
    assert not all(torch.equal(m.running_mean, a) for m, (a, _) in zip(moved, stats))


def test_fixed_blocks_say_what_they_fix_or_that_they_cannot(labelled: Path, capsys):
    from germinate.ui import Reporter

    create_learner(tiny_cfg(labelled, fixed_blocks=3, quiet=False), reporter=Reporter(False))
    assert "fixed as pretrained: the stem and the first 3 of 16 blocks" in capsys.readouterr().err
    create_learner(tiny_cfg(labelled, fixed_blocks=3, arch="vit_tiny_patch16_224", pretrained=False, quiet=False),
                   reporter=Reporter(False))
    assert "warning: --fixed-blocks has no effect on vit_tiny_patch16_224" in capsys.readouterr().err
    # the default preset's fixed blocks are not something the user asked for: a note, not a warning
    vit = TrainConfig(train_dir=str(labelled), size=32, arch="vit_tiny_patch16_224", pretrained=False)
    create_learner(vit, reporter=Reporter(False))
    err = capsys.readouterr().err
    assert vit.fixed_blocks and "every block of vit_tiny_patch16_224 trains" in err and "warning" not in err


@pytest.mark.parametrize("unfrozen", [False, True])
def test_lr_find_leaves_no_trace(labelled: Path, unfrozen: bool):
    learn = create_learner(tiny_cfg(labelled))
    learn.unfreeze() if unfrozen else learn.freeze()
    learn.fit(1, 1e-3)  # so that the optimizer has state to disturb
    model = {k: v.clone() for k, v in learn.net.state_dict().items()}
    opt = learn.opt.state_dict()
    opt_state = {k: {n: t.clone() for n, t in v.items() if torch.is_tensor(t)} for k, v in opt["state"].items()}
    lrs = [g["lr"] for g in learn.opt.param_groups]
    rng = torch.get_rng_state().clone()
    result = learn.lr_find(steps=20)
    assert len(result.lrs) == len(result.losses) > 0
    assert all(torch.equal(v, learn.net.state_dict()[k]) for k, v in model.items())
    after = learn.opt.state_dict()["state"]
    assert all(torch.equal(t, after[k][n]) for k, v in opt_state.items() for n, t in v.items())
    assert [g["lr"] for g in learn.opt.param_groups] == lrs
    assert torch.equal(torch.get_rng_state(), rng)


def test_lr_find_works_after_training_and_gives_a_suggestion(labelled: Path, tmp_path: Path):
    learn = create_learner(tiny_cfg(labelled, bs=4))
    learn.freeze()
    learn.fit(1, 1e-3)
    result = learn.lr_find(steps=60)
    from germinate.training.lr_find import suggest

    # The head alone: the LR is the curve's own valley reading, rounded to 3 digits...
    assert result.scale == 1 and result.suggestion == float(f"{suggest(result.lrs, result.losses, 'valley'):.3g}")
    # ...and it lies where the recorded loss was still falling, below the curve's minimum.
    sm = result.smoothed
    at = int(np.searchsorted(result.lrs, result.suggestion))
    assert result.lrs[int(np.nanargmin(sm))] > result.suggestion and sm[at] < np.nanmax(sm[: at + 1])
    result.plot(tmp_path / "lr.png")
    assert (tmp_path / "lr.png").exists()


def _rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_lrs_csv_matches_the_schedule_functions(tiny_run: Path):
    import json

    plan = json.loads((tiny_run / "config.json").read_text())["plan"]
    rows = _rows(tiny_run / "lrs.csv")
    assert list(rows[0]) == ["step", "epoch", "stage", "lr_group0", "lr_group1", "lr_group2"]
    cfg = json.loads((tiny_run / "config.json").read_text())
    n_train = cfg["counts"]["train"]
    spe = n_train // cfg["config"]["bs"]
    for stage in plan:
        s = Stage.from_dict(stage)
        sched = s.make_schedule(spe)
        stage_rows = [r for r in rows if r["stage"] == s.name]
        assert len(stage_rows) == sched.total_steps
        for i, r in enumerate(stage_rows):
            for g in range(3):
                assert float(r[f"lr_group{g}"]) == pytest.approx(s.lrs[g] * sched.lr_mult(i), rel=1e-5)
        if s.schedule == "sgdr" and s.cycles > 1:
            restart = sched.cycle_bounds()[1][0]
            assert float(stage_rows[restart]["lr_group2"]) == pytest.approx(s.lrs[2], rel=1e-5)


def test_same_seed_same_metrics(labelled: Path, tmp_path: Path):
    train(tiny_cfg(labelled), tmp_path / "a")
    train(tiny_cfg(labelled), tmp_path / "b")
    a, b = (tmp_path / "a" / "metrics.csv").read_text(), (tmp_path / "b" / "metrics.csv").read_text()
    assert a == b and len(a.splitlines()) == 4


def test_workers_do_not_change_the_run(labelled: Path, tmp_path: Path):
    # Each sample is augmented under its own seed, so loading in worker processes changes nothing.
    train(tiny_cfg(labelled, precompute="off", cycles=1), tmp_path / "w0")
    train(tiny_cfg(labelled, precompute="off", cycles=1, workers=2), tmp_path / "w2")
    assert (tmp_path / "w0" / "metrics.csv").read_text() == (tmp_path / "w2" / "metrics.csv").read_text()


def test_snapshot_ensemble_averages_the_cycle_ends(labelled: Path, tmp_path: Path, unlabelled: Path):
    import json

    from germinate.data.augment import eval_transform
    from germinate.data.cache import decode_images
    from germinate.data.folders import scan_unlabelled
    from germinate.inference import predict_folder
    from germinate.models.export import load_model

    run = tmp_path / "snap"
    train(tiny_cfg(labelled, cycles=3, cycle_mult=1, snapshot_ensemble=True), run)
    info = json.loads((run / "model.json").read_text())
    assert info["snapshots"] == ["snapshot-2.safetensors", "snapshot-3.safetensors"]  # after unfrozen epochs 1 and 2
    _, probs, _ = predict_folder(run, unlabelled, tta=0)
    nets, minfo = load_model(run, snapshots=True)
    assert len(nets) == 3
    src = decode_images(scan_unlabelled(unlabelled).files, minfo.source_px).source
    x = torch.stack([eval_transform(minfo.eval_size)(src.get(i)) for i in range(len(src))])
    with torch.no_grad():
        expected = sum(n(x).softmax(1) for n in nets) / 3
    assert np.allclose(probs, expected.numpy(), atol=PROB_ATOL)


# ---- freezing, batchnorm, precomputed features ------------------------------------------------------
def _snapshot(params):
    return [p.detach().clone() for p in params]


def _changed(before, params):
    return [not torch.equal(b, p.detach()) for b, p in zip(before, params)]


@pytest.mark.parametrize("how", ["fit", "fit_sgdr", "fit_one_cycle", "stage"])
def test_a_partial_freeze_survives_every_fit(labelled: Path, how: str):
    learn = create_learner(tiny_cfg(labelled, precompute="off"))
    learn.freeze_to(1)
    early, late, _ = learn.net.layer_groups
    early_weights = [p for p in early if id(p) not in learn.net.norm_params]
    before_early, before_late = _snapshot(early_weights), _snapshot(late)
    if how == "stage":
        learn.fit_stage(Stage("partial", 1, "cosine", 1, lrs=(1e-3, 1e-3, 1e-3)))
    elif how == "fit_sgdr":
        learn.fit_sgdr(1, 1e-3)
    else:
        getattr(learn, how)(1, 1e-3)
    assert not any(_changed(before_early, early_weights))  # the early body stayed frozen
    assert any(_changed(before_late, late))  # the late body trained
    assert learn.frozen_groups == 1


def _one_view(learn: Learner, i: int, seed: int) -> torch.Tensor:
    """Training image `i` augmented alone under `seed`, by the learner's augmentation path: what a
    batch must hold for it."""
    from germinate.data.augment import augment_images
    from germinate.data.batch_augment import augment_batch, draw_params

    if learn.augment_on == "image":
        return augment_images(learn.data.train.source, [i], [seed], learn.aug)
    return augment_batch(learn.data.train.source.get(i)[None], draw_params([seed], learn.aug), learn.aug.size)


@pytest.mark.parametrize("augment", ["image", "batch"])
def test_batchnorm_is_re_estimated_on_the_training_images(labelled: Path, augment: str):
    learn = create_learner(tiny_cfg(labelled, bs=4, augment=augment))
    assert learn.augment_on == augment
    net = learn.net
    first_bn = next(m for m in net.body.modules() if isinstance(m, torch.nn.BatchNorm2d))
    stem = net.body.model.conv_stem  # the first batchnorm's input does not depend on any statistics
    weights = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k and "num_batches" not in k}
    learn.recalibrate_bn()
    # What it must equal: the mean of the stem's output over the same augmented images.
    n = len(learn.data.train) - len(learn.data.train) % 4
    x = torch.cat([_one_view(learn, i, derive_seed(5, "bn", i)) for i in range(n)])
    with torch.no_grad():
        expected = stem(net.normalize(x)).mean(dim=(0, 2, 3))
    assert torch.allclose(first_bn.running_mean, expected, rtol=1e-3, atol=1e-4)
    assert not torch.allclose(first_bn.running_mean, torch.zeros_like(expected))
    after = net.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in weights.items())  # only statistics changed
    assert all(not m.training or net.training for m in net.modules())


@pytest.mark.parametrize("augment", ["image", "batch"])
def test_precomputed_features_equal_an_eval_mode_forward_pass(labelled: Path, augment: str):
    from germinate.data.augment import eval_transform

    learn = create_learner(tiny_cfg(labelled, augment=augment))
    train_feats, valid_feats = learn._precomputed()
    net = learn.net.eval()
    valid = learn.data.valid
    xv = torch.stack([eval_transform(learn.cfg.eval_size)(valid.source.get(i)) for i in range(len(valid))])
    xt = torch.cat([_one_view(learn, i, derive_seed(5, "precompute", 0, i)) for i in range(len(learn.data.train))])
    with torch.no_grad():
        fv, ft = net.features(xv), net.features(xt)
    scale = float(fv.abs().max())
    assert torch.allclose(valid_feats, fv, atol=PROB_ATOL * scale)
    assert torch.allclose(train_feats[0], ft, atol=PROB_ATOL * scale)
    with torch.no_grad():
        logits = net.head(valid_feats)
    assert torch.allclose(logits.softmax(1), net(xv).softmax(1), atol=PROB_ATOL)


def _running_stats(net) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in net.body.state_dict().items() if "running" in k}


@pytest.mark.parametrize("reestimate", [False, True])
def test_the_head_stage_keeps_the_pretrained_batchnorm_statistics_unless_asked(labelled: Path, reestimate: bool):
    from germinate.recipe import run_plan
    from germinate.training.plan import plan_stages

    learn = create_learner(tiny_cfg(labelled, bn_reestimate=reestimate))
    pretrained = _running_stats(learn.net)
    learn.plan = plan_stages(learn.cfg)[:1]  # the head stage, as the recipe runs it
    run_plan(learn)
    assert len(learn.history) == 1 and learn.history[0]["stage"] == "head"
    after = _running_stats(learn.net)
    same = [torch.equal(v, after[k]) for k, v in pretrained.items()]
    assert all(same) if not reestimate else not any(same)


def test_progressive_resizing_trains_each_stage_at_its_size(labelled: Path, tmp_path: Path):
    import json

    learn = train(tiny_cfg(labelled, sizes=[32, 48], cycles=2, lr="auto", snapshot_ensemble=True), tmp_path / "run")
    with open(tmp_path / "run" / "metrics.csv") as f:
        stages = [row["stage"] for row in csv.DictReader(f)]
    assert stages == ["head", "unfrozen-32", "unfrozen-48"]
    assert {p.name for p in (tmp_path / "run").glob("lr_find_*.json")} == {
        "lr_find_head.json", "lr_find_unfrozen-32.json", "lr_find_unfrozen-48.json"}  # a range test per size
    info = json.loads((tmp_path / "run" / "model.json").read_text())
    assert (info["size"], info["test_size"]) == (48, 60)
    assert info["snapshots"] == ["snapshot-2.safetensors"]  # the end of the 32 px stage is a cycle end too
    report = (tmp_path / "run" / "report.html").read_text()
    assert all(f"LR range test, {name}" in report for name in ("head", "unfrozen-32", "unfrozen-48"))
    for stage, px, valid_px in ((learn.plan[1], 32, 40), (learn.plan[2], 48, 60)):
        learn.use_size(stage.size)
        x, _ = next(learn._train_batches(("e",), 0, precompute=False))
        assert x.shape[-2:] == (px, px)
        # validated at 1.25x the size it trains at, not at the final model's size
        assert next(learn.plain("valid", [np.arange(2)])).shape[-2:] == (valid_px, valid_px)


def test_valid_every_validates_every_nth_epoch_and_each_stage_end(labelled: Path, tmp_path: Path):
    cfg = TrainConfig.from_preset("fast", train_dir=str(labelled), sizes=[32, 40], size_epochs=[5, 2], bs=8,
                                  valid_every=2, fixed_blocks=0, quiet=True, seed=5)
    train(cfg, tmp_path / "run")
    with open(tmp_path / "run" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    validated = [(r["stage"], int(r["epoch"])) for r in rows if r["f1_micro"]]
    # every 2nd epoch of each stage, and each stage's last (5 of the first, 2 of the second)
    assert validated == [("unfrozen-32", 2), ("unfrozen-32", 4), ("unfrozen-32", 5), ("unfrozen-40", 2)]
    assert all(r["train_loss"] and not r["valid_loss"] for r in rows if not r["f1_micro"])
    assert len(rows) == 7 and (tmp_path / "run" / "curves.png").stat().st_size > 0
    assert (tmp_path / "run" / "final.json").exists()


@pytest.mark.parametrize("augment", ["image", "batch"])
def test_erase_reaches_the_training_views(labelled: Path, augment: str):
    """--erase: every training view (chance 1) holds a box of the fill colour, on either path."""
    from tests.data.test_batch_augment import erased_fraction

    learn = create_learner(tiny_cfg(labelled, erase=1.0, augment=augment))
    n = len(learn.data.train)
    filled = erased_fraction(torch.cat(list(learn.augmented([np.arange(n)], ("test",)))).round())
    assert (filled > 0.015).all() and (filled < 0.4).all()
