"""The command classes every mlptrain command and group is built with (see app.py).

They change what a person reads, never what a command does:
- help without type tags: an option shows its metavar, its choices (a|b|c) or, for a flag,
  nothing; an argument shows its name alone (RUN, CONFIG, FILE);
- usage errors in plain words: no "Value error, ..." or "Input should be ..." from the
  validation library, `--set key value` answered with `--set key=value`, and an unknown
  option that is a config key (`--epochs 3`) answered with the --set that sets it;
- an unknown command answered with the command that does it (`run`: fit or runs).
"""

from __future__ import annotations

import inspect
import re
from dataclasses import fields

import typer
from typer.core import TyperCommand, TyperGroup

from mlptrain.config import SECTIONS

# click's UsageError, wherever this Typer keeps its click (BadParameter derives from it)
UsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")

# commands people type from other tools -> what to say
COMMAND_HINTS = {
    "run": "to train a config, `mlptrain fit CONFIG`; to list runs, `mlptrain runs`",
    "list": "to list runs, `mlptrain runs`",
    "ls": "to list runs, `mlptrain runs`",
    "show": "`mlptrain runs show RUN`",
    "evaluate": "`mlptrain eval RUN`",
    "test": "`mlptrain eval RUN` scores a run on its test split",
    "score": "`mlptrain eval RUN`",
    "resume": "`mlptrain fit --resume RUN`",
    "init": "`mlptrain config init` writes a config with every default",
    "check": "`mlptrain config check CONFIG`",
    "validate": "`mlptrain config check CONFIG`",
}

# pydantic's phrasing of a bad option value -> ours
_PLAIN = [(re.compile(r"Value error, "), ""),
          (re.compile(r"Input should be greater than or equal to (\S+)"), r"expected a value >= \1"),
          (re.compile(r"Input should be less than or equal to (\S+)"), r"expected a value <= \1"),
          (re.compile(r"Input should be a valid integer.*"), "expected an integer"),
          (re.compile(r"Input should be a valid number.*"), "expected a number"),
          (re.compile(r"Input should be "), "expected ")]


def plain(message: str) -> str:
    for pattern, replacement in _PLAIN:
        message = pattern.sub(replacement, message)
    return message


def _config_keys(name: str) -> list[str]:
    """The dotted config keys a bare option name could mean: --batch-size -> train.batch_size."""
    key = name.lstrip("-").replace("-", "_")
    return [f"{section}.{key}" for section, cls in SECTIONS.items()
            if key in {f.name for f in fields(cls)}]


def _takes(command, option: str) -> bool:
    return any(option in getattr(p, "opts", ()) for p in command.params)


class _Plain:
    """What commands and groups share: tidy help, plain usage errors."""

    def parse_args(self, ctx, args):
        given = list(args)  # click's parser consumes the list
        if _takes(self, "--set"):
            _check_key_values(ctx, given)
        try:
            return super().parse_args(ctx, args)
        except UsageError as exc:
            exc.message = plain(exc.message)
            unknown = re.match(r"No such option: (\S+)", exc.message)
            if unknown and _takes(self, "--set"):
                exc.message = _set_hint(unknown.group(1), given) or exc.message
            raise

    def collect_usage_pieces(self, ctx):
        # this Typer writes a required argument as {RUN}; the help and the README say RUN
        return [re.sub(r"^\{(.*)\}$", r"\1", piece)
                for piece in super().collect_usage_pieces(ctx)]

    def format_help(self, ctx, formatter):
        for param in self.get_params(ctx):  # with --help, which click adds
            _tidy(param)
        return super().format_help(ctx, formatter)


def _check_key_values(ctx, args: list[str]) -> None:
    """`--set train.epochs 3` would fail as an extra argument: say where the `=` goes."""
    for i, token in enumerate(args):
        if token == "--":
            return
        following = args[i + 1:i + 3]
        if token in ("--set", "-s", "--grid", "-g") and len(following) == 2 \
                and "=" not in following[0] and not any(t.startswith("-") for t in following):
            key, value = following
            raise UsageError(f"{token} {key}: write the key and its value joined by `=`, as "
                             f"{token} {key}={value}", ctx=ctx)


def _set_hint(option: str, args: list[str]) -> str:
    """For `--epochs 3`: 'No such option: --epochs; ... set it with --set train.epochs=3'."""
    name, _, value = option.partition("=")
    keys = _config_keys(name)
    if not keys:
        return ""
    for i, token in enumerate(args):
        if token.startswith(f"{name}="):  # click names the option without its value
            value = token.partition("=")[2]
        elif token == name and i + 1 < len(args) and not args[i + 1].startswith("-"):
            value = args[i + 1]
    sets = " or ".join(f"--set {key}={value or 'VALUE'}" for key in keys)
    return f"No such option: {name}. Config keys are set with --set: {sets}"


def _tidy(param) -> None:
    """Help shows a value's metavar or choices, never a type tag such as <bool> or <str>."""
    if not hasattr(param, "display_type_rich"):
        return  # a Typer that renders types another way
    if param.param_type_name == "argument":
        shown = None  # its name (RUN, CONFIG) is shown already
    elif getattr(param, "is_flag", False) or getattr(param, "count", False):
        shown = None
    elif param.metavar:
        shown = param.metavar
    else:
        descriptor = getattr(param, "type_descriptor", None)
        choices = getattr(descriptor, "choices", None)
        shown = "|".join(str(getattr(c, "value", c)) for c in choices) if choices \
            else param.name.upper()
    param.display_type_rich = lambda ctx, shown=shown: shown


def reflow(docstring: str | None) -> str | None:
    """A docstring's paragraphs, each on one line: help wraps them to the terminal's width."""
    if not docstring:
        return docstring
    return "\n\n".join(" ".join(p.split()) for p in inspect.cleandoc(docstring).split("\n\n"))


class Command(_Plain, TyperCommand):
    pass


class Group(_Plain, TyperGroup):
    def resolve_command(self, ctx, args):
        try:
            return super().resolve_command(ctx, args)
        except UsageError as exc:
            hint = COMMAND_HINTS.get(args[0]) if args else None
            if hint and exc.message.startswith("No such command"):
                exc.message = f"No such command {args[0]!r}: {hint}."
            raise
