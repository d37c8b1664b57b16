"""llmiqa demo: the engine behind the page, the real Gradio server and its HTTP API (Python
client and curl), and the page itself in a real headless Chromium, all on tiny random
models and real images, compared with what `llmiqa score` prints for the same settings."""

import importlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from llmiqa.cli import main
from llmiqa.commands import arguments
from llmiqa.integrations.demo import CONCURRENCY, INSTALL_HINT, Engine
from llmiqa.method.aggregate import Aggregation
from llmiqa.method.results import ImageResult
from llmiqa.settings import option
from llmiqa.tiny import PERMISSIVE_MASK_FLAGS

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def need(module: str, extra: str):
    """Skip without an optional extra, unless `make test-face` installed it (it lists the
    extras it installed in LLMIQA_REQUIRE_FACE: then a missing one fails)."""
    if extra in os.environ.get("LLMIQA_REQUIRE_FACE", "").split(","):
        return importlib.import_module(module)
    return pytest.importorskip(module)


@pytest.fixture(scope="module")
def flags(qwen2_vl_dir, sam2_dir) -> list[str]:
    """The settings of every test here, as `llmiqa score` flags: regions on (tiny SAM2)."""
    return ["--model", str(qwen2_vl_dir), "--segmenter", str(sam2_dir), "--device", "cpu",
            *PERMISSIVE_MASK_FLAGS.split()]  # fmt: skip


@pytest.fixture(scope="module")
def options(flags) -> dict:
    parser = __import__("argparse").ArgumentParser()
    arguments.add_arguments(parser)
    return arguments.from_arguments(parser.parse_args(flags))


@pytest.fixture(scope="module")
def photo(data_dir) -> Path:
    return data_dir / "images" / "LIVEC_1000.JPG"


@pytest.fixture(scope="module")
def cli_result(flags, photo) -> ImageResult:
    """What `llmiqa score --json` says about the photo: the reference for the page."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["score", str(photo), *flags, "--json"]) == 0
    record = json.loads(out.getvalue())
    record["name"] = record.pop("path")
    return ImageResult.from_dict(record)


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, Path]:
    """Uploads the page must refuse with a message: not an image, a decompression bomb
    (a valid 30000 x 30000 PNG header over a few bytes of data), a file over the limit."""
    folder = tmp_path_factory.mktemp("bad")
    text = folder / "notes.png"
    text.write_text("this is not an image\n")

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    bomb = folder / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))  # fmt: skip
    huge = folder / "huge.png"
    huge.write_bytes(os.urandom(3 * 2**20 // 2))  # 1.5 MB, over the test app's 1 MB
    return {"text": text, "bomb": bomb, "huge": huge}


@pytest.fixture(scope="module")
def engine(options):
    engine = Engine(options, max_file_mb=1)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def server(engine):
    """The real app, served by Gradio on 127.0.0.1 from a thread of this process."""
    need("gradio", "demo")
    from llmiqa.integrations import demo

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = demo.build_app(engine)
    demo.launch(app, "127.0.0.1", port, block=False, max_file_mb=engine.max_file_mb)
    yield app, f"http://127.0.0.1:{port}/"
    app.close()


# ---- without a server ---------------------------------------------------------------------


def test_without_gradio_the_command_says_how_to_install_it_in_one_line(qwen2_vl_dir):
    code = (
        "import sys\nsys.modules['gradio'] = None  # as if not installed\n"
        "from llmiqa.cli import main\n"
        f"sys.exit(main(['demo', '--model', {str(qwen2_vl_dir)!r}]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip() == INSTALL_HINT and done.stdout == ""


def test_the_engine_rescores_k_from_the_store_when_it_comes_back(engine, photo, cli_result):
    files = [(photo.name, str(photo))]
    seven, five = engine.standard(7, "word"), engine.standard(5, "word")
    first = engine.score(files, seven, Aggregation())
    assert first.items[0].result.score == cli_result.score
    changed = engine.score(files, five, Aggregation())
    assert changed.rated > 0 and len(changed.items[0].result.probs) == 5
    back = engine.score(files, seven, Aggregation())
    assert (back.rated, back.from_store) == (0, first.rated + first.from_store)
    assert back.items[0].result.score == cli_result.score


def test_the_engine_turns_bad_files_into_messages_naming_them(engine, bad_files):
    files = [(path.name, str(path)) for path in bad_files.values()]
    outcome = engine.score(files, engine.standard(7, "word"), Aggregation())
    errors = [item.error for item in outcome.items]
    assert errors[0] == "notes.png: not an image file PIL can read"
    assert errors[1].startswith("bomb.png: too many pixels to decode safely")
    assert errors[2] == "huge.png: 1.5 MB, over the 1 MB limit per file"
    assert all(str(bad_files["text"].parent) not in e for e in errors)  # no server paths


# ---- the server and its HTTP API --------------------------------------------------------------


def test_every_event_waits_in_one_queue(server):
    app, _ = server
    functions = [fn for fn in app.fns.values() if fn.fn is not None]
    assert len(functions) >= 5
    assert {(fn.concurrency_limit, fn.concurrency_id) for fn in functions} == {(1, CONCURRENCY)}
    assert [fn.api_name for fn in functions if fn.api_visibility == "public"] == ["score"]


def test_the_python_client_gets_the_cli_score(server, photo, cli_result):
    need("gradio_client", "demo")
    from gradio_client import Client, handle_file

    client = Client(server[1], verbose=False)
    (record,) = client.predict(images=[handle_file(str(photo))], api_name="/score")
    assert record["name"] == photo.name and record["standard"] == "word-7"
    assert record["score"] == cli_result.score
    assert ImageResult.from_dict(record).rescored(Aggregation(lam=3)).score == (
        cli_result.rescored(Aggregation(lam=3)).score
    )
    (five,) = client.predict(images=[handle_file(str(photo))], levels=5, api_name="/score")
    assert five["standard"] == "word-5" and len(five["probs"]) == 5


def test_concurrent_clients_are_queued_and_each_gets_its_answer(server, photo, cli_result):
    need("gradio_client", "demo")
    from gradio_client import Client, handle_file

    answers: list = []

    def ask(readout: str) -> None:
        client = Client(server[1], verbose=False)
        (record,) = client.predict(
            images=[handle_file(str(photo))], readout=readout, api_name="/score"
        )
        answers.append((readout, record["score"]))

    threads = [threading.Thread(target=ask, args=(r,)) for r in ("expected", "argmax", "greedy")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(answers) == sorted(
        (r, cli_result.rescored(Aggregation(readout=r)).score)
        for r in ("expected", "argmax", "greedy")
    )


def test_curl_as_the_readme_shows_it(server, photo, cli_result):
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    url = server[1].rstrip("/")
    upload = subprocess.run(
        ["curl", "-s", "-F", f"files=@{photo}", f"{url}/gradio_api/upload"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    (path,) = json.loads(upload.stdout)
    file = {"path": path, "meta": {"_type": "gradio.FileData"}}
    body = json.dumps({"data": [[file], 7, "word", "expected", "area", 1, 1, 0, True, True]})
    call = subprocess.run(
        ["curl", "-s", "-X", "POST", f"{url}/gradio_api/call/score",
         "-H", "Content-Type: application/json", "-d", body],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    event = json.loads(call.stdout)["event_id"]
    stream = subprocess.run(
        ["curl", "-s", "-N", f"{url}/gradio_api/call/score/{event}"],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    lines = stream.stdout.splitlines()
    assert "event: complete" in lines, stream.stdout[:500]
    data = json.loads(lines[lines.index("event: complete") + 1].removeprefix("data: "))
    assert data[0][0]["score"] == cli_result.score


def test_a_new_aggregation_option_is_on_the_page_and_reaches_the_score(
    engine, photo, cli_result, monkeypatch
):
    """A field added to Aggregation (here by a subclass the options table names in its
    place) is a control on the page and a parameter of /score, with no change to the demo."""
    need("gradio", "demo")
    need("gradio_client", "demo")
    from gradio_client import Client, handle_file

    from llmiqa.integrations import demo
    from llmiqa.scoring import knobs

    @dataclass(frozen=True)
    class Wider(Aggregation):
        boost: float = field(default=0.5, metadata=option("a test's own knob"))

    groups = {Wider if cls is Aggregation else cls: group for cls, group in knobs.GROUPS.items()}
    monkeypatch.setattr(knobs, "GROUPS", groups)
    monkeypatch.setattr(engine, "options", {**engine.options, "boost": 0.5})
    reached = []
    score = engine.score
    monkeypatch.setattr(engine, "score", lambda *a: reached.append(a[2]) or score(*a))

    app = demo.build_app(engine)
    (control,) = [c["props"] for c in app.get_config_file()["components"]
                  if c["props"].get("elem_id") == "llmiqa-boost"]  # fmt: skip
    assert (control["label"], control["info"], control["value"]) == (
        "boost",
        "a test's own knob",
        0.5,
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    demo.launch(app, "127.0.0.1", port, block=False)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        (record,) = client.predict(images=[handle_file(str(photo))], boost=2.0, lam=3,
                                   api_name="/score")  # fmt: skip
    finally:
        app.close()
    assert reached == [Wider(lam=3.0, boost=2.0)]
    assert record["score"] == cli_result.rescored(Aggregation(lam=3)).score
    assert record["aggregation"]["boost"] == 2.0


# ---- the page in a real browser -----------------------------------------------------------------


def test_the_page_in_chromium(server, engine, photo, cli_result, bad_files, tmp_path):
    playwright = need("playwright.sync_api", "browser")
    if not Path(CHROMIUM).exists():
        if "browser" in os.environ.get("LLMIQA_REQUIRE_FACE", "").split(","):
            pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium")
        pytest.skip(f"{CHROMIUM} is missing (Debian's chromium package)")
    score = "#llmiqa-score .score-value"
    status = "#llmiqa-status"

    with playwright.sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, args=FLAGS, headless=True,
            viewport={"width": 1400, "height": 1100},
        )  # fmt: skip
        page = browser.new_page()
        page.goto(server[1])
        page.wait_for_selector("#llmiqa-files")

        def wait_status(text: str) -> str:
            page.wait_for_function(
                "t => document.querySelector('#llmiqa-status').innerText.includes(t)",
                arg=text, timeout=120_000,
            )  # fmt: skip
            return page.inner_text(status)

        # 1. Drop a real photo: the page shows the CLI's score, 4 decimals as the CLI prints.
        page.set_input_files("#llmiqa-files input[type=file]", [str(photo)])
        wait_status("Scored: 1 image(s)")
        assert page.inner_text(score) == f"{cli_result.score:.4f}"
        table = page.inner_text("#llmiqa-regions")
        assert cli_result.regions and "complement" in table
        for region in cli_result.regions:  # the CLI's regions, with their areas and scores
            assert f"{region.area_fraction:.1%}" in table and f"{region.score:.4f}" in table
        page.locator("#llmiqa-overlay img").wait_for(timeout=30_000)  # Figure 6
        page.locator("#llmiqa-chart img").wait_for(timeout=30_000)  # the bar chart
        page.screenshot(path=str(tmp_path / "scored.png"), full_page=True)

        # 2. An aggregation control: recomputed from the ratings held, no model call.
        rated = engine.usage.rated
        page.locator("#llmiqa-readout label", has_text="argmax").click()
        wait_status("no model call")
        argmax = cli_result.rescored(Aggregation(readout="argmax"))
        page.wait_for_function(
            "([s, v]) => document.querySelector(s).innerText === v",
            arg=[score, f"{argmax.score:.4f}"], timeout=30_000,
        )  # fmt: skip
        lam = page.locator("#llmiqa-lam input[type=number]")
        lam.fill("2.5")
        lam.press("Enter")
        both = cli_result.rescored(Aggregation(readout="argmax", lam=2.5))
        page.wait_for_function(
            "([s, v]) => document.querySelector(s).innerText === v",
            arg=[score, f"{both.score:.4f}"], timeout=30_000,
        )  # fmt: skip
        assert engine.usage.rated == rated

        # 3. Bad uploads: each named with what is wrong; the oversized one refused by Gradio.
        page.set_input_files(
            "#llmiqa-files input[type=file]", [str(bad_files["text"]), str(bad_files["bomb"])]
        )
        text = wait_status("bomb.png")
        assert "notes.png: not an image file PIL can read" in text
        assert "bomb.png: too many pixels to decode safely" in text
        page.screenshot(path=str(tmp_path / "bad.png"), full_page=True)
        page.set_input_files("#llmiqa-files input[type=file]", [str(bad_files["huge"])])
        page.get_by_text("exceed the maximum allowed size").first.wait_for(timeout=30_000)
        browser.close()
    keep = os.environ.get("LLMIQA_SCREENSHOTS")
    if keep:
        for name in ("scored.png", "bad.png"):
            shutil.copy(tmp_path / name, Path(keep) / name)
