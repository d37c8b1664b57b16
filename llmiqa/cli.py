"""Score image quality the way a careful human rater does: a multimodal LLM rates the whole
image and its main objects against an explicit quality standard, and the ratings are
combined into one score (LLM-IQA / Dog-IQA, training-free).

examples:
  llmiqa score photo.jpg more_photos/ --regions
  llmiqa eval --dataset spaq --root /data/SPAQ --out runs/spaq --preset dogiqa

exit status, the same rule for every command:
  0    everything asked for was done
  1    it finished, but not all of it: an image failed (for reproduce: in any of its
       runs), compare found names that do not match up, check flagged a distortion, or
       an output could not be saved; what did work is printed (and saved where it could)
  2    nothing was done: a problem with the whole run (an option, a file, a model, the
       store, the install), in one line before any work
  3    an internal error (a bug: please report it); 130: interrupted (Ctrl-C)
"""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import signal
import sys
from typing import NoReturn

from llmiqa import __version__
from llmiqa.commands import COMMANDS, arguments


class Parser(argparse.ArgumentParser):
    """An argument error first, in one line, then where the options are (argparse's own
    prints the whole usage, tens of lines, before the error)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n(all options: {self.prog} --help)\n")


def unknown_options(command: argparse.ArgumentParser, extras: list[str]) -> str:
    """The one line for arguments a command does not take, with the closest it does."""
    known = [flag for action in command._actions for flag in action.option_strings]
    said = []
    for extra in extras:
        flag = extra.split("=", 1)[0]
        close = difflib.get_close_matches(flag, known, n=1) if flag.startswith("-") else []
        said.append(f"{extra} (did you mean {close[0]}?)" if close else extra)
    return f"unrecognized arguments: {' '.join(said)}"


class Stderr(logging.StreamHandler):
    """Logger "llmiqa" on whatever sys.stderr is when a line is written (a test, or a
    second main() in one process, may have replaced it since)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("llmiqa: %(message)s"))

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _) -> None:
        pass


def quiet_libraries() -> None:
    """The library's lines (logger "llmiqa": one per model loaded, instead of transformers'
    bars; warnings) on stderr, once however often main() runs in a process."""
    log = logging.getLogger("llmiqa")
    if not any(isinstance(handler, Stderr) for handler in log.handlers):
        log.addHandler(Stderr())
    log.setLevel(logging.INFO)
    log.propagate = False


def parser() -> argparse.ArgumentParser:
    """The top level and every command, each added by its own module (llmiqa.commands)."""
    top = Parser(
        prog="llmiqa", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    top.add_argument("--version", action="version", version=f"llmiqa {__version__}")
    commands = top.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=Parser
    )
    for command in COMMANDS:
        command.add_command(commands)
    top.command_parsers = commands.choices  # name -> its parser, for its own error lines
    return top


def main(argv: list[str] | None = None) -> int:
    top = parser()
    args, extras = top.parse_known_args(argv)
    if extras:  # the command's own usage line, not the top level's
        command = top.command_parsers[args.command]
        command.error(unknown_options(command, extras))
    quiet_libraries()
    from llmiqa.environment import broken_dependency
    from llmiqa.errors import Interrupted, UsageError
    from llmiqa.inputs.datasets import DatasetError
    from llmiqa.inputs.images import ImageError

    try:
        code = args.handler(args)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # finished: a late Ctrl-C changes nothing
        return code
    except KeyboardInterrupt as error:
        folder = error.args[0] if isinstance(error, Interrupted) else (
            "a run folder still holds its previous outputs")  # fmt: skip
        print(
            f"llmiqa: interrupted; everything rated so far is in the store, and {folder}",
            file=sys.stderr,
        )
        from llmiqa.background import working

        if working():  # a normal exit could abort inside torch (see llmiqa.background)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)
        return 130
    except (UsageError, arguments.CommandLineError, DatasetError, ImageError, OSError) as error:
        print(f"llmiqa: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # a bug: still one line, unless asked for the traceback
        if os.environ.get("LLMIQA_DEBUG"):
            raise
        if broken := broken_dependency(error):  # the install, not llmiqa
            print(f"llmiqa: {broken}", file=sys.stderr)
            return 2
        print(
            f"llmiqa: internal error ({type(error).__name__}: {error}); rerun with "
            "LLMIQA_DEBUG=1 for the traceback and please report it",
            file=sys.stderr,
        )
        return 3


if __name__ == "__main__":
    sys.exit(main())
