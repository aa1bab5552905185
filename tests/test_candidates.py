"""The candidate protocol (task: candidates): fixed lists, RecBole's metrics over them, parsing answers."""

import json

import pytest
import torch
from recbole.data import data_preparation
from recbole.utils import init_seed

from recbole_cora import run_recbole_cora
from recbole_cora.config import Config
from recbole_cora.data.candidates import answer_metrics, candidate_file, candidate_lists, parse_choice, ranking_struct
from recbole_cora.utils import create_dataset

from conftest import QUIET
from helpers import SLICE_OPTIONS, ml100k_slice

SEQUENTIAL = {"hidden_size": 16, "n_layers": 1, "n_heads": 1, "inner_size": 32, "train_batch_size": 256}


@pytest.fixture(scope="module")
def slice_path(tmp_path_factory):
    return ml100k_slice(tmp_path_factory.mktemp("slice"))


def splits(slice_path, stage_root, **extra):
    options = {**QUIET, **SLICE_OPTIONS, "data_path": slice_path, "cf_checkpoint_dir": str(stage_root), **SEQUENTIAL,
               "epochs": 1, "task": "candidates", **extra}
    config = Config("SASRec", "ml100k-slice", config_dict=options)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    return config, dataset, data_preparation(config, dataset)


def test_the_lists_are_drawn_once_hold_the_target_once_and_never_an_item_the_user_has_seen(slice_path, tmp_path):
    config, dataset, (_, valid, test) = splits(slice_path, tmp_path / "stages")
    feat = dataset.inter_feat
    for part in (valid._dataset, test._dataset):
        lists = candidate_lists(config, part)
        assert lists.shape == (len(part), 20)
        users, targets = part.inter_feat["user_id"], part.inter_feat["item_id"]
        for user, target, row in zip(users.tolist(), targets.tolist(), lists.tolist()):
            assert row.count(target) == 1 and len(set(row)) == 20 and 0 not in row
            seen = set(feat["item_id"][feat["user_id"] == user].tolist())
            assert not (set(row) - {target}) & seen  # no other candidate is an item of the user, in any split
        # the target sits anywhere in the list
        assert len({row.index(t) for row, t in zip(lists.tolist(), targets.tolist())}) > 5
    path = candidate_file(config, test._dataset)
    saved = path.read_text()
    # a second run (a fresh dataset, the file found) and a new draw (the file deleted) give the same lists
    config2, _, (_, _, test2) = splits(slice_path, tmp_path / "stages")
    assert torch.equal(candidate_lists(config2, test2._dataset), candidate_lists(config, test._dataset))
    path.unlink()
    config3, _, (_, _, test3) = splits(slice_path, tmp_path / "stages")
    assert torch.equal(candidate_lists(config3, test3._dataset), candidate_lists(config, test._dataset))
    assert path.read_text() == saved
    record = json.loads(saved)
    assert record["split"] == "test" and record["count"] == 20 and record["split_fingerprint"] == test._dataset.fingerprint
    # another seed or count is another file, with other lists
    config4, _, (_, _, test4) = splits(slice_path, tmp_path / "stages", candidate_seed=7)
    assert candidate_file(config4, test4._dataset) != path
    assert not torch.equal(candidate_lists(config4, test4._dataset), candidate_lists(config, test._dataset))


def test_a_list_longer_than_the_items_a_user_has_not_seen_is_refused_by_name(slice_path, tmp_path):
    config, _, (_, _, test) = splits(slice_path, tmp_path / "stages", candidate_count=1600)
    with pytest.raises(ValueError, match="candidate_count 1600 needs 1599 items that user .* lower `candidate_count`"):
        candidate_lists(config, test._dataset)


def test_the_ranking_over_a_list_is_recbole_s_hit_and_ndcg():
    from recbole.config import Config as RecBoleConfig
    from recbole.evaluator import Evaluator

    scores = torch.tensor([[0.1, 0.9, 0.3], [0.5, 0.2, 0.4], [0.0, 0.0, 0.0]])
    positions = torch.tensor([1, 2, 1])  # the target: first place, second place, a tie of all (list order: second)
    config = RecBoleConfig("Pop", "ml-100k", config_dict={"metrics": ["Hit", "NDCG"], "topk": [1, 2], **QUIET})
    result = Evaluator(config).evaluate(ranking_struct(scores, positions, 2))
    assert result["hit@1"] == pytest.approx(1 / 3, abs=1e-4) and result["hit@2"] == pytest.approx(1.0)
    ndcg2 = (1 + 2 * (1 / torch.log2(torch.tensor(3.0)))) / 3
    assert result["ndcg@2"] == pytest.approx(float(ndcg2), abs=1e-4)


@pytest.mark.parametrize("answer, index", [
    (" Toy Story (1995)", 0),                           # one title
    ("Toy Story (1995) or Heat (1995)", -1),            # two titles
    ("I would pick something else", -1),                # none
    ("toy story 2 (1999)", 2),                          # a title another one is a prefix of: only the longer one
    ('"Toy Story 2 (1999)" and Toy Story (1995)', -1),  # both, at separate places
    ("  Heat   (1995)\n", 1),                           # case and spacing aside
])
def test_an_answer_names_one_candidate_or_none(answer, index):
    titles = ["Toy Story (1995)", "Heat (1995)", "Toy Story 2 (1999)"]
    titles_prefix = ["Toy Story", "Heat (1995)", "Toy Story 2 (1999)"]
    assert parse_choice(answer, titles) == index
    if answer == "toy story 2 (1999)":
        assert parse_choice(answer, titles_prefix) == 2  # "Toy Story" is inside "toy story 2": not named on its own


def test_validratio_and_hitratio_follow_llara_and_count_invalid_answers_as_misses():
    metrics = answer_metrics(torch.tensor([0, -1, 3, 2]), torch.tensor([0, 1, 3, 1]))
    assert metrics == {"valid_ratio": 0.75, "hit_ratio@1_valid": 2 / 3, "hit_ratio@1_all": 0.5}


def test_recbole_s_sequential_models_rank_the_lists_and_the_file_serves_every_model(slice_path, tmp_path):
    options = {**QUIET, **SLICE_OPTIONS, "data_path": slice_path, "cf_checkpoint_dir": str(tmp_path / "stages"),
               **SEQUENTIAL, "epochs": 2, "task": "candidates", "eval_rows": 60}
    out = run_recbole_cora("SASRec", "ml100k-slice", config_dict=options)
    result = out["results"]["SASRec"]
    assert result["users"] == 60 and 0 <= result["hit@1"] <= result["hit@5"] <= result["hit@10"] <= 1
    assert set(result) >= {"hit@1", "hit@5", "ndcg@5", "ndcg@10"}
    assert "| SASRec | users | 60 |" in out["table"] and "Hit@1" in out["table"]
    files = sorted((tmp_path / "stages" / "candidates").glob("*.json"))
    assert len(files) == 2 and {"valid", "test"} == {f.name.split("-")[-2] for f in files}
    before = {f.name: f.stat().st_mtime_ns for f in files}
    run_recbole_cora("GRU4Rec", "ml100k-slice", config_dict={**options, "epochs": 1})
    assert {f.name: f.stat().st_mtime_ns for f in (tmp_path / "stages" / "candidates").glob("*.json")} == before


def test_a_labeled_model_ranks_a_list_by_its_yes_probability_for_each_candidate(slice_path, tmp_path, tiny_llm):
    from recbole_cora.model.llm_recommender.tallrec import TALLRec
    from recbole_cora.training import LLMTrainer

    options = {**QUIET, **SLICE_OPTIONS, "data_path": slice_path, "cf_checkpoint_dir": str(tmp_path / "stages"),
               "llm_path": tiny_llm, "task": "candidates", "history_len": 4, "candidate_count": 5, "eval_batch_size": 3}
    config = Config("TALLRec", "ml100k-slice", config_dict=options)
    assert config["train_neg_sample_args"]["sample_num"] == 1 and config["threshold"] is None
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train, _, test = data_preparation(config, dataset)
    batch = train.collate_fn([0, 1, 2])  # a training batch: each next-item row and one sampled negative
    batch = batch[0] if isinstance(batch, tuple) else batch
    assert batch["label"].tolist() == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    assert torch.equal(batch["item_id_list"][:3], batch["item_id_list"][3:])
    torch.manual_seed(0)
    model = TALLRec(config, train._dataset).eval()
    with torch.no_grad():
        for name, p in model.llm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    rows = torch.tensor([0, 3, 7, 8])
    lists = candidate_lists(config, test._dataset)[rows]
    users = test._dataset.inter_feat[rows]
    scores = model.candidate_scores(users, lists)
    for r in range(len(rows)):  # each candidate scored alone as a labeled row, through predict
        row = users[torch.tensor([r] * lists.shape[1])]
        row.interaction["item_id"] = lists[r]
        alone = model.predict(row)
        assert torch.allclose(scores[r], alone, atol=1e-6)
        assert torch.equal(torch.argsort(scores[r], descending=True, stable=True),
                           torch.argsort(alone, descending=True, stable=True))
    trainer = LLMTrainer(config, model)
    result = trainer.evaluate_model(model, test)
    assert result["users"] == len(test._dataset) and 0 <= result["hit@1"] <= result["hit@5"] <= 1


def test_every_prompt_of_a_model_shows_the_same_last_history_len_titles_of_the_id_history(slice_path, tmp_path, tiny_llm):
    """On the candidate task a row carries RecBole's whole ID history (MAX_ITEM_LIST_LENGTH); a prompt shows its last
    ``history_len`` titles, whichever template builds it: CoLLM's second prompt (its placeholders) showed all 20."""
    from transformers import AutoTokenizer

    from recbole_cora.data.prompts import PromptBuilder
    from recbole_cora.model.llm_recommender.collm import SLOTS

    options = {**QUIET, **SLICE_OPTIONS, "data_path": slice_path, "cf_checkpoint_dir": str(tmp_path / "stages"),
               "llm_path": tiny_llm, "task": "candidates", "history_len": 3}
    config = Config("CoLLM", "ml100k-slice", config_dict=options)
    init_seed(config["seed"], config["reproducibility"])
    _, _, test = data_preparation(config, create_dataset(config))
    part = test._dataset
    histories = part.inter_feat[part.history_field]
    row = int((histories > 0).sum(dim=1).argmax())
    history = histories[row].tolist()
    real = [i for i in history if i > 0]
    assert len(real) == 20  # the whole ID history
    tokenizer = AutoTokenizer.from_pretrained(tiny_llm)
    for option, slots in (("prompt_template", ()), ("collm_prompt_template", SLOTS)):
        builder = PromptBuilder(config, part, tokenizer, option=option, slots=slots)
        assert builder._history(history) == real[-3:], option
        text = builder.text(history, real[0])
        assert text.count(builder.separator) >= 2 and builder.titles[real[-1]] in text, option


def test_cora_runs_on_the_lists_beside_its_frozen_lightgcn_and_the_zero_shot_row(slice_path, tmp_path, tiny_llm):
    from recbole_cora.model.encoders import FrozenCFEncoder

    options = {**QUIET, **SLICE_OPTIONS, "data_path": slice_path, "cf_checkpoint_dir": str(tmp_path / "stages"),
               "llm_path": tiny_llm, "task": "candidates", "history_len": 4, "candidate_count": 6, "eval_rows": 10,
               "train_rows_per_epoch": 16, "epochs": 1, "train_batch_size": 8, "eval_batch_size": 12,
               "query_layers": 1, "query_width": 32, "query_heads": 2, "num_queries": 2, "lora_rank": 4,
               "lora_alpha": 8, "cf_config": {"epochs": 2, "embedding_size": 16}}
    out = run_recbole_cora("CoRA", "ml100k-slice", config_dict=options)
    assert set(out["results"]) == {"CoRA", "LightGCN (frozen CF encoder)", "ZeroShot (frozen LLM)"}
    assert all(r["users"] == 10 for r in out["results"].values())
    # the frozen LightGCN ranks a list by <e_u, e_i>, its stage trained on the candidate task's own split
    config = Config("CoRA", "ml100k-slice", config_dict={**options, "cf_stage_dir": None})
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    _, _, test = data_preparation(config, dataset)
    stage = next((tmp_path / "stages").glob("ml100k-slice-LightGCN-*"))
    encoder = FrozenCFEncoder.from_stage(stage, test._dataset)
    lists = candidate_lists(config, test._dataset)[:3]
    users = test._dataset.inter_feat[:3]
    expected = torch.stack([(encoder.user_table[u] * encoder.item_table[row]).sum(-1)
                            for u, row in zip(users["user_id"].tolist(), lists)])
    assert torch.allclose(encoder.candidate_scores(users, lists), expected, atol=1e-6)


def test_recbole_s_din_learns_from_sampled_negatives_and_ranks_a_list_by_its_predict_of_each_pair(slice_path, tmp_path):
    from recbole.model.sequential_recommender import DIN

    from recbole_cora.tasks import candidate_scores

    options = {**QUIET, **SLICE_OPTIONS, "data_path": slice_path, "cf_checkpoint_dir": str(tmp_path / "stages"),
               "task": "candidates", "candidate_count": 6, "embedding_size": 8, "mlp_hidden_size": [16]}
    config = Config("DIN", "ml100k-slice", config_dict=options)  # the labeled task's DIN.yaml trains without negatives
    assert config["train_neg_sample_args"]["sample_num"] == 1
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train, _, test = data_preparation(config, dataset)
    batch = train.collate_fn([0, 1])
    batch = batch[0] if isinstance(batch, tuple) else batch
    assert batch["label"].tolist() == [1.0, 1.0, 0.0, 0.0]  # each next-item row and its sampled negative
    model = DIN(config, train._dataset).eval()
    rows = torch.tensor([0, 5, 9])
    lists = candidate_lists(config, test._dataset)[rows]
    users = test._dataset.inter_feat[rows]
    with torch.no_grad():
        scores = candidate_scores(model, users, lists, batch_size=4)  # 18 pairs, 4 at a time
        for r in range(len(rows)):
            row = users[torch.tensor([r] * lists.shape[1])]
            row.interaction["item_id"] = lists[r]
            assert torch.allclose(scores[r], model.predict(row), atol=1e-6)
    out = run_recbole_cora("DIN", "ml100k-slice", config_dict={**options, "epochs": 1, "eval_rows": 30})
    assert out["results"]["DIN"]["users"] == 30 and 0 <= out["results"]["DIN"]["hit@1"] <= 1


def test_reclora_runs_on_the_lists_with_din_reading_the_whole_id_history(slice_path, tmp_path, tiny_llm):
    from recbole_cora.model.encoders import FrozenDINEncoder
    from recbole_cora.stages import din_stage_config

    options = {**QUIET, **SLICE_OPTIONS, "data_path": slice_path, "cf_checkpoint_dir": str(tmp_path / "stages"),
               "llm_path": tiny_llm, "task": "candidates", "history_len": 4, "prompt_history_len": 6,
               "MAX_ITEM_LIST_LENGTH": 10, "candidate_count": 6, "eval_rows": 10, "train_rows_per_epoch": 16,
               "epochs": 1, "train_batch_size": 8, "eval_batch_size": 12, "num_meta_loras": 2, "gate_hidden_size": 8,
               "lora_rank": 4, "lora_alpha": 8,
               "reclora_encoder_config": {"epochs": 1, "embedding_size": 8, "mlp_hidden_size": [16]}}
    out = run_recbole_cora("RecLoRA", "ml100k-slice", config_dict=options)
    assert set(out["results"]) == {"RecLoRA", "DIN (frozen CF encoder)", "ZeroShot (frozen LLM)"}
    assert all(r["users"] == 10 for r in out["results"].values())
    stage = next((tmp_path / "stages").glob("ml100k-slice-DIN-*"))
    assert json.loads((stage / "result.json").read_text())["valid"]["users"] > 0  # DIN chose its epoch on the lists
    config = Config("RecLoRA", "ml100k-slice", config_dict=options)
    assert din_stage_config(config)["train_neg_sample_args"]["sample_num"] == 1  # DIN learns from sampled negatives
    init_seed(config["seed"], config["reproducibility"])
    _, _, test = data_preparation(config, create_dataset(config))
    encoder = FrozenDINEncoder.from_stage(stage, test._dataset)
    assert encoder.din.max_seq_length == 10  # the ID history (MAX_ITEM_LIST_LENGTH), not the 4 titles a prompt shows
    rows = torch.tensor([1, 2])
    lists = candidate_lists(config, test._dataset)[rows]
    users = test._dataset.inter_feat[rows]
    with torch.no_grad():
        scores = encoder.candidate_scores(users, lists)
        row = users[torch.tensor([0] * lists.shape[1])]
        row.interaction["item_id"] = lists[0]
        assert torch.allclose(scores[0], encoder.predict(row))
