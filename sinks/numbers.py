"""Moved to ``switchboard.numbers`` (the STT processor redacts too, and processors never import
sinks); kept so the sink's modules and older imports keep working."""

from switchboard.numbers import (  # noqa: F401 - the names the redactor and its tests use
    GROUP_JOINERS,
    MULTIPLIERS,
    NUMBER_WORDS,
    ORDINALS,
    RUN_WORDS,
    TEENS,
    TENS,
    UNITS,
    Piece,
    Run,
    find_runs,
    luhn_ok,
    words_to_int,
)
