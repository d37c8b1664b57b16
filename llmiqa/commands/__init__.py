"""The commands, one module each: `add_command(subparsers)` declares its flags and sets
`run(args) -> exit status` as its handler. llmiqa.cli adds them in this order (the order
`llmiqa --help` lists them) and turns every error into one line."""

from llmiqa.commands import (
    ablate,
    bound,
    check,
    compare,
    demo,
    evaluate,
    prompt,
    reproduce,
    score,
    segment,
    tiny,
)

COMMANDS = (score, segment, prompt, evaluate, bound, ablate, reproduce, compare, tiny, check, demo)
