"""`llmiqa demo`: the web page (llmiqa.integrations.demo), served with Gradio."""

from __future__ import annotations

import argparse
import sys

from llmiqa.commands import arguments
from llmiqa.errors import UsageError, one_line
from llmiqa.integrations.demo import INSTALL_HINT, MAX_FILE_MB, Engine, build_app, launch


def add_command(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser("demo", help="a web page to drop images on and see their scores")
    demo.add_argument(
        "--host", default="127.0.0.1", help="address to serve on (0.0.0.0: all; default: 127.0.0.1)"
    )
    demo.add_argument("--port", type=int, default=7860, help="port to serve on (default: 7860)")
    arguments.add_store(demo)
    demo.add_argument(
        "--max-file-mb",
        type=float,
        default=MAX_FILE_MB,
        help=f"largest upload accepted, in MB (default: {MAX_FILE_MB})",
    )
    arguments.add_arguments(demo)
    demo.set_defaults(handler=run)


def run(args) -> int:
    try:
        import gradio  # noqa: F401
    except ImportError:
        print(INSTALL_HINT, file=sys.stderr)
        return 2
    engine = Engine(arguments.from_arguments(args), args.store, args.max_file_mb)
    try:
        app = build_app(engine)
        print(f"llmiqa demo on http://{args.host}:{args.port} (Ctrl-C stops it)", flush=True)
        launch(app, args.host, args.port, block=True, max_file_mb=args.max_file_mb)
    except OSError as error:
        raise UsageError(f"cannot serve on {args.host}:{args.port} ({one_line(error)})") from None
    finally:
        engine.close()
    return 0
