"""`llmiqa demo`: a web page to drop images on and look at their scores (Gradio).

What a user sees: the score of each image; for the image selected, the probability of
each level for the whole image and each region (a bar chart), the paper's Figure 6
overlay (masks, boxes, region scores and areas) and the regions table. Changing the
aggregation recomputes every score from the ratings already held, with no model call;
changing K or the standard needs ratings under the new prompt, which the demo's store
returns when it holds them (e.g. going back to a K seen before) and the model computes
otherwise. The page says which. The aggregation's controls, and the HTTP API's
parameters, are its options as the options table declares them (llmiqa.scoring.knobs):
a new field of Aggregation is on the page with no change here.

All model and store work runs on one worker thread (the SQLite store and the models
belong to it), and Gradio's queue runs one event at a time: concurrent users wait in
line and see their position. Gradio is an optional extra (`pip install 'llmiqa[demo]'`);
nothing here imports it until the app is built.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from llmiqa.errors import UsageError
from llmiqa.inputs.images import ImageError, LoadedImage, load_image
from llmiqa.method.aggregate import Aggregation, allowed_readouts
from llmiqa.method.regions import Region
from llmiqa.method.results import ImageResult
from llmiqa.method.standards import KINDS, QUESTIONS, Standard
from llmiqa.scoring.knobs import Knob, build, knobs

INSTALL_HINT = "llmiqa demo needs Gradio: pip install 'llmiqa[demo]'"
MAX_FILE_MB = 50  # per upload; Gradio refuses larger files before they reach us
MAX_IMAGES = 32  # per request
OVERLAY_SIDE = 768  # the overlay is drawn at most this large
CONCURRENCY = "llmiqa"  # every event shares one queue slot: the models run one at a time
KEPT = 64  # decoded images and their regions kept for redrawing


@dataclass(frozen=True)
class Scored:
    """One uploaded file: its result, or why it has none."""

    name: str  # the file's own name (never the server's temporary path)
    path: str
    result: ImageResult | None = None
    error: str | None = None


@dataclass(frozen=True)
class Scoring:
    """What one request did: the files, and how many sub-images the model rated."""

    items: tuple[Scored, ...]
    rated: int
    from_store: int


class Engine:
    """The Scorer (models, segmenter, store), used from one worker thread only."""

    def __init__(
        self, options: dict[str, Any], store: str | None = None, max_file_mb: float = MAX_FILE_MB
    ) -> None:
        self.options = options
        self.max_file_mb = max_file_mb
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="llmiqa-demo")
        from llmiqa.scoring.pipeline import Scorer

        try:
            self.base = self._run(Scorer.from_options, options, store)
        except BaseException:
            self.close()
            raise
        self._variants: dict[Standard, Any] = {self.base.standard: self.base}
        self._decoded: OrderedDict[str, tuple[LoadedImage, list[Region]]] = OrderedDict()

    @property
    def usage(self):
        return self.base.usage

    def _run(self, fn, *args):
        return self._pool.submit(fn, *args).result()

    def close(self) -> None:
        self._pool.shutdown(wait=False)

    def standard(self, levels: int, kind: str) -> Standard:
        """The standard for these controls (the wording stays the demo's)."""
        try:
            return replace(self.base.standard, kind=kind, levels=int(levels))
        except ValueError as error:
            raise UsageError(str(error)) from None

    def _scorer(self, standard: Standard):
        """A Scorer asking under `standard`: the same raters, segmenter and store (one
        copy of each model in memory), only the prompt differs."""
        if standard not in self._variants:
            self._variants[standard] = self.base.with_standard(standard)
        return self._variants[standard]

    def score(
        self, files: Sequence[tuple[str, str]], standard: Standard, aggregation: Aggregation
    ) -> Scoring:
        """Score (name, path) pairs; bad files become items with an error."""
        return self._run(self._score, files, standard, aggregation)

    def _score(self, files, standard, aggregation) -> Scoring:
        from llmiqa.scoring.pipeline import check_readout

        check_readout(standard, aggregation, self.base.specs)
        scorer = self._scorer(standard)
        rated, stored = self.usage.rated, self.usage.from_store
        items: list[Scored | None] = []
        loaded: list[LoadedImage] = []
        for name, path in files:
            try:
                image = self._load(path)
            except ImageError as error:
                message = str(error).replace(path, name)
                items.append(Scored(name, path, error=message))
                continue
            items.append(None)
            loaded.append(image)
        results = iter(scorer.score(loaded) if loaded else [])
        done = []
        for (name, path), item in zip(files, items, strict=True):
            if item is None:
                result = next(results)
                if result.ok:
                    item = Scored(name, path, result.rescored(aggregation))
                else:
                    item = Scored(name, path, error=result.error.replace(path, name))
            done.append(item)
        return Scoring(tuple(done), self.usage.rated - rated, self.usage.from_store - stored)

    def _load(self, path: str) -> LoadedImage:
        size = Path(path).stat().st_size if Path(path).is_file() else 0
        if size > self.max_file_mb * 2**20:
            limit = f"{self.max_file_mb:g} MB"
            raise ImageError(f"{path}: {size / 2**20:.1f} MB, over the {limit} limit per file")
        return load_image(path)

    def regions(self, item: Scored) -> tuple[LoadedImage, list[Region]]:
        """The decoded image and its regions (from the store: no SAM2 call)."""
        return self._run(self._regions, item)

    def _regions(self, item: Scored) -> tuple[LoadedImage, list[Region]]:
        key = item.result.digest
        if key not in self._decoded:
            image = load_image(item.path)
            self._decoded[key] = (image, self.base.regions(image))
            while len(self._decoded) > KEPT:
                self._decoded.popitem(last=False)
        self._decoded.move_to_end(key)
        return self._decoded[key]


# ---- what the page shows (plain data, no Gradio) -----------------------------------------------


def aggregation_knobs() -> list[Knob]:
    """The aggregation's options, as the options table declares them (each a field of the
    settings class it builds: Aggregation, or whatever the table names in its place)."""
    return [k for k in knobs() if k.owner is not None and issubclass(k.owner, Aggregation)]


def aggregation_from(values: Mapping[str, Any]) -> Aggregation:
    """The aggregation the page's (or the API's) values describe, one value per option."""
    chosen = aggregation_knobs()
    typed = {}
    for knob in chosen:
        value = values[knob.key]
        try:
            typed[knob.key] = knob.kind(value)
        except (TypeError, ValueError):  # e.g. a number field left empty
            needed = f"a {knob.kind.__name__} is needed"
            raise UsageError(f"{knob.key}: {needed}, not {value!r}") from None
    return build(chosen[0].owner, typed)


def summary_rows(items: Sequence[Scored]) -> list[list]:
    """One row per file: name, score, s_global, s_local, regions, or its error."""
    rows = []
    for item in items:
        if item.result is None:
            rows.append([item.name, None, None, None, None, None, item.error])
            continue
        r = item.result
        local = float(np.nanmean(r.s_local)) if not np.isnan(r.s_local).all() else None
        spread = None if np.isnan(r.spread) else round(r.spread, 4)
        rows.append([item.name, round(r.score, 4), spread, round(float(r.s_global.mean()), 4),
                     None if local is None else round(local, 4), len(r.regions), ""])  # fmt: skip
    return rows


SUMMARY_HEADERS = ["image", "score", "± spread", "s_global", "s_local", "regions", "problem"]
REGION_HEADERS = ["#", "kind", "box (x0,y0,x1,y1)", "area", "score", "most probable level"]


def region_rows(result: ImageResult) -> list[list]:
    """The whole image, then each region: what the CLI's --regions table shows."""
    rows = [["whole", "image", "", "100.0%", round(float(result.s_global.mean()), 4),
             int(np.argmax(result.probs)) + 1]]  # fmt: skip
    for i, region in enumerate(result.regions):
        probs = region.probs.mean(axis=0)
        rows.append([str(i), region.kind, ",".join(map(str, region.box)),
                     f"{region.area_fraction:.1%}", round(region.score, 4),
                     int(np.argmax(probs)) + 1])  # fmt: skip
    return rows


def score_card(item: Scored | None, low_high: tuple[float, float]) -> str:
    """The big number (4 decimals, as `llmiqa score` prints it) and what it is out of."""
    if item is None:
        return "<div id='score-card'><span class='score-value'>–</span></div>"
    if item.result is None:
        return f"<div id='score-card'><span class='score-error'>{_escape(item.error)}</span></div>"
    r = item.result
    low, high = low_high
    top = "no fixed maximum" if np.isinf(high) else f"{high:g}"
    mass = float(r.valid_mass[0].mean())
    warn = (
        f"<div class='score-note'>the model put only {mass:.1%} of its probability on the "
        "digits: it ignores the answer format (random weights?)</div>"
        if mass < 0.5
        else ""
    )
    spread = "" if np.isnan(r.spread) else f"<span class='score-spread'> ± {r.spread:.4f}</span>"
    return (
        f"<div id='score-card'><div class='score-name'>{_escape(item.name)}</div>"
        f"<span class='score-value'>{r.score:.4f}</span>{spread}"
        f"<span class='score-range'> on {low:g} .. {top}, higher is better</span>{warn}</div>"
    )


def _escape(text: str | None) -> str:
    import html

    return html.escape(text or "")


def probability_figure(result: ImageResult):
    """Grouped bars: P(level) for the whole image and each region (overlay colours)."""
    from matplotlib.figure import Figure

    from llmiqa.evaluation.draw import PALETTE

    views = [("whole image", result.probs, (0.25, 0.25, 0.25))]
    for i, region in enumerate(result.regions):
        color = tuple(c / 255 for c in PALETTE[i % len(PALETTE)])
        views.append((f"region {i} ({region.area_fraction:.0%})", region.probs.mean(0), color))
    levels = np.arange(1, len(result.probs) + 1)
    width = 0.8 / len(views)
    figure = Figure(figsize=(5.2, 3.8), layout="constrained")
    axis = figure.add_subplot()
    for i, (label, probs, color) in enumerate(views):
        axis.bar(levels - 0.4 + width * (i + 0.5), probs, width, label=label, color=color)
    axis.set_xticks(levels)
    axis.set_xlabel("level")
    axis.set_ylabel("probability")
    axis.set_ylim(0, 1)
    axis.legend(fontsize=8, ncols=min(3, len(views)), loc="lower center",
                bbox_to_anchor=(0.5, 1.0), frameon=False)  # fmt: skip
    axis.grid(axis="y", alpha=0.3)
    return figure


def status_text(outcome: Scoring | None, what: str) -> str:
    """One line on what the request cost, then one line per file that failed."""
    lines = []
    if outcome is not None:
        ok = sum(item.result is not None for item in outcome.items)
        if what == "aggregation":
            lines.append(f"Recomputed {ok} score(s) from the ratings held: no model call.")
        elif outcome.rated == 0:
            lines.append(
                f"{what}: {ok} image(s) scored; all {outcome.from_store} rating(s) came from "
                "the store: no model call."
            )
        else:
            lines.append(
                f"{what}: {ok} image(s) scored; the model rated {outcome.rated} sub-image(s), "
                f"{outcome.from_store} rating(s) came from the store."
            )
        lines += [f"⚠️ {item.error}" for item in outcome.items if item.error]
    return "\n\n".join(lines)


# ---- the Gradio app ---------------------------------------------------------------------------

CSS = """
#score-card {padding: 12px 4px;}
#score-card .score-value {font-size: 2.6em; font-weight: 700;}
#score-card .score-range, #score-card .score-name {color: #666;}
#score-card .score-error, #llmiqa-status p:has(> .warn) {color: #b00020;}
#score-card .score-note {color: #b26a00; font-size: 0.9em;}
"""


@dataclass
class Controls:
    """The page's inputs: the uploads, the standard (new ratings) and the aggregation
    (recomputed from the ratings held)."""

    files: Any
    levels: Any
    kind: Any
    aggregation: dict[str, Any]  # one per option, by its name (aggregation_from)


@dataclass
class Panel:
    """The page's outputs: what was done, the scores, and the chosen image's details."""

    status: Any
    card: Any
    chosen: Any
    summary: Any
    overlay: Any
    chart: Any
    regions: Any

    @property
    def details(self) -> list:
        return [self.card, self.overlay, self.chart, self.regions]


def build_app(engine: Engine, title: str = "llmiqa"):
    """The page; its events call the engine. `app.launch(...)` serves it."""
    try:
        import gradio as gr
    except ImportError:
        raise UsageError(INSTALL_HINT) from None

    # Uploads older than a day are deleted from Gradio's cache, checked every hour.
    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=(3600, 86400)) as app:
        state = gr.State([])
        gr.Markdown(_header(engine))
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                controls = _controls(gr, engine)
            with gr.Column(scale=2):
                panel = _panel(gr)
        _wire(gr, Handlers(gr, engine), state, controls, panel)
        _api(gr, engine)
    return app


def _header(engine: Engine) -> str:
    models = ", ".join(engine.base.models)
    segmenter = (
        "no regions (whole image only)"
        if engine.base.segmenter_spec is None
        else f"regions by {engine.options['segmenter']}"
    )
    return (
        f"## llmiqa: image quality by an MLLM\n"
        f"**Model:** `{models}` · {segmenter} · standard `{engine.base.standard}`. Drop one or "
        "more images; the score is s = (g·s_global + λ·s_local + c·N) / (g + λ if "
        "normalised). Aggregation changes need no model call."
    )


def _controls(gr, engine: Engine) -> Controls:
    options, standard = engine.options, engine.base.standard
    files = gr.File(label="Images", file_count="multiple", file_types=["image"],
                    elem_id="llmiqa-files", height=140)  # fmt: skip
    with gr.Group():
        gr.Markdown("**Standard** (new ratings, unless the store holds them)")
        # a question's answer words, or a standard's digits: the page stays on one side
        words = bool(standard.words)
        kinds = QUESTIONS if words else [k for k in KINDS if k not in QUESTIONS]
        choices = Standard.defined_levels(standard.kind, standard.wording)
        levels = gr.Dropdown([str(k) for k in choices], value=str(standard.levels),
                             label="K (number of levels)", elem_id="llmiqa-levels")  # fmt: skip
        kind = gr.Radio(list(kinds), value=standard.kind, label="standard")
    with gr.Group():
        gr.Markdown("**Aggregation** (recomputed, no model call)")
        # the readouts these ratings can take: digits' or answer words'
        readouts = allowed_readouts(words, bool(standard.top_logits))
        aggregation = {
            knob.key: _input(gr, knob, options[knob.key], readouts if knob.key == "readout"
                             else knob.choices, info=knob.help,
                             elem_id="llmiqa-" + knob.key.replace("_", "-"))
            for knob in aggregation_knobs()
        }  # fmt: skip
    return Controls(files, levels, kind, aggregation)


def _input(gr, knob: Knob, value, choices: Sequence | None = None, **style):
    """The component that takes one option's value: one of its choices, a checkbox, a
    number, or text."""
    label = knob.key.replace("_", " ")
    if choices:
        return gr.Radio(list(choices), value=value, label=label, **style)
    if knob.kind is bool:
        return gr.Checkbox(value=value, label=label, **style)
    if knob.kind in (int, float):
        return gr.Number(value, label=label, precision=0 if knob.kind is int else None, **style)
    return gr.Textbox(value, label=label, **style)


def _panel(gr) -> Panel:
    status = gr.Markdown(elem_id="llmiqa-status")
    card = gr.HTML(score_card(None, (1, 1)), elem_id="llmiqa-score")
    chosen = gr.Dropdown([], label="Details for", elem_id="llmiqa-chosen")
    summary = gr.Dataframe(headers=SUMMARY_HEADERS, label="Scores", interactive=False,
                           elem_id="llmiqa-summary")  # fmt: skip
    with gr.Row(equal_height=False):
        with gr.Column(min_width=280):
            gr.Markdown("**Regions** (Figure 6): each mask tinted, its box, its score (top "
                        "left) and area (bottom right)")  # fmt: skip
            overlay = gr.Image(type="pil", height=380, show_label=False, elem_id="llmiqa-overlay")
        with gr.Column(min_width=280):
            gr.Markdown("**P(level)** for the whole image and each region")
            chart = gr.Plot(format="png", show_label=False, elem_id="llmiqa-chart")
    regions = gr.Dataframe(headers=REGION_HEADERS, label="Regions", interactive=False,
                           elem_id="llmiqa-regions")  # fmt: skip
    return Panel(status, card, chosen, summary, overlay, chart, regions)


class Handlers:
    """What each event does: the engine's work turned into the page's outputs."""

    def __init__(self, gr, engine: Engine) -> None:
        self.gr, self.engine = gr, engine

    def details(self, items: list[Scored], name: str | None):
        item = next((i for i in items if i.name == name), items[0] if items else None)
        if item is None or item.result is None:
            return score_card(item, (1, 1)), None, None, []
        from llmiqa.evaluation.draw import draw_regions
        from llmiqa.method.aggregate import score_range

        try:
            image, found = self.engine.regions(item)
        except ImageError as error:  # e.g. Gradio's cache deleted the upload meanwhile
            gone = Scored(item.name, item.path, error=f"{item.name}: {error}; upload it again")
            return score_card(gone, (1, 1)), None, None, []
        drawing = draw_regions(image.image, found, item.result, max_side=OVERLAY_SIDE)
        low_high = score_range(item.result.aggregation, len(item.result.probs))
        return (score_card(item, low_high), drawing, probability_figure(item.result),
                region_rows(item.result))  # fmt: skip

    def page(self, outcome: Scoring, what: str, name: str | None):
        items = list(outcome.items)
        names = [item.name for item in items]
        name = name if name in names else (names[0] if names else None)
        return (items, status_text(outcome, what), summary_rows(items),
                self.gr.update(choices=names, value=name), *self.details(items, name))  # fmt: skip

    def files(self, paths, k, kind, **aggregation):
        if not paths:
            return [], "", [], self.gr.update(choices=[], value=None), *self.details([], None)
        try:
            standard = self.engine.standard(k, kind)
            outcome = self.engine.score(_named(paths), standard, aggregation_from(aggregation))
        except UsageError as error:
            return _failed(self.gr, str(error))
        return self.page(outcome, "Scored", None)

    def standard(self, items, name, k, kind, **aggregation):
        if not items:
            return _failed(self.gr, "", keep=True)
        try:
            standard = self.engine.standard(k, kind)
            files_named = [(item.name, item.path) for item in items]
            outcome = self.engine.score(files_named, standard, aggregation_from(aggregation))
        except UsageError as error:
            return _failed(self.gr, str(error), keep=True)
        return self.page(outcome, f"K = {k}, {kind} standard", name)

    def aggregation(self, items, name, **aggregation):
        if not items:
            return _failed(self.gr, "", keep=True)
        try:
            chosen = aggregation_from(aggregation)
        except UsageError as error:
            return _failed(self.gr, str(error), keep=True)
        rescored = [replace(i, result=i.result.rescored(chosen)) if i.result else i for i in items]
        return self.page(Scoring(tuple(rescored), 0, 0), "aggregation", name)


def _wire(gr, handlers: Handlers, state, controls: Controls, panel: Panel) -> None:
    """Every event on one queue slot: the models run one at a time."""
    common = dict(concurrency_limit=1, concurrency_id=CONCURRENCY, api_visibility="private")
    scoring = dict(common, inputs_kwargs=controls.aggregation)  # the aggregation by name
    outputs = [state, panel.status, panel.summary, panel.chosen, *panel.details]
    standard = [controls.levels, controls.kind]
    controls.files.change(handlers.files, [controls.files, *standard], outputs, **scoring)
    for control in (controls.levels, controls.kind):
        control.change(handlers.standard, [state, panel.chosen, *standard], outputs, **scoring)
    for control in controls.aggregation.values():
        control.change(handlers.aggregation, [state, panel.chosen], outputs,
                       trigger_mode="always_last", **scoring)  # fmt: skip
    panel.chosen.change(handlers.details, [state, panel.chosen], panel.details, **common)


def _api(gr, engine: Engine) -> None:
    """The HTTP API for data pipelines (/score): files in, one JSON record per file out."""
    options, standard = engine.options, engine.base.standard
    with gr.Column(visible=False):
        inputs = [
            gr.File(label="images", file_count="multiple"),
            gr.Number(standard.levels, label="levels", precision=0),
            gr.Textbox(standard.kind, label="kind"),
        ]
        # the aggregation's options by name, after the three above (/score's parameters)
        aggregation = {
            knob.key: _input(gr, knob, options[knob.key]) for knob in aggregation_knobs()
        }
        output = gr.JSON(label="results")

    def score(images, levels, kind, **values) -> list[dict]:
        """Score images; one record per file: its score, probabilities, regions and
        ratings (as `llmiqa score --json`), or {"name", "error"}."""
        if not images:
            raise gr.Error("no images given")
        try:
            chosen = engine.standard(levels, kind)
            outcome = engine.score(_named(images), chosen, aggregation_from(values))
        except UsageError as error:
            raise gr.Error(str(error)) from None
        return [
            {**item.result.to_dict(), "name": item.name, "standard": str(chosen)}
            if item.result
            else {"name": item.name, "error": item.error}
            for item in outcome.items
        ]

    hidden = gr.Button(visible=False)
    hidden.click(score, inputs, output, api_name="score", inputs_kwargs=aggregation,
                 concurrency_limit=1, concurrency_id=CONCURRENCY)  # fmt: skip


def _named(paths: Sequence[Any]) -> list[tuple[str, str]]:
    """(display name, server path) for uploaded files; refuses too many at once."""
    paths = [getattr(p, "name", None) or getattr(p, "path", None) or str(p) for p in paths]
    if len(paths) > MAX_IMAGES:
        raise UsageError(f"{len(paths)} images: at most {MAX_IMAGES} per request")
    return [(Path(p).name, str(p)) for p in paths]


def _failed(gr, message: str, keep: bool = False):
    """A visible message and nothing else changed (keep: the state as it is)."""
    state = gr.update() if keep else []
    text = f"⚠️ {message}" if message else gr.update()
    return state, text, gr.update(), gr.update(), gr.update(), gr.update(), gr.update(), gr.update()


def theme():
    """Gradio's default look with local fonts: the page fetches nothing from elsewhere."""
    import gradio as gr

    system = ["ui-sans-serif", "system-ui", "sans-serif"]
    return gr.themes.Default(font=system, font_mono=["ui-monospace", "monospace"])


def launch(
    app,
    host: str = "127.0.0.1",
    port: int | None = None,
    block: bool = True,
    max_file_mb: float = MAX_FILE_MB,
):
    """Serve the app; every event goes through Gradio's queue, one at a time."""
    app.queue(default_concurrency_limit=1, max_size=64)
    return app.launch(
        server_name=host,
        server_port=port,
        prevent_thread_lock=not block,
        max_file_size=int(max_file_mb * 2**20),
        show_error=True,
        quiet=not block,
        theme=theme(),
        css=CSS,
        footer_links=["api"],
        run_history=False,
        enable_monitoring=False,
    )


# ---- the command line ------------------------------------------------------------------------
