"""Headless Chromium sessions driven by JSON lines on stdin, for the sample
page's tests. Selenium from PyPI with Debian's chromium and chromedriver
(the driver path is given, so Selenium downloads nothing).

Each command line gets one JSON answer line. Sessions are numbered from 0;
each opens its page in a second tab, so that closing that tab closes a page
the way a person does (unload handlers run) while the browser lives on.
  {"cmd": "open", "url": ...}                          -> {"session": n}
  {"cmd": "type", "s": n, "id": ..., "text": ..., "enter": false}
  {"cmd": "click", "s": n, "id": ...}
  {"cmd": "select", "s": n, "id": ..., "value": ...}
  {"cmd": "text", "s": n, "id": ...}                   -> {"text": ...}
  {"cmd": "js", "s": n, "script": "return ..."}        -> {"value": ...}
  {"cmd": "wait_js", "s": n, "script": "return ...", "timeout": 10} -> {"value": ..., "ok": bool}
  {"cmd": "screenshot", "s": n, "path": ...}
  {"cmd": "close_tab", "s": n}
  {"cmd": "quit"}
"""
import json
import os
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

CHROMIUM = os.environ.get("CONCLAVE_CHROMIUM", "/usr/bin/chromium")
DRIVER = os.environ.get("CONCLAVE_CHROMEDRIVER", "/usr/bin/chromedriver")

sessions = []


def new_session(url):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--disable-gpu", "--window-size=1100,760", "--lang=en-US"]:
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    driver.set_page_load_timeout(30)
    blank = driver.current_window_handle
    driver.switch_to.new_window("tab")
    driver.get(url)
    sessions.append({"driver": driver, "blank": blank, "page": driver.current_window_handle})
    return len(sessions) - 1


def handle(c):
    cmd = c["cmd"]
    if cmd == "open":
        return {"session": new_session(c["url"])}
    if cmd == "quit":
        for s in sessions:
            try:
                s["driver"].quit()
            except Exception:
                pass
        return {"ok": True}
    d = sessions[c["s"]]["driver"]
    if cmd == "type":
        el = d.find_element(By.ID, c["id"])
        el.clear()
        el.send_keys(c["text"])
        if c.get("enter"):
            el.send_keys(Keys.ENTER)
        return {"ok": True}
    if cmd == "click":
        d.find_element(By.ID, c["id"]).click()
        return {"ok": True}
    if cmd == "select":
        Select(d.find_element(By.ID, c["id"])).select_by_value(c["value"])
        return {"ok": True}
    if cmd == "text":
        return {"text": d.find_element(By.ID, c["id"]).text}
    if cmd == "js":
        return {"value": d.execute_script(c["script"])}
    if cmd == "wait_js":
        deadline = time.time() + c.get("timeout", 10)
        value = None
        while time.time() < deadline:
            value = d.execute_script(c["script"])
            if value:
                return {"value": value, "ok": True}
            time.sleep(0.05)
        return {"value": value, "ok": False}
    if cmd == "screenshot":
        d.save_screenshot(c["path"])
        return {"ok": True}
    if cmd == "close_tab":
        s = sessions[c["s"]]
        d.switch_to.window(s["page"])
        d.close()
        d.switch_to.window(s["blank"])
        return {"ok": True}
    return {"error": "unknown command " + cmd}


def main():
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            reply = handle(json.loads(line))
        except Exception as e:  # the test reads the error
            reply = {"error": "%s: %s" % (type(e).__name__, e)}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
        if json.loads(line).get("cmd") == "quit":
            break


if __name__ == "__main__":
    main()
