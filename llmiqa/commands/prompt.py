"""`llmiqa prompt`: the exact text a model reads before its answer."""

from __future__ import annotations

import argparse

from llmiqa.commands import arguments
from llmiqa.scoring import knobs


def add_command(commands: argparse._SubParsersAction) -> None:
    prompt = commands.add_parser("prompt", help="print the exact text a model reads")
    prompt.add_argument(
        "--view", choices=("whole", "region", "both"), default="both",
        help="the whole image's prompt, a region's, or both (default: both)",
    )  # fmt: skip
    arguments.add_arguments(
        prompt, only=("model", "kind", "levels", "wording", "backend", "server")
    )
    prompt.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from llmiqa.raters.spec import RaterSpec

    options = arguments.from_arguments(args)
    standard = knobs.build(knobs.Standard, options)
    runtime = knobs.build(knobs.Runtime, options)
    shown = []  # every model's text first: a model that cannot be had prints nothing
    for model in options["model"]:
        spec = RaterSpec.create(model, runtime, knobs.backend_options(options))
        for view in ("whole", "region") if args.view == "both" else (args.view,):
            prompt = standard.prompt(view)
            shown.append(f"# {model}, {standard}, {view} view: what the model reads before "
                         "its answer")  # fmt: skip
            rendered = spec.render(prompt)
            if rendered is None:  # a server applies its chat template to these turns
                rendered = (f"# (the server applies its chat template)\nsystem: {prompt.system}"
                            f"\nuser: {prompt.user}")  # fmt: skip
            shown.append(rendered)
    print("\n".join(shown))
    return 0
