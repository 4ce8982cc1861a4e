"""Help pages without type noise: no `<bool>` after a flag, no `<list[str]>` after a repeatable option.

Typer's rich help prints every option's Python type. A flag takes no value, so `--watch
<bool>` reads as if it wanted one; `--metadata <list[str]>` is one value given again and
again. The root command's group (`QuietTypesGroup`) gives each command it hands out a
metavar that says what to type, once, for the whole tree, so every command stays plain
Typer.
"""

from __future__ import annotations

import typing
from typing import Any

from typer.core import TyperGroup


def _metavar(param: Any) -> str | None:
    """What a person types after the option; None keeps Typer's own label."""
    if getattr(param, "param_type_name", "") != "option":
        return None
    if getattr(param, "is_flag", False):
        return ""
    return _element_label(param) if getattr(param, "multiple", False) else None


def _element_label(param: Any) -> str:
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    element = typing.get_args(annotation)[0] if typing.get_args(annotation) else str
    return f"<{getattr(element, '__name__', 'str')}>"


def _quiet_help_option(command: Any) -> None:
    """`--help` is made anew by click when help is shown; quiet it as it is made."""
    if getattr(command, "_aplserve_quiet_help", False):
        return
    make = command.get_help_option

    def get_help_option(ctx: Any) -> Any:
        option = make(ctx)
        if option is not None and option.metavar is None:
            option.metavar = ""
        return option

    command.get_help_option = get_help_option
    command._aplserve_quiet_help = True


def quiet_types(command: Any) -> None:
    """Set the plain labels on every parameter of `command` and, for a group, of its commands.

    Duck-typed: Typer's commands and groups derive from its own vendored click. An argument
    that takes several values reads `inputs... <str>` (Typer's argument label ignores a
    metavar, so the instance's label method is replaced).
    """
    for param in command.params:
        metavar = _metavar(param)
        if metavar is not None and param.metavar is None:
            param.metavar = metavar
        if getattr(param, "param_type_name", "") == "argument" and param.nargs != 1:
            label = _element_label(param)
            param.display_type_rich = lambda ctx, label=label: label
    _quiet_help_option(command)
    for sub in getattr(command, "commands", {}).values():
        quiet_types(sub)


class QuietTypesGroup(TyperGroup):
    """The root group: its own options and every command under it get plain metavars."""

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            quiet_types(command)
        return command

    def format_help(self, ctx: Any, formatter: Any) -> None:
        quiet_types(self)
        super().format_help(ctx, formatter)
