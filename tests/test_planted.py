"""Planted-signal tests: on a small synthetic dataset whose answer is carried by what the model reads (tests/planted.py),
each LLM model, trained by the real pipeline on the tiny LLM, beats its untrained self (the same model and seed, scored
before any step) and a random order by a stated margin. They guard "it learns" as the equality tests guard the math.

Which signal each model gets follows what it reads: TALLRec reads text only (the item's year decides the label); CoRA,
CoLLM and RecLoRA read a frozen CF encoder (the label is whether the user's and the item's groups match, the text says
nothing); Laser and RSLLM read a sequential encoder and the titles (the next item follows the last one on a cycle).
"""

import pytest
from recbole.data import data_preparation
from recbole.utils import init_seed

import planted
from conftest import QUIET
from recbole_cora import run_recbole_cora
from recbole_cora.config import Config
from recbole_cora.stages import prepare_stages
from recbole_cora.utils import create_dataset, get_model, get_trainer


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    planted.labeled(root, "cf")
    planted.labeled(root, "cf_item")
    planted.labeled(root, "text")
    planted.next_item(root)
    return str(root)


def untrained_result(model_name, dataset, options):
    """The test result of the model as the pipeline builds it (same seed), before any training step."""
    config = Config(model_name, dataset, config_dict=options)
    init_seed(config["seed"], config["reproducibility"])
    data = create_dataset(config)
    train, valid, test = data_preparation(config, data)
    model_class = get_model(model_name)
    prepare_stages(config, data, model_class)  # found: the trained run made them
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = model_class(config, train._dataset)
    model.set_stage(model.training_stages()[0]) if hasattr(model, "set_stage") else None
    trainer = get_trainer(config["MODEL_TYPE"], model_name, config)(config, model)
    return trainer.evaluate(test, load_best_model=False)


def trained_and_untrained(model_name, dataset, data_root, stage_root, **extra):
    options = {**QUIET, "data_path": data_root, "cf_checkpoint_dir": stage_root, "zero_shot_row": False, **extra}
    out = run_recbole_cora(model_name, dataset, config_dict=options, saved=False)
    untrained = untrained_result(model_name, dataset, options)
    metric = "auc" if "auc" in untrained else "ndcg@10"
    rows = ", ".join(f"{name} {result[metric]:.4f}" for name, result in out["results"].items())
    print(f"\nplanted {dataset}: {metric} untrained {model_name} {untrained[metric]:.4f}; trained: {rows}"
          + (f" (gate {out['results'][model_name]['residual_gate']})" if "residual_gate" in out["results"][model_name] else ""))
    return out["results"][model_name], untrained, out["results"]


LABELED = {**planted.LABELED_OPTIONS, "cf_config": {"epochs": 40, "embedding_size": 16}}
SMALL_LORA = {"lora_rank": 4, "lora_alpha": 8, "lora_dropout": 0.0, "lora_target_modules": ["q_proj", "v_proj"]}


def test_cora_learns_a_label_its_cf_encoder_carries(tiny_llm, data_root, tmp_path):
    options = {**LABELED, "llm_path": tiny_llm, "epochs": 1, "train_batch_size": 16, "learning_rate": 3e-3,
               "query_layers": 1, "query_width": 32, "query_heads": 2, "num_queries": 2, "lora_rank": 4,
               "lora_alpha": 8, "eval_step": 0}
    trained, untrained, _ = trained_and_untrained("CoRA", "planted-cf", data_root, str(tmp_path), **options)
    assert trained["auc"] > 0.8 and trained["auc"] > untrained["auc"] + 0.2, (trained, untrained)


def test_tallrec_learns_a_label_the_item_text_carries(tiny_llm, data_root, tmp_path):
    options = {**LABELED, **SMALL_LORA, "llm_path": tiny_llm, "epochs": 1, "train_batch_size": 16,
               "learning_rate": 3e-3, "eval_step": 0}
    trained, untrained, _ = trained_and_untrained("TALLRec", "planted-text", data_root, str(tmp_path), **options)
    assert trained["auc"] > 0.8 and trained["auc"] > untrained["auc"] + 0.2, (trained, untrained)


def test_tallrec_s_trainable_answer_head_learns_at_the_paper_s_learning_rate_what_the_frozen_head_does_not(
        tiny_llm, data_root, tmp_path):
    # TALLRec's LoRA at 1e-4 (its paper's rate) barely moves the Yes - No read-out in a few epochs (ML-1M: the label
    # rate only); the answer head on the standardised hidden state, at its own 1e-3, learns the text's signal
    options = {**LABELED, **SMALL_LORA, "llm_path": tiny_llm, "epochs": 5, "train_batch_size": 16,
               "learning_rate": 1e-4, "eval_step": 0}
    ours, untrained, _ = trained_and_untrained("TALLRec", "planted-text", data_root, str(tmp_path), **options)
    paper, _, _ = trained_and_untrained("TALLRec", "planted-text", data_root, str(tmp_path), answer_head="frozen",
                                        **options)
    assert ours["auc"] > 0.85 and ours["auc"] > paper["auc"] + 0.15 and ours["auc"] > untrained["auc"] + 0.25, (
        ours, paper, untrained)


def test_collm_learns_a_label_its_cf_item_embedding_carries(tiny_llm, data_root, tmp_path):
    # CoLLM maps e_u and e_i to two separate tokens: whether they match must then be computed by the frozen LLM, which
    # a random tiny LLM cannot do (on planted-cf step 2 stays at loss 0.693 and AUC 0.43 - 0.47 for 3 epochs, with or
    # without LoRA training beside the mapping). An answer carried by the item's CF embedding alone is learnt.
    options = {**LABELED, **SMALL_LORA, "llm_path": tiny_llm, "epochs": 1, "train_batch_size": 16,
               "stage1_learning_rate": 3e-3, "stage2_learning_rate": 3e-3, "stage2_epochs": 3, "eval_step": 0}
    trained, untrained, _ = trained_and_untrained("CoLLM", "planted-cf-item", data_root, str(tmp_path), **options)
    assert trained["auc"] > 0.65 and trained["auc"] > untrained["auc"] + 0.2, (trained, untrained)


def test_reclora_learns_a_label_its_din_carries(tiny_llm, data_root, tmp_path):
    options = {**LABELED, "llm_path": tiny_llm, "epochs": 1, "train_batch_size": 16, "learning_rate": 3e-3,
               "history_len": 8, "prompt_history_len": 3, "num_meta_loras": 4, "gate_hidden_size": 16,
               "lora_rank": 4, "lora_alpha": 8, "eval_step": 0,
               "reclora_encoder_config": {"epochs": 20, "embedding_size": 8, "mlp_hidden_size": [32, 16],
                                          "train_batch_size": 128}}
    trained, untrained, _ = trained_and_untrained("RecLoRA", "planted-cf", data_root, str(tmp_path), **options)
    assert trained["auc"] > 0.8 and trained["auc"] > untrained["auc"] + 0.2, (trained, untrained)


NEXT = {**planted.OPTIONS, "MAX_ITEM_LIST_LENGTH": 11, "eval_step": 0}


def test_laser_learns_a_next_item_its_sequential_encoder_and_titles_carry(tiny_llm, data_root, tmp_path):
    options = {**NEXT, "task": "next_item", "llm_path": tiny_llm, "mformer_layers": 1, "mformer_width": 32,
               "mformer_heads": 2, "num_queries": 4, "num_experts": 4, "user_vector_size": 32, "history_len": 5,
               "train_batch_size": 16, "learning_rate": 3e-3, "stage1_epochs": 2, "stage2_epochs": 1,
               "encoder_residual": False,  # the paper's score, the cosine alone
               "sequential_encoder_config": {"epochs": 20, "hidden_size": 16, "n_layers": 1, "n_heads": 1,
                                             "inner_size": 32, "train_batch_size": 256}}
    trained, untrained, _ = trained_and_untrained("Laser", "planted-next", data_root, str(tmp_path), **options)
    assert trained["ndcg@10"] > untrained["ndcg@10"] + 0.1, (trained, untrained)


RSLLM_PLANTED = {**NEXT, "task": "candidates", "candidate_count": 6, "history_len": 4, "train_batch_size": 8,
                 "eval_batch_size": 8, "learning_rate": 3e-3, "stage1_epochs": 1, "stage2_epochs": 2,
                 "generate_answers": False, **SMALL_LORA,
                 "sequential_encoder_config": {"epochs": 20, "hidden_size": 16, "n_layers": 1, "n_heads": 1,
                                               "inner_size": 32, "train_batch_size": 256}}


@pytest.mark.parametrize("hidden_norm", ["none", "standardize"])
def test_rsllm_learns_a_next_item_its_sequential_encoder_carries(tiny_llm, data_root, tmp_path, hidden_norm):
    # the user's SASRec state as the prompt's last token, the user-item cosine as the score (both ours); with
    # hidden_norm: standardize the cosine reads standardised states (ours)
    options = {**RSLLM_PLANTED, "llm_path": tiny_llm, "user_token": True, "candidate_score": "user_item",
               "encoder_residual": False,  # its own score: the fused one would start at SASRec's 0.99
               "hidden_norm": hidden_norm}
    trained, untrained, _ = trained_and_untrained("RSLLM", "planted-next", data_root, str(tmp_path), **options)
    assert trained["ndcg@10"] > 0.9 and trained["ndcg@10"] > untrained["ndcg@10"] + 0.3, (trained, untrained)


@pytest.mark.xfail(strict=True, reason=(
    "The paper's form (item ID tokens only, the title's likelihood as the score) does not learn the planted cycle at "
    "this budget: NDCG@10 0.526 untrained, 0.546 trained (a random order of 6: 0.55; its SASRec 0.99). Over 100 steps "
    "on the same 16 rows its answer loss goes from 6.91 to 6.66 (ln 1024 = 6.93)."))
def test_rsllm_in_the_paper_s_form_learns_a_next_item_its_sequential_encoder_carries(tiny_llm, data_root, tmp_path):
    options = {**RSLLM_PLANTED, "llm_path": tiny_llm, "user_token": False, "candidate_score": "sum",
               "encoder_residual": False, "user_item_head_size": None}
    trained, untrained, _ = trained_and_untrained("RSLLM", "planted-next", data_root, str(tmp_path), **options)
    assert trained["ndcg@10"] > untrained["ndcg@10"] + 0.1, (trained, untrained)



def test_laser_with_the_encoder_residual_starts_as_its_encoder_and_learns_beyond_it(tiny_llm, data_root, tmp_path):
    # ours: the frozen BERT4Rec's own score + a gate (fitted on valid) times Laser's cosine
    options = {**NEXT, "task": "next_item", "llm_path": tiny_llm, "mformer_layers": 1, "mformer_width": 32,
               "mformer_heads": 2, "num_queries": 4, "num_experts": 4, "user_vector_size": 32, "history_len": 5,
               "train_batch_size": 16, "learning_rate": 3e-3, "stage1_epochs": 2, "stage2_epochs": 1,
               "encoder_residual": True,
               "sequential_encoder_config": {"epochs": 20, "hidden_size": 16, "n_layers": 1, "n_heads": 1,
                                             "inner_size": 32, "train_batch_size": 256}}
    trained, untrained, rows = trained_and_untrained("Laser", "planted-next", data_root, str(tmp_path), **options)
    encoder = rows["BERT4Rec (frozen sequential encoder)"]
    assert set(rows) == {"Laser", "Laser (LLM score alone)", "BERT4Rec (frozen sequential encoder)"}
    assert untrained["ndcg@10"] == pytest.approx(encoder["ndcg@10"], abs=1e-6), (untrained, encoder)
    assert trained["ndcg@10"] > encoder["ndcg@10"] + 0.05, (trained, encoder)


@pytest.mark.parametrize("encoder_epochs, margin", [(1, 0.03), (3, 0.0)])
def test_rsllm_with_the_encoder_residual_starts_as_its_encoder_and_learns_beyond_it(tiny_llm, data_root, tmp_path,
                                                                                   encoder_epochs, margin):
    # a weak SASRec (1 epoch: NDCG@10 0.60) leaves the LLM something to add; a stronger one (3 epochs: 0.79) little,
    # and the fitted gate must then keep the lists at least the encoder's (trained through the fused score on the
    # training rows, the gate over-trusted the LLM there and fell to 0.70)
    options = {**RSLLM_PLANTED, "llm_path": tiny_llm, "user_token": True, "candidate_score": "user_item",
               "encoder_residual": True}
    options["sequential_encoder_config"] = {**options["sequential_encoder_config"], "epochs": encoder_epochs}
    trained, untrained, rows = trained_and_untrained("RSLLM", "planted-next", data_root, str(tmp_path), **options)
    encoder = rows["SASRec (frozen sequential encoder)"]
    assert untrained["ndcg@10"] == pytest.approx(encoder["ndcg@10"], abs=1e-6), (untrained, encoder)
    assert trained["ndcg@10"] >= encoder["ndcg@10"] + margin, (trained, encoder)

