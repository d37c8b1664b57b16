"""A setting is declared once, on its dataclass field: help, choices and default."""

from dataclasses import dataclass, field

from llmiqa.settings import declared, default_of, option


@dataclass(frozen=True)
class Example:
    plain: int = field(default=3, metadata=option("a number"))
    listed: tuple = field(default_factory=lambda: ("a", "b"), metadata=option("some names"))
    chosen: str = field(default="x", metadata=option("one of", choices=["x", "y"]))
    internal: float = 0.5  # no option metadata: not a user-facing option


def test_only_fields_with_option_metadata_are_declared_in_order():
    assert [f.name for f in declared(Example)] == ["plain", "listed", "chosen"]
    chosen = declared(Example)[2]
    assert chosen.metadata["choices"] == ("x", "y") and chosen.metadata["help"] == "one of"


def test_defaults_come_from_the_field_or_its_factory():
    assert [default_of(f) for f in declared(Example)] == [3, ("a", "b"), "x"]
