"""A real headless Chromium (Debian's) driven by Selenium, for browser-side tests.

Flags follow the machine notes: no sandbox (root), no background networking
(this machine has no internet and Chromium would retry forever), a fresh
profile per browser.  The chromedriver path is explicit so Selenium Manager
never tries to download one.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any

from tests.support.peers import PeerMissing

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run", "--disable-quic", "--disable-default-apps", "--disable-extensions",
)


class Browser:
    def __init__(self) -> None:
        if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
            raise PeerMissing("chromium and chromium-driver are not installed (make test installs them)")
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.profile = tempfile.mkdtemp(prefix="chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={self.profile}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        self.driver.set_script_timeout(60)

    def get(self, url: str) -> None:
        self.driver.get(url)

    def run(self, script: str, *args: Any) -> Any:
        """Run async JS: the script calls ``arguments[arguments.length - 1](result)``."""
        return self.driver.execute_async_script(script, *args)

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def wait_for(self, predicate: str | Callable[[], Any], timeout: float = 20.0) -> Any:
        """Poll a JS expression (or a Python callable) until it is truthy."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.js(f"return ({predicate});") if isinstance(predicate, str) else predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {predicate!r}; console: {self.console()}")
            time.sleep(0.05)

    def console(self) -> list[str]:
        try:
            return [entry["message"] for entry in self.driver.get_log("browser")]
        except Exception:  # noqa: BLE001 (a dead browser has no log to give)
            return []

    def screenshot(self, path: str) -> None:
        self.driver.save_screenshot(path)

    def quit(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.quit()
