"""The app in a real headless Chromium (Debian's, driven by Playwright) on a tiny random target."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
pytestmark = [
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium at /usr/bin/chromium"),
    pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning"),
]
playwright = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    from tests.helpers import tiny_app

    with tiny_app(tmp_path_factory.mktemp("tiny") / "model") as url:
        yield url


@pytest.fixture(scope="module")
def page(app_url):
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking"],
        )
        context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        page = context.new_page()
        page.goto(app_url)
        try:
            yield page
        finally:
            browser.close()


def set_slider(page, elem_id: str, value: str, attempts: int = 10) -> None:
    """Type ``value`` into a slider's number box until the slider holds it.

    In CI a value typed right after the Settings accordion opened was sometimes replaced by the default
    (the component re-rendering as it opened), so the run used 48 tokens; retyping until it holds is robust.
    """
    box = page.locator(f"{elem_id} input[type=number]")
    slider = page.locator(f"{elem_id} input[type=range]")
    playwright.expect(slider).to_be_visible()
    for _ in range(attempts):
        box.fill(value)
        box.press("Tab")  # blur: the box commits its value
        try:
            playwright.expect(slider).to_have_value(value, timeout=1_000)
            playwright.expect(box).to_have_value(value, timeout=1_000)
            return
        except AssertionError:
            continue
    raise AssertionError(f"{elem_id} did not take the value {value}")


# Set window.sawAllStreaming once the page shows all three boxes holding tokens, and every method's counters at
# least 3 target forwards (the prefill and two steps: a Stop now leaves a step slider that reaches past 1, where
# after the prefill alone it rightly stops at 1), while the status still says Running: watched on every DOM
# change, so a fast generation cannot slip between two polls (and a slow, loaded machine cannot be stopped early).
STREAM_WATCH = """() => {
    window.sawAllStreaming = false;
    const check = () => {
        const running = document.querySelector('#status').innerText.includes('Running');
        const all = ['#tokens-a', '#tokens-b', '#tokens-plain'].every(
            id => document.querySelectorAll(id + ' .token').length > 0);
        const forwards = [...document.querySelectorAll('#counters tbody tr')].map(
            row => parseInt(row.children[2].innerText, 10));
        const stepped = forwards.length === 3 && forwards.every(n => n >= 3);
        if (running && all && stepped) window.sawAllStreaming = true;
    };
    new MutationObserver(check).observe(document.body, {childList: true, subtree: true, characterData: true});
}"""


def shoot(page, name: str) -> None:
    """A full-page screenshot for a look by eye, when JAKIRO_SCREENSHOTS names a folder."""
    if os.environ.get("JAKIRO_SCREENSHOTS"):
        page.screenshot(path=str(Path(os.environ["JAKIRO_SCREENSHOTS"]) / f"{name}.png"), full_page=True)


def test_generate_inspect_scrub_and_export(page, tmp_path):
    from app.examples import load_examples

    expect = playwright.expect
    # an example's button shows its label and fills the prompt with its text
    example = load_examples()[2]
    page.get_by_role("button", name=example.label, exact=True).click()
    expect(page.locator("#prompt textarea")).to_have_value(example.prompt)
    page.locator("#prompt textarea").fill("Name a colour.")
    page.locator("#settings").get_by_text("Settings").first.click()

    # settings that do not do what they seem are explained as they are set
    set_slider(page, "#total-tokens", "3")
    expect(page.locator("#settings-note")).to_contain_text("less than depth")
    set_slider(page, "#total-tokens", "24")
    expect(page.locator("#settings-note")).not_to_contain_text("less than depth")

    # a long generation streams into all three boxes at once (the methods take turns), and Stop ends it
    set_slider(page, "#max-new-tokens", "256")
    page.evaluate(STREAM_WATCH)
    page.locator("#generate").click()
    page.wait_for_function("() => window.sawAllStreaming", timeout=60_000)
    shoot(page, "streaming")
    page.locator("#stop").click()
    # Stop's follow-up sets the step slider to the stopped run: only then has the cancel been handled (gradio cancels
    # every job of the event that is queued when the cancel arrives, a Generate clicked just before it included)
    expect(page.locator("#step input[type=range]")).not_to_have_attribute("max", "1", timeout=30_000)
    # the stopped run's step 2, so that step 1 below can only come from the next run's follow-up (a loaded machine
    # may finish streaming well before that follow-up has reset the inspector, and a click between would be undone)
    page.locator("#next-step").click()
    expect(page.locator("#step input[type=number]")).to_have_value("2")

    set_slider(page, "#max-new-tokens", "12")
    # the random drafters' trees are never accepted, so without the context lookup (which the random target's
    # repetitive text feeds) every cycle emits one token and token i comes from step i
    set_slider(page, "#lookup", "0")
    page.locator("#generate").click()

    # tokens appear in all three boxes, and the run finishes
    expect(page.locator("#status")).to_contain_text("Done", timeout=60_000)
    expect(page.locator("#step input[type=number]")).to_have_value("1", timeout=30_000)  # its follow-up ran
    for box in ("#tokens-a", "#tokens-b", "#tokens-plain"):
        expect(page.locator(f"{box} .token")).to_have_count(12)
    expect(page.locator("#counters")).to_contain_text("plain decoding")
    shoot(page, "generated")

    # the inspect tab draws both trees at step 1
    tree = page.locator("#tree-a .js-plotly-plot .scatterlayer .point")
    expect(tree.first).to_be_visible(timeout=20_000)
    assert tree.count() > 5
    expect(page.locator("#tree-b .js-plotly-plot .scatterlayer .point").first).to_be_visible()
    expect(page.locator("#info-a")).to_contain_text("step 1")

    # scrub: next step, then a click on a token jumps to the step that produced it
    page.locator("#next-step").click()
    expect(page.locator("#info-a")).to_contain_text("step 2")
    expect(page.locator("#step input[type=number]")).to_have_value("2")
    page.locator("#tokens-b .token").nth(5).click()
    expect(page.locator("#info-b")).to_contain_text("step 5")
    expect(page.locator("#step input[type=number]")).to_have_value("5")
    set_slider(page, "#step", "3")  # the slider itself
    expect(page.locator("#info-a")).to_contain_text("step 3")
    expect(page.locator("#info-b")).to_contain_text("step 3")
    shoot(page, "inspect")

    # the statistics draw both drafters
    page.get_by_role("tab", name="Statistics", exact=True).click()
    expect(page.locator("#acc-hist .js-plotly-plot .legendtext").first).to_be_visible(timeout=20_000)
    assert page.locator("#acc-hist .js-plotly-plot .legendtext").count() == 2
    shoot(page, "statistics")

    # export: the session's traces and summary table download
    page.get_by_role("tab", name="Export / load", exact=True).click()
    page.locator("#export").click()
    link = page.locator("#exported a[href*='trace-jakiro']").first
    expect(link).to_be_visible(timeout=20_000)
    with page.expect_download() as info:
        link.click()
    saved = tmp_path / "trace.jsonl"
    info.value.save_as(saved)
    lines = Path(saved).read_text().splitlines()
    assert '"type": "header"' in lines[0] and len(lines) == 13  # header + prefill + 11 one-token cycles
    expect(page.locator("#exported a[href*='summary-']")).to_be_visible()

    # load the saved trace back: it replays without running a model
    page.locator("#upload input[type=file]").set_input_files(str(saved))
    expect(page.locator("#load-status")).to_contain_text("Loaded Jakiro (MoE)", timeout=20_000)
    expect(page.locator("#tokens-a .token")).to_have_count(12)
    expect(page.locator("#tokens-b")).to_be_hidden()

    # what is being compared: the Drafters tab describes both drafters side by side
    page.get_by_role("tab", name="Drafters", exact=True).click()
    cards = page.locator("#drafter-cards")
    expect(cards).to_contain_text("Mixture of Experts: 2 SwiGLU experts")
    expect(cards).to_contain_text("one dense SwiGLU MLP")
    shoot(page, "drafters-tab")


def test_benchmarks_tab_shows_committed_runs_and_a_users_own(page, tmp_path):
    expect = playwright.expect
    from app.views.bench import HEADLINE_REPORT, SHIPPED_DIR

    page.get_by_role("tab", name="Benchmarks", exact=True).click()
    text = page.locator("#report-text")
    expect(text).to_contain_text(HEADLINE_REPORT, timeout=30_000)  # the headline run, drawn on opening the tab
    expect(text).to_contain_text("95% interval")
    expect(page.locator("#report-plot .js-plotly-plot")).to_be_visible(timeout=20_000)
    shoot(page, "benchmarks")

    # a file that is not a report is refused, naming what is wrong; a good one is shown like a committed one
    bad = tmp_path / "broken.json"
    bad.write_text('{"machine": {}, "config": {}, "results": {}, "per_category": {}}')
    page.locator("#report-upload input[type=file]").set_input_files(str(bad))
    expect(text).to_contain_text("broken.json: machine lacks date", timeout=20_000)
    mine = tmp_path / "mine.json"
    mine.write_bytes((SHIPPED_DIR / "mtbench80-t1-margin90-bf16-s30.json").read_bytes())
    page.locator("#report-upload button[aria-label='Clear']").first.click()
    page.locator("#report-upload input[type=file]").set_input_files(str(mine))
    expect(text).to_contain_text("your file mine.json", timeout=20_000)
    expect(text).to_contain_text("sampling")

    # measure on the user's own prompts: every method on each, shown like a committed run, and downloadable
    if not page.locator("#max-new-tokens input[type=range]").is_visible():
        page.locator("#settings").get_by_text("Settings").first.click()
    set_slider(page, "#max-new-tokens", "8")
    page.locator("#measure").get_by_text("Measure on your own prompts").first.click()
    page.locator("#measure-prompts textarea").fill("Name a colour.\nCount to three.")
    page.locator("#measure-peers input[type=checkbox]").check()  # transformers' own methods join
    page.locator("#measure-run").click()
    expect(page.locator("#measure-status")).to_contain_text("Done: 10 generations", timeout=60_000)
    expect(text).to_contain_text("hf-prompt-lookup")
    expect(text).to_contain_text("your prompts, measured here")
    expect(text).to_contain_text("your prompts 2")
    expect(page.locator("#measure-file a[href*='bench-']")).to_be_visible()
    page.get_by_role("tab", name="Drafters", exact=True).click()  # away and back: the measured run stays shown
    page.get_by_role("tab", name="Benchmarks", exact=True).click()
    page.wait_for_timeout(1_000)
    expect(text).to_contain_text("your prompts, measured here")
    page.locator("#measure-prompts textarea").fill("")
    page.locator("#measure-run").click()
    expect(page.locator("#measure-status")).to_contain_text("type the prompts to measure", timeout=20_000)
