import numpy as np
import pytest

from germinate.evaluate import metrics as M


def test_summary_and_per_class():
    labels = np.array([0, 0, 1, 1, 2, 2])
    preds = np.array([0, 1, 1, 1, 2, 0])
    s = M.summary(labels, preds, 3)
    assert s["accuracy"] == pytest.approx(4 / 6)
    assert s["f1_micro"] == pytest.approx(4 / 6)  # single-label: micro-F1 equals accuracy
    per = M.per_class(labels, preds, ["a", "b", "c"])
    assert per["b"] == {"precision": pytest.approx(2 / 3), "recall": 1.0, "f1": pytest.approx(0.8), "support": 2}
    assert s["f1_macro"] == pytest.approx(np.mean([per[c]["f1"] for c in "abc"]))


def test_confusion_and_most_confused():
    labels = np.array([0, 0, 0, 1, 1, 2])
    preds = np.array([1, 1, 0, 0, 1, 2])
    cm = M.confusion(labels, preds, 3)
    assert cm.tolist() == [[1, 2, 0], [1, 1, 0], [0, 0, 1]]
    assert M.most_confused(cm, ["a", "b", "c"]) == [("a", "b", 2), ("b", "a", 1)]


def test_full_report_is_json_ready():
    import json

    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    r = M.full_report(np.array([0, 1, 1]), probs, ["x", "y"])
    json.dumps(r)
    assert r["n"] == 3 and r["accuracy"] == pytest.approx(2 / 3)
    assert r["loss"] == pytest.approx(-np.mean(np.log([0.9, 0.8, 0.4])))
