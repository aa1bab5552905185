"""RecBole's ``Config`` with the plugin's properties and model lookup (the RecBole-GNN pattern).

Order of precedence, lowest first: RecBole's own defaults; ``properties/overall.yaml``;
``properties/model/<Model>.yaml``; ``dataset_configs/<dataset>.yaml``; the user's YAML files; the
``config_dict``; ``--key=value`` arguments.
"""

import os
from pathlib import Path

from recbole.config import Config as RecBoleConfig

from recbole_cora.utils import get_model

ROOT = Path(__file__).resolve().parent.parent
PROPERTIES_DIR = ROOT / "properties"
DATASET_CONFIGS_DIR = ROOT / "dataset_configs"


def parse_cmd_args(args):
    """``--key=value`` pairs, as RecBole reads them from ``sys.argv``, from an explicit list."""
    parsed = {}
    for arg in args or []:
        if not arg.startswith("--") or "=" not in arg:
            raise ValueError(
                f"unrecognised argument '{arg}': options are written --key=value (e.g. --epochs=5)."
            )
        key, value = arg[2:].split("=", 1)
        if key in parsed and parsed[key] != value:
            raise ValueError(f"option --{key} is given twice with different values.")
        parsed[key] = value
    return parsed


class Config(RecBoleConfig):
    """RecBole's Config for plugin and RecBole models alike.

    Unlike RecBole's, it never reads ``sys.argv`` by itself (a test runner's flags would leak in):
    pass ``cmd_args`` (a list of ``--key=value`` strings) explicitly; ``run_recbole_cora.py`` does.
    """

    def __init__(self, model=None, dataset=None, config_file_list=None, config_dict=None, cmd_args=None):
        self._cmd_args = list(cmd_args or [])
        self.config_file_list = list(config_file_list or [])  # the CF stage reuses the user's files
        for path in config_file_list or []:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"config file '{path}' (from --config_files) does not exist.")
        super().__init__(model, dataset, config_file_list, config_dict)

    def _load_cmd_line(self):
        return self._convert_config_dict(parse_cmd_args(self._cmd_args))

    def _get_model_and_dataset(self, model, dataset):
        if model is None:
            model = self.external_config_dict.get("model")
        if model is None:
            raise ValueError("no model given: pass --model=NAME or set `model:` in a YAML file.")
        if dataset is None:
            dataset = self.external_config_dict.get("dataset")
        if dataset is None:
            raise ValueError("no dataset given: pass --dataset=NAME or set `dataset:` in a YAML file.")
        name = model if isinstance(model, str) else model.__name__
        # `model_options: {CoRA: {epochs: 1}}`: options for one model only (handy for comparisons); they
        # rank with the file/dict options they came from, under --key=value.
        per_model = (self.external_config_dict.get("model_options") or {}).get(name) or {}
        for key, value in per_model.items():
            if key not in self.cmd_config_dict:
                self.external_config_dict[key] = value
        if isinstance(model, str):
            return model, get_model(model), dataset
        return model.__name__, model, dataset

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        for path in (
            PROPERTIES_DIR / "overall.yaml",
            PROPERTIES_DIR / "model" / f"{model}.yaml",
            DATASET_CONFIGS_DIR / f"{dataset}.yaml",
        ):
            if path.is_file():
                values = self._update_internal_config_dict(str(path)) or {}
                if path.parent == DATASET_CONFIGS_DIR:
                    # RecBole compares these when it reuses a saved dataset.
                    self.parameters["Dataset"] += [k for k in values if k not in self.parameters["Dataset"]]
