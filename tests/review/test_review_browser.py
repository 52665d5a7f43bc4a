"""The review page in a real browser: Debian's headless Chromium driven by Selenium, against a
real review server over a store filled by the real `label` command.

The keyboard flow is timed (median per decision over 50 scripted decisions, printed, not
asserted: timings belong to benchmarks) and rows per 1400x900 screen are measured; both are
written to test-artifacts/review-browser.json. Screenshots land in test-artifacts/ (gitignored)
for a person to look at.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

import pandas as pd
import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.ui import WebDriverWait
from typer.testing import CliRunner

from onet_llm.cli import app
from tests.review.review_support import REPO, SCRIPT_TITLE, RunningReview, label_into_store

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = REPO / "test-artifacts"
BROWSER_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--window-size=1400,900",
]


@pytest.fixture(scope="module")
def review_store(tmp_path_factory: pytest.TempPathFactory, onet_home: Path) -> Path:
    return label_into_store(tmp_path_factory.mktemp("review-browser"), onet_home)


@pytest.fixture(scope="module")
def review(review_store: Path):
    running = RunningReview(review_store, reviewer="Dana Auditor")
    yield running
    running.stop()


def start_chromium(javascript: bool = True) -> webdriver.Chrome:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        message = "Debian chromium and chromium-driver are missing (make install adds them)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in BROWSER_FLAGS:
        options.add_argument(flag)
    if not javascript:
        options.add_experimental_option(
            "prefs", {"profile.managed_default_content_settings.javascript": 2}
        )
    try:
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    except WebDriverException as error:
        pytest.fail(f"cannot start headless chromium: {error.msg}")
    driver.set_page_load_timeout(30)
    return driver


@pytest.fixture(scope="module")
def browser():
    driver = start_chromium()
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def browser_without_javascript():
    driver = start_chromium(javascript=False)
    yield driver
    driver.quit()


def record_figure(name: str, value) -> None:
    """Measured figures for the report, in test-artifacts/review-browser.json."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "review-browser.json"
    figures = json.loads(path.read_text()) if path.exists() else {}
    figures[name] = value
    path.write_text(json.dumps(figures, indent=2))
    print(f"{name}: {value}")


def screenshot(driver: webdriver.Chrome, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000
    return path


def count(driver: webdriver.Chrome, view: str) -> int:
    return int(driver.find_element(By.CSS_SELECTOR, f'[data-count="{view}"]').text)


def submit(driver: webdriver.Chrome, element_id: str) -> None:
    """Click a control that loads a new page, and wait until the old page is gone (reading
    rows straight after the click can otherwise see the page being replaced)."""
    old_page = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.ID, element_id).click()
    WebDriverWait(driver, 10).until(expected_conditions.staleness_of(old_page))


def articles(driver: webdriver.Chrome):
    return driver.find_elements(By.CSS_SELECTOR, "article.posting")


def expand(driver: webdriver.Chrome, row_number: int):
    """Open a row's details in place (a click on its summary line) and return the row."""
    row = driver.find_element(By.ID, f"row-{row_number}")
    if not row.find_element(By.CSS_SELECTOR, "details.row-details").get_attribute("open"):
        row.find_element(By.CSS_SELECTOR, "summary.row-line").click()
    return driver.find_element(By.ID, f"row-{row_number}")


def wait_state(driver: webdriver.Chrome, row_number: int, state: str) -> None:
    WebDriverWait(driver, 15).until(
        lambda d: d.find_element(By.ID, f"row-{row_number}").get_attribute("data-state") == state
    )


def rows_on_screen(driver: webdriver.Chrome) -> int:
    """Rows whose whole summary line is inside the viewport."""
    return driver.execute_script(
        "const h = window.innerHeight; return Array.from("
        "document.querySelectorAll('article.posting')).filter(a => {"
        "const r = a.getBoundingClientRect(); return r.top >= 0 && r.bottom <= h; }).length"
    )


def not_pwned(driver: webdriver.Chrome) -> bool:
    return driver.execute_script("return typeof window.__pwned === 'undefined'")


def test_page_shows_the_run_and_hostile_text_stays_text(browser, review):
    browser.get(review.url)
    assert browser.title.startswith("review ")
    assert count(browser, "all") == 23 and count(browser, "problems") == 1
    assert count(browser, "unreviewed") == 23 and count(browser, "reviewed") == 0
    first = articles(browser)[0]
    assert first.find_element(By.CSS_SELECTOR, ".posting-title").text == (
        "Medical Affairs Scientist"
    )
    first = expand(browser, 1)  # details open in place, nothing reloads
    assert len(first.find_elements(By.CSS_SELECTOR, ".labels li")) == 5
    first.find_element(By.CSS_SELECTOR, ".shortlist summary").click()
    assert len(first.find_elements(By.CSS_SELECTOR, ".shortlist tbody tr")) == 20
    assert "embedding top-1" in first.find_element(By.CSS_SELECTOR, ".embedding-top").text
    assert "margin over #2" in first.find_element(By.CSS_SELECTOR, ".embedding-top").text
    keys = [k.text for k in browser.find_elements(By.CSS_SELECTOR, "#shortcuts kbd")]
    assert {"j", "k", "a", "o", "u", "f", "c", "z"} <= set(keys)  # shortcuts shown on the page
    screenshot(browser, "review-page")

    hostile = expand(browser, 21)
    assert hostile.find_element(By.CSS_SELECTOR, ".posting-title").text == SCRIPT_TITLE
    assert "<img src=x onerror=" in hostile.find_element(By.CSS_SELECTOR, ".body-text").text
    assert "id <i>x1</i>" in hostile.find_element(By.CSS_SELECTOR, ".posting-id").text
    expand(browser, 22)
    # No element from posting text exists in the DOM, and none of it ran.
    page = browser.find_element(By.TAG_NAME, "body")
    assert page.find_elements(By.CSS_SELECTOR, "article img, article svg, article b") == []
    assert len(browser.find_elements(By.TAG_NAME, "script")) == 1  # our /static/review.js
    assert not_pwned(browser)


def test_filters_narrow_rows_and_counts(browser, review):
    browser.get(review.url)
    submit(browser, "view-problems")
    rows = articles(browser)
    assert len(rows) == 1 and rows[0].get_attribute("id") == "row-23"
    assert (
        "title and body are both empty"
        in expand(browser, 23).find_element(By.CSS_SELECTOR, ".problem").text
    )

    submit(browser, "view-all")
    search = browser.find_element(By.ID, "filter-text")
    search.send_keys("pwned")
    submit(browser, "apply-filters")
    assert {row.get_attribute("id") for row in articles(browser)} == {"row-21", "row-22"}
    assert count(browser, "all") == 2 and not_pwned(browser)

    browser.get(review.url)
    Select(browser.find_element(By.ID, "filter-major")).select_by_value("29")
    submit(browser, "apply-filters")
    codes = [row.find_element(By.CSS_SELECTOR, ".current .code").text for row in articles(browser)]
    assert codes and all(code.startswith("29-") for code in codes)
    assert count(browser, "all") == len(codes)

    code = codes[0]
    browser.get(review.url)
    Select(browser.find_element(By.ID, "filter-code")).select_by_value(code)
    submit(browser, "apply-filters")
    assert all(
        row.find_element(By.CSS_SELECTOR, ".current .code").text == code
        for row in articles(browser)
    )


def test_override_through_taxonomy_search_then_export(browser, review, tmp_path: Path):
    browser.get(review.url)
    assert browser.find_element(By.ID, "reviewer").get_attribute("value") == "Dana Auditor"
    row = expand(browser, 3)  # "Closing Processor III"
    previous = row.find_element(By.CSS_SELECTOR, ".labels li .code").text
    row.find_element(By.CSS_SELECTOR, "input.note-input").send_keys("mortgage <closing> work")
    row.find_element(By.CSS_SELECTOR, ".occupation-search").send_keys("loan officer")
    form = row.find_element(By.CSS_SELECTOR, "form.decide")
    WebDriverWait(browser, 10).until(
        lambda _: form.get_attribute("data-searched") == "loan officer"
    )
    choice = row.find_element(By.CSS_SELECTOR, ".occupation-choice")
    offered = browser.execute_script(
        "return Array.from(arguments[0].options, o => o.value)", choice
    )
    assert "13-2072.00" in offered and "51-9141.00" not in offered  # search results, not shortlist
    Select(choice).select_by_value("13-2072.00")
    page = browser.find_element(By.TAG_NAME, "html")
    row.find_element(By.CSS_SELECTOR, ".override-button").click()
    wait_state(browser, 3, "override")
    assert browser.find_element(By.TAG_NAME, "html") == page  # saved with fetch, no reload
    decided = browser.find_element(By.CSS_SELECTOR, "#row-3 ol.history").text
    assert "override 13-2072.00 by Dana Auditor" in decided
    assert "mortgage <closing> work" in decided
    assert count(browser, "reviewed") == 1
    screenshot(browser, "review-after-override")

    expand(browser, 2).find_element(By.CSS_SELECTOR, "button.accept").click()
    wait_state(browser, 2, "accept")
    assert count(browser, "reviewed") == 2

    # The empty row has no label to accept; an auditor can still assign one, but the export
    # leaves it out (train/eval --data need a title) and says so.
    empty = expand(browser, 23)
    assert empty.find_elements(By.CSS_SELECTOR, "button.accept") == []
    empty.find_element(By.CSS_SELECTOR, ".occupation-search").send_keys("registered nurse")
    form = empty.find_element(By.CSS_SELECTOR, "form.decide")
    WebDriverWait(browser, 10).until(
        lambda _: form.get_attribute("data-searched") == "registered nurse"
    )
    Select(empty.find_element(By.CSS_SELECTOR, ".occupation-choice")).select_by_value("29-1141.00")
    empty.find_element(By.CSS_SELECTOR, ".override-button").click()
    wait_state(browser, 23, "override")
    assert count(browser, "reviewed") == 3

    out = tmp_path / "corrections.csv"
    result = CliRunner().invoke(
        app,
        ["review", "export", "--out", str(out), "--store", str(review.context.store_path)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "exported 2 reviewed rows" in result.output and "(1 left out: no title)" in result.output
    exported = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(exported.columns[:4]) == ["id", "title", "body", "onet_code"]
    override = exported[exported["decision"] == "override"].iloc[0]
    assert (override["id"], override["title"]) == ("15", "Closing Processor III")
    assert override["onet_code"] == "13-2072.00" and override["onet_title"] == "Loan Officers"
    assert override["previous_onet_code"] == previous
    assert override["reviewer"] == "Dana Auditor"
    assert override["note"] == "mortgage <closing> work"
    assert override["body"].startswith("Review underwriting approval")
    from onet_llm.taxonomy import load_taxonomy
    from onet_llm.train.data import read_postings

    assert len(read_postings(out, load_taxonomy())) == 2  # usable as `train --data` as it is
    accepted = exported[exported["decision"] == "accept"].iloc[0]
    assert accepted["id"] == "14" and accepted["onet_code"] == "17-2141.00"


# -- keyboard review over 63 rows --------------------------------------------------------------


@pytest.fixture(scope="module")
def keyboard_review(tmp_path_factory: pytest.TempPathFactory, onet_home: Path):
    store = label_into_store(tmp_path_factory.mktemp("review-keys"), onet_home, copies=3)
    running = RunningReview(store, reviewer="kim")
    yield running
    running.stop()


def press(driver: webdriver.Chrome, keys: str) -> None:
    driver.find_element(By.TAG_NAME, "body").send_keys(keys)


def decisions_done(driver: webdriver.Chrome) -> int:
    return int(driver.execute_script("return Number(document.body.dataset.decisions || 0)"))


def test_keyboard_review_fifty_decisions_undo_and_bulk_accept(browser, keyboard_review):
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 1400, "height": 900, "deviceScaleFactor": 1, "mobile": False},
    )
    try:
        browser.get(keyboard_review.url)
        WebDriverWait(browser, 10).until(
            lambda d: d.execute_script("return document.body.dataset.ready") == "1"
        )
        on_screen = rows_on_screen(browser)
        record_figure("rows_per_1400x900_screen", on_screen)
        assert on_screen >= 12
        screenshot(browser, "review-keyboard-1400x900")
        assert count(browser, "all") == 63
        page = browser.find_element(By.TAG_NAME, "html")

        # 50 decisions, each one key: mostly accepts, some unsure and flags.
        script = ["a", "a", "a", "u", "a", "a", "f", "a", "a", "a"] * 5
        seconds = []
        for number, key in enumerate(script, start=1):
            focused = browser.execute_script("return document.body.dataset.focusedRow")
            started = time.perf_counter()
            press(browser, key)
            WebDriverWait(browser, 15).until(lambda d, n=number: decisions_done(d) >= n)
            seconds.append(time.perf_counter() - started)
            wait_state(browser, int(focused), {"a": "accept", "u": "unsure", "f": "flag"}[key])
        record_figure("median_seconds_per_keyboard_decision", round(statistics.median(seconds), 3))
        assert browser.find_element(By.TAG_NAME, "html") == page  # never reloaded
        assert count(browser, "reviewed") == 50
        assert count(browser, "flagged") == 10

        # Back to the last decided row and undo it: k moves up, z undoes.
        last = int(browser.execute_script("return document.body.dataset.focusedRow")) - 1
        press(browser, "k")
        assert browser.execute_script("return document.body.dataset.focusedRow") == str(last)
        before = decisions_done(browser)
        press(browser, "z")
        WebDriverWait(browser, 15).until(lambda d: decisions_done(d) > before)
        wait_state(browser, last, "open")
        assert count(browser, "reviewed") == 49
        history = browser.find_element(By.CSS_SELECTOR, f"#row-{last} ol.history")
        assert "(undone)" in history.get_attribute("textContent")

        # Bulk accept of what is still open on this page, after a confirmation naming the count.
        open_rows = len(
            browser.find_elements(
                By.CSS_SELECTOR, 'article.posting[data-state="open"][data-has-label="1"]'
            )
        )
        assert open_rows > 0
        browser.find_element(By.CSS_SELECTOR, "#bulk-page button").click()
        alert = WebDriverWait(browser, 10).until(expected_conditions.alert_is_present())
        assert f"Accept the top label of {open_rows} open rows on this page" in alert.text
        alert.accept()
        WebDriverWait(browser, 15).until(expected_conditions.staleness_of(page))
        assert count(browser, "reviewed") == 49 + open_rows
        screenshot(browser, "review-after-bulk")
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_without_javascript_decisions_and_bulk_accept_still_work(
    browser_without_javascript, review_store: Path, tmp_path: Path
):
    driver = browser_without_javascript
    store = tmp_path / "store.duckdb"
    store.write_bytes(review_store.read_bytes())
    running = RunningReview(store, reviewer="noscript")
    try:
        driver.get(running.url)
        row = expand(driver, 4)  # <details> opens without any script
        old = driver.find_element(By.TAG_NAME, "html")
        row.find_element(By.CSS_SELECTOR, "button.unsure").click()
        WebDriverWait(driver, 15).until(expected_conditions.staleness_of(old))
        assert driver.find_element(By.ID, "row-4").get_attribute("data-state") == "unsure"
        assert "#row-4" in driver.current_url

        old = driver.find_element(By.TAG_NAME, "html")
        driver.find_element(By.CSS_SELECTOR, "#bulk-filter button").click()
        WebDriverWait(driver, 15).until(expected_conditions.staleness_of(old))
        message = driver.find_element(By.ID, "confirm-message").text
        assert "Accept the top label of 21 rows as noscript in the filter?" in message
        old = driver.find_element(By.TAG_NAME, "html")
        driver.find_element(By.ID, "confirm-button").click()
        WebDriverWait(driver, 15).until(expected_conditions.staleness_of(old))
        assert count(driver, "reviewed") == 22 and count(driver, "flagged") == 1
    finally:
        running.stop()


# -- a run labelled with a real local LLM (SmolLM2-135M through llama.cpp) ---------------------


@pytest.fixture(scope="module")
def llm_review_store(tmp_path_factory: pytest.TempPathFactory, onet_home: Path):
    """2 real postings, the hostile ones and an empty row, labelled with `--llm` against a
    llama.cpp server on 127.0.0.1 running SmolLM2-135M (tiny: it proves the audit trail, and
    its answers are often cut off, which gives real fallback rows too)."""
    try:
        from benchmarks.local_llm import LocalModelMissing, local_llm_server, smollm2_path

        model = smollm2_path()
    except (ImportError, LocalModelMissing) as error:
        if os.environ.get("CI"):  # make install provides both
            pytest.fail(f"local SmolLM2 server unavailable: {error}")
        pytest.skip(f"local SmolLM2 server unavailable: {error}")
    folder = tmp_path_factory.mktemp("review-llm")
    patch = pytest.MonkeyPatch()
    patch.setenv("ONET_LLM_BODY_CHARACTERS", "300")
    patch.setenv("ONET_LLM_VALIDATION_RETRIES", "0")
    patch.setenv("OPENAI_API_KEY", "sk-local-never-shown-0123456789")
    try:
        with local_llm_server(model, parallel=2, n_ctx=2048) as base_url:
            store = label_into_store(
                folder,
                onet_home,
                "--llm",
                "--llm-model",
                "smollm2",
                "--base-url",
                base_url,
                "--top-k",
                "3",
                "--shortlist-size",
                "8",
                "--concurrency",
                "2",
                real_postings=2,
            )
    finally:
        patch.undo()
    return store


def stored_rows(store: Path) -> pd.DataFrame:
    import duckdb

    with duckdb.connect(str(store), read_only=True) as db:
        return db.execute("SELECT * FROM run_rows ORDER BY row_number").df()


@pytest.mark.slow
def test_llm_run_shows_rationales_disagreements_and_fallbacks(browser, llm_review_store, tmp_path):
    import json

    rows = stored_rows(llm_review_store)
    assert set(rows["source"]) <= {"llm", "fallback", "error"} and "error" in set(rows["source"])
    assert rows["source"].isin(["llm", "fallback"]).sum() == 4  # every posting went to the LLM
    labels = [json.loads(value) if isinstance(value, str) else [] for value in rows["labels"]]
    shortlists = [
        json.loads(value) if isinstance(value, str) else [] for value in rows["shortlist"]
    ]
    expected_disagree = sum(
        source == "llm" and label[0]["onet_code"] != shortlist[0]["onet_code"]
        for source, label, shortlist in zip(rows["source"], labels, shortlists, strict=True)
    )
    # Low confidence: stated confidence < 0.5, or embedding margin < 0.05, or LLM != embedding.
    expected_low = sum(
        bool(label)
        and (
            (label[0].get("confidence") is not None and label[0]["confidence"] < 0.5)
            or (len(shortlist) > 1 and shortlist[0]["score"] - shortlist[1]["score"] < 0.05)
            or (source == "llm" and label[0]["onet_code"] != shortlist[0]["onet_code"])
        )
        for source, label, shortlist in zip(rows["source"], labels, shortlists, strict=True)
    )

    review = RunningReview(llm_review_store)
    try:
        browser.get(review.url)
        assert count(browser, "all") == 5
        assert count(browser, "disagree") == expected_disagree
        assert count(browser, "low_confidence") == expected_low
        assert count(browser, "problems") == int(rows["source"].isin(["fallback", "error"]).sum())
        assert not_pwned(browser)
        assert "sk-local-never-shown" not in browser.page_source
        screenshot(browser, "review-llm-run")

        for row, source, label, error in zip(
            rows["row_number"], rows["source"], labels, rows["error"], strict=True
        ):
            article = expand(browser, row)
            assert article.find_element(By.CSS_SELECTOR, ".badge.source").text == source
            if source == "llm":
                assert "LLM's ranked choice" in article.find_element(
                    By.CSS_SELECTOR, ".labels h3"
                ).get_attribute("textContent")
                rationale = article.find_element(By.CSS_SELECTOR, ".labels li .rationale").text
                assert rationale == " ".join(label[0]["rationale"].split())
                if label[0]["confidence"] is not None:
                    assert f"confidence {label[0]['confidence']:.2f}" in article.text
                article.find_element(By.CSS_SELECTOR, "details.call summary").click()
                panel = article.find_element(By.CSS_SELECTOR, "details.call").text
                assert "smollm2" in panel and "raw answer" in panel.lower()  # CSS upper-cases it
                assert " s\n" in panel or panel.count(" s") >= 1  # latency, rounded
                messages = article.find_elements(By.CSS_SELECTOR, "pre.prompt")
                assert len(messages) >= 2  # system and user, as sent
                assert "1." in messages[-1].text  # the numbered candidates
            elif source == "fallback":
                problem = article.find_element(By.CSS_SELECTOR, ".problem").text
                assert problem.startswith("fallback:") and error in problem
        screenshot(browser, "review-llm-call-details")

        browser.find_element(By.ID, "view-problems").click()
        assert all(
            "source-fallback" in a.get_attribute("class")
            or "source-error" in a.get_attribute("class")
            for a in articles(browser)
        )
        browser.get(review.url + "?sort=confidence_desc")
        shown = [
            float(badge.text.split()[-1])
            for badge in browser.find_elements(By.CSS_SELECTOR, "article .badge.confidence")
        ]
        assert shown == sorted(shown, reverse=True)

        browser.get(review.url)
        first = expand(browser, 1)
        previous = first.find_element(By.CSS_SELECTOR, ".labels li .code").text
        target, query = ("19-1041.00", "epidemiolog")
        if previous == target:
            target, query = ("29-1141.00", "registered nurse")
        first.find_element(By.CSS_SELECTOR, ".occupation-search").send_keys(query)
        form = first.find_element(By.CSS_SELECTOR, "form.decide")
        WebDriverWait(browser, 10).until(lambda _: form.get_attribute("data-searched") == query)
        Select(first.find_element(By.CSS_SELECTOR, ".occupation-choice")).select_by_value(target)
        first.find_element(By.CSS_SELECTOR, ".override-button").click()
        wait_state(browser, 1, "override")
    finally:
        review.stop()
    out = tmp_path / "corrections.csv"
    result = CliRunner().invoke(
        app, ["review", "export", "--out", str(out), "--store", str(llm_review_store)]
    )
    assert result.exit_code == 0, result.output
    exported = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert len(exported) == 1
    row = exported.iloc[0]
    assert (row["id"], row["onet_code"], row["previous_onet_code"]) == ("11", target, previous)
    assert row["source"] == rows.loc[0, "source"] and row["decision"] == "override"
