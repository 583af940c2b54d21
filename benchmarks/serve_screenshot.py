"""The README's picture of the upload page: a model trained briefly on the shared data, served,
three real seedling images picked on the page in headless Chromium, and a screenshot.

    python benchmarks/serve_screenshot.py [--out docs/serve.png]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("GERMINATE_DATA", ROOT.parent / "shared/data/plant-seedlings"))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=str(ROOT / "docs" / "serve.png"))
    args = p.parse_args()
    import uvicorn
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from germinate import TrainConfig, train
    from germinate.serve.app import create_app
    from germinate.serve.predictor import Predictor

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        train(TrainConfig(train_dir=str(DATA / "train"), limit_per_class=40, size=96, freeze_epochs=2, cycles=2,
                          quiet=True), run)
        server = uvicorn.Server(uvicorn.Config(create_app(Predictor(run)), host="127.0.0.1", port=8765, log_level="warning"))
        threading.Thread(target=server.run, daemon=True).start()
        while not server.started:
            time.sleep(0.1)
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for flag in ("--headless=new", "--no-sandbox", "--window-size=1000,1000"):
            options.add_argument(flag)
        browser = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        try:
            browser.get("http://127.0.0.1:8765/")
            WebDriverWait(browser, 60).until(lambda b: "classes" in b.find_element(By.ID, "model").text)
            picks = [sorted((DATA / "train" / c).glob("*.png"))[-1] for c in ("Maize", "Black-grass", "Charlock")]
            browser.find_element(By.ID, "pick").send_keys("\n".join(str(x) for x in picks))
            WebDriverWait(browser, 60).until(lambda b: len(b.find_elements(By.CSS_SELECTOR, ".card")) == 3)
            browser.save_screenshot(args.out)
        finally:
            browser.quit()
            server.should_exit = True
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
