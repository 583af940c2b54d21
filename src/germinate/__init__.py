"""germinate: grow an accurate image classifier from a folder of images and a pretrained CNN.

    import germinate
    learn = germinate.train(germinate.TrainConfig(train_dir="train"), out="runs/seedlings")
    germinate.predict_folder("runs/seedlings", "test", submission="submission.csv")
"""

from germinate._version import __version__

# Names are imported on first use so that `germinate --version` does not load PyTorch.
_API = {
    "TrainConfig": "germinate.config",
    "GerminateError": "germinate.errors",
    "TrainingInterrupted": "germinate.errors",
    "train": "germinate.recipe",
    "resume": "germinate.recipe",
    "create_learner": "germinate.recipe",
    "Learner": "germinate.training.learner",
    "Stage": "germinate.training.plan",
    "LRFindResult": "germinate.training.lr_find",
    "Schedule": "germinate.training.schedule",
    "predict_folder": "germinate.inference",
    "evaluate_folder": "germinate.inference",
    "load_model": "germinate.models.export",
    "create_network": "germinate.models.network",
    "load_folder": "germinate.data.bundle",
    "write_report": "germinate.evaluate.report",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'germinate' has no attribute {name!r}")
