"""Scoring a user's candidate list with RSLLM: one pass over the prompt whose key/value cache the 20 continuations
reuse (ours), against one full forward of prompt + title per candidate (the straightforward way), on the embedded
candidate default (ml-100k, SmolLM2-135M-Instruct, 20 candidates, 5 history items), and the greedy answer's cost.

    python benchmarks/bench_candidates.py [--work DIR] [--users 8]

Run it where the embedded default ran (`--work`: the folder holding its saved/ stages) or it trains the SASRec stage
first. Prints a table: seconds per user for each way, their ratio, and the largest score difference between them.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default=".")
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4, help="users per scoring batch (eval_batch_size)")
    args = parser.parse_args()
    os.chdir(args.work)
    from recbole.data import data_preparation
    from recbole.utils import init_seed

    from recbole_cora.config import Config
    from recbole_cora.data.candidates import candidate_lists
    from recbole_cora.model.llm_recommender.rsllm import RSLLM
    from recbole_cora.stages import prepare_stages
    from recbole_cora.utils import create_dataset

    config = Config(config_file_list=[str(ROOT / "properties" / "presets" / "embedded_candidates.yaml")],
                    config_dict={"state": "WARNING", "show_progress": False, "candidate_score": "mean"})
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train, _, test = data_preparation(config, dataset)
    prepare_stages(config, dataset, RSLLM)
    model = RSLLM(config, train._dataset).eval()
    model.set_stage(2)
    lists = candidate_lists(config, test._dataset)
    cached = naive = answer = 0.0
    worst = 0.0
    tokens = []
    with torch.inference_mode():
        for start in range(0, args.users, args.batch):
            rows = list(range(start, min(start + args.batch, args.users)))
            batch = test.collate_fn(rows)
            batch = batch[0] if isinstance(batch, tuple) else batch
            mine = lists[torch.tensor(rows)]
            clock = time.perf_counter()
            scores = model.candidate_scores(batch, mine)
            cached += time.perf_counter() - clock
            clock = time.perf_counter()
            model.answers(batch, mine)
            answer += time.perf_counter() - clock
            prompts = model.build_prompts(batch["item_id_list"], mine)
            clock = time.perf_counter()
            for r, prompt in enumerate(prompts):  # the straightforward way: prompt + title, once per candidate
                tokens.append(len(prompt.ids))
                for c, item in enumerate(mine[r].tolist()):
                    ids = model.prompts.answer_ids(item)
                    embeds, mask, _, _ = model.embed([prompt], [ids], batch["item_id_list"][r:r + 1])
                    logits = model.llm(inputs_embeds=embeds, attention_mask=mask, use_cache=False).logits[0].float()
                    logp = torch.log_softmax(logits[len(prompt.ids) - 1: len(prompt.ids) - 1 + len(ids)], dim=-1)
                    full = float(logp.gather(1, torch.tensor(ids).view(-1, 1)).mean())
                    worst = max(worst, abs(full - float(scores[r, c])))
            naive += time.perf_counter() - clock
    n = args.users
    print(f"RSLLM, {n} test users of the embedded candidate default, {lists.shape[1]} candidates, prompts of "
          f"{min(tokens)}-{max(tokens)} tokens, torch threads {torch.get_num_threads()}:\n")
    print("| way | s per user | vs ours |")
    print("|---|---|---|")
    print(f"| ours: one prompt pass, its cache shared by the {lists.shape[1]} titles | {cached / n:.2f} | 1.00 |")
    print(f"| one full forward per candidate | {naive / n:.2f} | {naive / cached:.2f} |")
    print(f"| the greedy answer (at most {model.max_answer_tokens} tokens) | {answer / n:.2f} | {answer / cached:.2f} |")
    print(f"\nlargest difference of a candidate's mean log-probability between the two ways: {worst:.2e}")


if __name__ == "__main__":
    main()
