import sys

import pytest
import yaml

from recbole_cora.config import Config, parse_cmd_args
from recbole_cora.utils import get_model, get_trainer

from conftest import QUIET


def test_plugin_properties_and_dataset_config_are_loaded_under_user_files(tmp_path):
    config = Config("LightGCN", "ml-100k", config_dict=QUIET)
    assert config["eval_args"]["mode"] == {"valid": "labeled", "test": "labeled"}
    assert config["metrics"] == ["AUC", "UAUC", "LogLoss"]
    assert config["threshold"] == {"rating": 4}  # dataset_configs/ml-100k.yaml
    assert config["text_fields"] == ["movie_title", "release_year"]
    assert config["embedding_size"] == 64  # RecBole's own LightGCN.yaml still applies

    user_file = tmp_path / "mine.yaml"
    user_file.write_text(yaml.safe_dump({"threshold": {"rating": 5}, "embedding_size": 32}))
    config = Config("LightGCN", "ml-100k", config_file_list=[str(user_file)], config_dict=QUIET)
    assert config["threshold"] == {"rating": 5} and config["embedding_size"] == 32


def test_ml1m_config_is_the_collm_protocol():
    config = Config("FM", "ml-1m", config_dict=QUIET)
    assert config["eval_args"]["split"] == {"TB": ["2002-04-01", "2002-09-01"]}
    assert config["time_window"] == ["2001-06-01", "2003-02-01"]


def test_cmd_args_override_and_pytest_flags_are_never_read(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["pytest", "--epochs=999", "--tb=short"])
    config = Config("LightGCN", "ml-100k", config_dict=QUIET, cmd_args=["--learning_rate=0.05"])
    assert config["epochs"] != 999 and config["tb"] is None
    assert config["learning_rate"] == 0.05
    assert parse_cmd_args(["--a=1", "--b=x=y"]) == {"a": "1", "b": "x=y"}
    assert parse_cmd_args(["--epochs", "5", "--eval_rows=9", "--learning_rate", "-1e-3"]) == {
        "epochs": "5", "eval_rows": "9", "learning_rate": "-1e-3"}  # --key value too (a new user's first try)
    with pytest.raises(ValueError, match="--key=value or --key value"):
        parse_cmd_args(["--epochs", "--eval_rows=9"])
    with pytest.raises(ValueError, match="--key=value"):
        parse_cmd_args(["epochs=5"])


def test_unknown_model_and_missing_config_file_say_what_to_do():
    with pytest.raises(ValueError, match="unknown model 'LightGNC'.*case-sensitive"):
        get_model("LightGNC")
    with pytest.raises(FileNotFoundError, match="nope.yaml.*--config_files"):
        Config("LightGCN", "ml-100k", config_file_list=["nope.yaml"], config_dict=QUIET)


def test_lookup_falls_back_to_recbole_and_mixes_in_labeled_evaluation():
    from recbole.model.general_recommender import LightGCN
    from recbole.trainer import Trainer

    from recbole_cora.tasks import LabeledEvaluationMixin

    assert get_model("LightGCN") is LightGCN
    config = Config("LightGCN", "ml-100k", config_dict=QUIET)
    trainer_class = get_trainer(config["MODEL_TYPE"], "LightGCN", config)
    assert issubclass(trainer_class, Trainer) and issubclass(trainer_class, LabeledEvaluationMixin)
    assert get_trainer(config["MODEL_TYPE"], "LightGCN", config) is trainer_class  # made once


def test_model_names_are_case_sensitive_with_a_hint():
    with pytest.raises(ValueError, match=r"did you mean \['LightGCN'\]"):
        get_model("lightgcn")


def test_model_options_apply_to_their_model_only():
    options = {**QUIET, "model_options": {"CoRA": {"epochs": 1}, "LightGCN": {"embedding_size": 8}}}
    assert Config("CoRA", "ml-100k", config_dict=options)["epochs"] == 1
    light = Config("LightGCN", "ml-100k", config_dict=options)
    assert light["epochs"] == 300 and light["embedding_size"] == 8
    assert Config("LightGCN", "ml-100k", config_dict=options, cmd_args=["--embedding_size=4"])["embedding_size"] == 4



def test_model_options_take_the_names_compare_takes_and_refuse_a_name_of_no_model():
    # `model_options: {MF: {epochs: 20}}` beside `--compare MF,CoRA` used to be ignored, silently (MF runs as BPR)
    options = {**QUIET, "model_options": {"MF": {"epochs": 20}, "CoRA": {"epochs": 1}}}
    assert Config("BPR", "ml-100k", config_dict=options)["epochs"] == 20
    assert Config("MF", "ml-100k", config_dict=options)["epochs"] == 20
    with pytest.raises(ValueError, match=r"model_options has an entry for 'Cora', which is no model .*did you mean \['CoRA'\]"):
        Config("BPR", "ml-100k", config_dict={**QUIET, "model_options": {"Cora": {"epochs": 1}}})

def test_an_option_with_a_fixed_set_of_values_is_checked_once_for_every_model():
    # a typo in length_bucketing used to do nothing, silently
    with pytest.raises(ValueError, match=r"length_bucketing 'train' \(use one of none, eval, train_and_eval\)"):
        Config("LightGCN", "ml-100k", config_dict={**QUIET, "length_bucketing": "train"})
    with pytest.raises(ValueError, match=r"answer_score 'yes'.*history_tie_order 'time'"):
        Config("CoRA", "ml-100k", config_dict={**QUIET, "answer_score": "yes", "history_tie_order": "time"})


def test_a_misspelled_option_is_named_with_the_option_it_resembles(caplog):
    import logging

    from recbole_cora.checks import check_run, unknown_options

    config = Config("LightGCN", "ml-100k", config_dict={"state": "ERROR", "learning_rat": 0.01, "n_layers": 2},
                    cmd_args=["--embeding_size=32"], check=False)
    assert unknown_options(config) == [("learning_rat", "config_dict", "learning_rate"),
                                       ("embeding_size", "the command line", "embedding_size")]
    with caplog.at_level(logging.WARNING):
        check_run(config, get_model("LightGCN"))
    assert "option 'learning_rat' (from config_dict) is no option of RecBole or recbole-cora: it is ignored; did you " \
           "mean 'learning_rate'?" in caplog.text
    # every option the plugin's files, RecBole's and the examples use is known
    assert unknown_options(Config("CoRA", "ml-100k", config_dict={"state": "ERROR", "cf_stage_dir": None,
                                                                  "world_size": 1}, check=False)) == []
