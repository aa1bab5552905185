r"""RSLLM: a conventional sequential recommender's item IDs as a second language of the LLM.

Reference:
    Kai Zheng, Qingfeng Sun, Can Xu, Peng Yu and Qingwei Guo. "Towards a Unified Paradigm: Integrating
    Recommendation Systems as a New Language in Large Models." arXiv:2412.16933, 2024.

No public code exists; this file follows the paper, with LLaRA (Liao et al. 2024, ljy0ustc/LLaRA) for the protocol.

The prompt lists the user's last ``history_len`` items and a list of candidates (``task: candidates``); the answer is
the next item as the prompt shows it (its quoted title). In the text-ID prompt every item is its title followed by one placeholder token whose input
embedding is replaced by the item's ID embedding from a frozen RecBole sequential recommender (SASRec by default),
mapped into the LLM's input space by a trainable projector (two linear layers with GELU). The LLM is tuned with peft's
LoRA in two stages: stage 1 on the text-only prompt (the projector is not used and gets no gradient), stage 2 on the
text-ID prompt (LoRA and projector). Loss: the language-modelling loss on the answer (the title and the end token)
+ ``user_item_weight`` x InfoNCE of the user against the candidates in its prompt (the target positive) + in stage 2
``id_text_weight`` x InfoNCE of each item's projected ID token against the same item's text (other items of the
batch negative). How each representation is read is in ``properties/model/RSLLM.yaml``.

A candidate's score is the likelihood of its title after the prompt (``candidate_score``: mean log-probability per
token, or the sum), from one pass over the prompt whose key/value cache the continuations reuse, or the cosine the
user-item term trains (``candidate_score: user_item``: the prompt's last hidden state against the mean hidden state
of the candidate's title and ID token, one pass); the greedy answer (at most ``max_answer_tokens``) is parsed into
the one candidate it names (ValidRatio, HitRatio@1).

Ours (``user_token``): the text-ID prompt ends with one more placeholder whose input embedding is the projected state
of the frozen recommender over the user's history (the vector its own ranking scores items against), so the user
position reads the recommender's view of the user as the candidates' ID tokens carry its view of each item.

Ours (``hidden_norm: standardize``): the user-item cosine reads the user's and candidates' states standardised per
dimension (``Standardiser``) by their mean and spread over ``CALIBRATION_ROWS`` training rows, read at the weights
each stage starts from: a frozen LLM's states share one large direction, so raw cosines differ by a few hundredths.

Ours (``user_item_head_size``): the cosine compares the user's and the candidates' states through two trainable
linear maps (one per side) to a smaller space, trained at ``user_item_head_lr``. A frozen LLM carries the projected
ID tokens' order through its layers, but along other directions than the raw states' (their raw cosine can even
rank against SASRec in the middle layers); a linear map per side finds them in a few steps.

Ours (``user_item_layer``): the user-item term reads the states a given decoder layer outputs (from the same pass)
instead of the last hidden state, which is shaped by the final norm to predict the next token.
"""

import torch
import torch.nn.functional as F
from recbole.utils import ModelType
from torch import nn

from recbole_cora.data.candidates import parse_choice
from recbole_cora.data.list_prompts import ListPromptBuilder
from recbole_cora.llm.loading import execution_device
from recbole_cora.llm.peft_lora import inject_lora, is_lora, set_lora_dropout_mode
from recbole_cora.llm.scoring import (Standardiser, continuation_logprobs, cosines, decoder_layer, decoder_states,
                                     greedy_answers, info_nce, unique_first)
from recbole_cora.model.abstract_llm_recommender import LLMRecommender, encoder_residual
from recbole_cora.model.encoders import FrozenSequentialRecommender


class RSLLM(LLMRecommender):
    type = ModelType.SEQUENTIAL
    tasks = ("candidates",)
    draws_own_negatives = True  # a training row's list is drawn by the model: no RecBole negative sampling
    stage_starts_from_best = True  # stage 2 starts from stage 1's best LoRA
    answers_in_text = True  # answer_candidates: the greedy answer, scored on test (ValidRatio, HitRatio@1)
    prompt_shows_candidates = True  # example_prompt shows a user's history and candidate list
    prompt_templates = {"rsllm_prompt_template": (("history", "candidates"), (), ())}
    uses_placeholder = True  # every item's ID token (checked to be one token before anything trains)
    CALIBRATION_ROWS = 64  # hidden_norm: standardize reads this many training rows' prompts per stage

    @classmethod
    def required_stages(cls, config):
        return {"sequence": "sequence_stage_dir"}

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        if not config["sequence_stage_dir"]:
            raise ValueError("RSLLM reads its frozen sequential recommender from `sequence_stage_dir`: run its stage first (the pipeline does).")
        self.ITEM_SEQ = self.ITEM_ID + config["LIST_SUFFIX"]
        self.n_items = dataset.item_num
        self.sequence_encoder = FrozenSequentialRecommender.from_stage(config["sequence_stage_dir"], dataset)
        self.llm = inject_lora(self.llm, config)
        self.prompts = ListPromptBuilder(config, dataset, self.tokenizer, context_length=self.context_length)
        hidden = config["projector_hidden_size"] or self.d_model
        self.projector = nn.Sequential(
            nn.Linear(self.sequence_encoder.embedding_size, hidden), nn.GELU(), nn.Linear(hidden, self.d_model)
        )
        self.train_count = int(config["train_candidate_count"] or config["candidate_count"])
        if self.train_count < 2 or self.train_count - 1 > self.n_items - 2 - int(config["MAX_ITEM_LIST_LENGTH"]):
            raise ValueError(f"train_candidate_count {self.train_count}: use at least 2 and fewer than the items left "
                             "after a history.")
        self.weights = {"user_item": float(config["user_item_weight"]), "id_text": float(config["id_text_weight"])}
        self.temperatures = {"user_item": float(config["user_item_temperature"]),
                             "id_text": float(config["id_text_temperature"])}
        self.candidate_score = config["candidate_score"] or "sum"
        self.user_token = bool(config["user_token"])
        self.candidate_state = config["candidate_state"] or "mean"
        # user_item_head (ours): the cosine compares the states through two trainable linear maps (users, candidates)
        size = int(config["user_item_head_size"] or 0)
        self.user_item_head = nn.ModuleDict({"users": nn.Linear(self.d_model, size),
                                             "candidates": nn.Linear(self.d_model, size)}) if size else None
        self.user_item_head_lr = config["user_item_head_lr"]
        self.user_item_layer = decoder_layer(self.llm, config["user_item_layer"], "user_item_layer")
        self.residual = encoder_residual(config)
        self.hidden_norm = None
        if (config["hidden_norm"] or "none") == "standardize":
            self.hidden_norm = nn.ModuleDict({"users": Standardiser(self.d_model), "candidates": Standardiser(self.d_model)})
            self.register_buffer("hidden_norm_stage", torch.zeros((), dtype=torch.long))  # the stage it was read at
            self.calibration = self.calibration_rows(dataset, int(config["eval_batch_size"] or 4))
        self.max_answer_tokens = int(config["max_answer_tokens"])
        longest = max(range(1, self.n_items), key=lambda i: len(self.prompts.answer_ids(i)))
        if len(self.prompts.answer_ids(longest)) > self.max_answer_tokens:
            raise ValueError(
                f"max_answer_tokens {self.max_answer_tokens} is shorter than the longest answer: "
                f"{self.prompts.raw_titles[longest]!r} is {len(self.prompts.answer_ids(longest))} tokens with the end "
                "token; raise `max_answer_tokens` (greedy answers are cut there and could never name it)."
            )
        self.stages = self.stages_of(config)
        self.set_stage(self.stages[0])

    @classmethod
    def option_problems(cls, config):
        problems = super().option_problems(config)
        if config["encoder_residual"]:
            if (config["candidate_score"] or "sum") != "user_item":
                problems.append("encoder_residual adds the frozen recommender's score to the user-item cosine: set "
                                "`candidate_score: user_item` with it (or `encoder_residual: False`).")
        unread = not float(config["user_item_weight"]) and (config["candidate_score"] or "sum") != "user_item"
        if (config["hidden_norm"] or "none") == "standardize" and unread:
            problems.append("hidden_norm: standardize changes the user-item cosine only, which neither the loss "
                            "(user_item_weight 0) nor the score (candidate_score not user_item) reads: drop it or use one.")
        if config["user_item_head_size"] and unread:
            problems.append("user_item_head_size maps the states of the user-item cosine, which neither the loss "
                            "(user_item_weight 0) nor the score (candidate_score not user_item) reads: set it to ~ or "
                            "use one.")
        if config["user_item_layer"] is not None and unread:
            problems.append("user_item_layer chooses the states of the user-item cosine, which neither the loss "
                            "(user_item_weight 0) nor the score (candidate_score not user_item) reads: set it to ~ or "
                            "use one.")
        if config["user_item_head_size"] is not None and int(config["user_item_head_size"]) < 0:
            problems.append(f"user_item_head_size {config['user_item_head_size']}: use ~ (no head) or a positive width.")
        return problems

    @classmethod
    def plan_lines(cls, config, n_items, steps_per_epoch):
        if (config["hidden_norm"] or "none") != "standardize":
            return []
        return [f"  states    hidden_norm: {cls.CALIBRATION_ROWS} training rows' prompts through the LLM before each "
                "stage's first step (the users' and candidates' mean and spread)"]

    # ---------------------------------------------------------------- stages
    def reference_encoder(self):
        return self.sequence_encoder

    @classmethod
    def stages_of(cls, config):
        stages = [k for k in (1, 2) if config[f"stage{k}_epochs"] != 0]
        return stages or [2]

    def training_stages(self):
        return list(self.stages)

    def set_stage(self, stage):
        """Stage 1: LoRA on the text-only prompt. Stage 2: LoRA and the projector on the text-ID prompt."""
        if stage not in (1, 2):
            raise ValueError(f"RSLLM has stages 1 and 2, not {stage!r}.")
        self.stage = stage
        self.with_ids = stage == 2
        for name, parameter in self.llm.named_parameters():
            parameter.requires_grad = is_lora(name)
        for parameter in self.projector.parameters():
            parameter.requires_grad = stage == 2

    def train(self, mode=True):
        super().train(mode)
        set_lora_dropout_mode(self.llm, mode)
        return self

    # ---------------------------------------------------------------- hidden_norm: standardize
    def calibration_rows(self, dataset, batch_size):
        """``CALIBRATION_ROWS`` training rows (history, target) spread evenly over the training split (the same rows
        in every process), and their lists drawn by a generator of their own (the run's RNG is left as it is)."""
        history, target = dataset.inter_feat[self.ITEM_SEQ], dataset.inter_feat[self.ITEM_ID]
        rows = torch.linspace(0, len(target) - 1, min(self.CALIBRATION_ROWS, len(target))).round().long()
        history, target = history[rows].cpu(), target[rows].cpu()
        lists = self.training_lists(history, target, generator=torch.Generator().manual_seed(0))
        return [(history[k:k + batch_size], lists[k:k + batch_size]) for k in range(0, len(rows), batch_size)]

    def compared(self, users, candidates):
        """The user states (rows, d) and candidate states (rows, candidates, d) as the user-item cosine compares them:
        ``standardised``, then through ``user_item_head``'s two linear maps where there is one."""
        users, candidates = self.standardised(users, candidates)
        if self.user_item_head is None:
            return users, candidates
        weight = self.user_item_head["users"].weight
        return (self.user_item_head["users"](users.to(weight)),
                self.user_item_head["candidates"](candidates.to(weight)))

    def own_rate_modules(self):
        """With ``user_item_head_size`` and ``user_item_head_lr``, the head trains at its own peak rate."""
        return [] if self.user_item_head is None else [(self.user_item_head, self.user_item_head_lr)]

    def standardised(self, users, candidates):
        """The user states (rows, d) and candidate states (rows, candidates, d) the cosine reads: as they are, or with
        ``hidden_norm: standardize`` standardised, its statistics read first at the current stage's weights."""
        if self.hidden_norm is None:
            return users, candidates
        if int(self.hidden_norm_stage) != self.stage:
            self.calibrate_hidden()
        return self.hidden_norm["users"].standardise(users), self.hidden_norm["candidates"].standardise(candidates)

    @torch.no_grad()
    def calibrate_hidden(self):
        """Read the users' and candidates' mean and spread from the calibration rows' prompts, with the weights as
        they are now (eval mode: no dropout) and the current stage's prompt form; fixed until the stage changes."""
        was_training = self.training
        self.eval()
        try:
            for norm in self.hidden_norm.values():
                norm.reset()
            for history, lists in self.calibration:
                prompts = self.build_prompts(history, lists)
                embeds, mask, _, _ = self.embed(prompts, history=history)
                users, candidates = self.user_and_candidate_states(embeds, mask, prompts)
                self.hidden_norm["users"].calibrate(users)
                self.hidden_norm["candidates"].calibrate(candidates.flatten(0, 1))
            self.hidden_norm_stage.fill_(self.stage)
        finally:
            self.train(was_training)

    def learned_buffers(self):
        if self.hidden_norm is None:
            return super().learned_buffers()
        return super().learned_buffers() | {"hidden_norm_stage"} | {
            f"hidden_norm.{name}" for name, _ in self.hidden_norm.named_buffers()}

    # ---------------------------------------------------------------- inputs
    def training_lists(self, history, target, generator=None):
        """Per training row a list of ``train_candidate_count`` items in a random order: the target and items drawn
        uniformly from those outside the row's history (the run's RNG unless ``generator`` is given: the same under a
        seed, resumed exactly)."""
        lists = torch.empty(len(target), self.train_count, dtype=torch.long)
        for row, (items, item) in enumerate(zip(history.tolist(), target.tolist())):
            excluded = set(items) | {0, item}
            chosen = []
            while len(chosen) < self.train_count - 1:
                for draw in torch.randint(1, self.n_items, (2 * self.train_count,), generator=generator).tolist():
                    if draw not in excluded:
                        excluded.add(draw)
                        chosen.append(draw)
                        if len(chosen) == self.train_count - 1:
                            break
            row_items = torch.tensor([item, *chosen])
            lists[row] = row_items[torch.randperm(self.train_count, generator=generator)]
        return lists

    def build_prompts(self, history, lists):
        user = self.with_ids and self.user_token
        return [self.prompts.build(h, l, self.with_ids, user) for h, l in zip(history.tolist(), lists.tolist())]

    def embed(self, prompts, answers=None, history=None):
        """(inputs_embeds, attention_mask, projected, items) of right-padded prompts (each followed by its answer
        ids when given): token embeddings, with each placeholder's replaced by its item's projected ID embedding
        (text-ID prompts) and the user's placeholder (``user_token``) by the projected state of the sequential
        recommender over ``history``; ``projected`` (n, d) and ``items`` (n,) are the items' vectors and ids."""
        embedding = self.llm.get_input_embeddings()
        device = execution_device(embedding)
        rows = [p.ids + (answers[k] if answers is not None else []) for k, p in enumerate(prompts)]
        width = max(map(len, rows))
        input_ids = torch.full((len(rows), width), self.prompts.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for k, ids in enumerate(rows):
            input_ids[k, : len(ids)] = torch.tensor(ids)
            mask[k, : len(ids)] = 1
        input_ids, mask = input_ids.to(device), mask.to(device)
        embeds = embedding(input_ids)
        users = [(k, p.user_at) for k, p in enumerate(prompts) if p.user_at is not None]
        if users:
            if history is None:
                raise ValueError("a prompt with the user token needs the user's history for its state.")
            rows, cols = (torch.tensor(column, device=device) for column in zip(*users))
            states = self.sequence_encoder.user_states(history[rows.cpu()]).detach()
            embeds = embeds.index_put((rows, cols), self.projector(states.to(self.projector[0].weight)).to(embeds.dtype))
        marks = [(k, position, item) for k, p in enumerate(prompts) for position, item in p.items]
        if not marks:
            return embeds, mask, None, None
        where_rows, where_cols, items = (torch.tensor(column, device=device) for column in zip(*marks))
        ids = self.sequence_encoder.item_embeddings(items).detach()
        projected = self.projector(ids.to(self.projector[0].weight))
        embeds = embeds.index_put((where_rows, where_cols), projected.to(embeds.dtype))
        return embeds, mask, projected, items

    def example_prompt(self, interaction, lists):
        """(text, token ids) of the first row's prompt with its list, in the current stage's form (the plan shows it;
        the text is what the pieces read as together, the ids what the LLM gets)."""
        history, items = interaction[self.ITEM_SEQ][0].tolist(), lists[0].tolist()
        user = self.with_ids and self.user_token
        return (self.prompts.text(history, items, self.with_ids, user),
                self.prompts.build(history, items, self.with_ids, user).ids)

    def prompt_lengths(self, interaction):  # lists are drawn per batch: no fixed prompt to measure
        return None

    # ---------------------------------------------------------------- training
    def loss_terms(self, interaction):
        """The loss's terms for a batch of training rows (a dict): ``lm`` the language-modelling loss on the answer
        tokens, ``user_item`` the InfoNCE of each user against its list (in-prompt candidates as negatives),
        ``id_text`` (stage 2) the InfoNCE of projected ID tokens against item text."""
        history, target = interaction[self.ITEM_SEQ].cpu(), interaction[self.ITEM_ID].cpu()
        lists = self.training_lists(history, target)
        prompts = self.build_prompts(history, lists)
        answers = [self.prompts.answer_ids(int(t)) for t in target]
        embeds, mask, projected, items = self.embed(prompts, answers, history)
        hidden, read = decoder_states(self.llm, embeds, mask, self.user_item_layer)
        head = self.llm.get_output_embeddings()
        rows, cols, tokens = [], [], []
        for k, (prompt, answer) in enumerate(zip(prompts, answers)):
            start = len(prompt.ids) - 1  # the position before each answer token predicts it
            rows += [k] * len(answer)
            cols += range(start, start + len(answer))
            tokens += answer
        device = hidden.device
        rows, cols = torch.tensor(rows, device=device), torch.tensor(cols, device=device)
        logits = head(hidden[rows, cols].to(head.weight.dtype)).float()
        terms = {"lm": F.cross_entropy(logits, torch.tensor(tokens, device=logits.device))}
        users, candidates = self.compared(*self.states_in(read, prompts))
        positions = (lists == target.view(-1, 1)).float().argmax(dim=1).to(device)
        terms["user_item"] = info_nce(users, candidates, positions, self.temperatures["user_item"])
        if projected is not None:
            terms["id_text"] = self.id_text_loss(projected, items)
        return terms

    def encoder_list_scores(self, interaction, lists):
        """(rows, candidates): the frozen recommender's own score of each candidate (``encoder_residual``)."""
        encoder = self.sequence_encoder.full_sort_predict(interaction)
        return encoder.gather(1, lists.to(encoder.device))

    def candidate_states(self, hidden, prompts):
        """(rows, candidates, d): each candidate's state in its prompt (``candidate_state``). mean: the mean of the
        LLM's last hidden states over its title tokens and, in the text-ID form, its ID token (which follows the
        title: a title token cannot attend to it); last: the state at the last of those positions (its ID token in
        the text-ID form, which has read the whole title; else the title's last token)."""
        out, extra = [], int(self.with_ids)
        for k, prompt in enumerate(prompts):
            if self.candidate_state == "last":
                out.append(hidden[k, [end + extra - 1 for _, end in prompt.spans]])
            else:
                out.append(torch.stack([hidden[k, start:end + extra].mean(dim=0) for start, end in prompt.spans]))
        return torch.stack(out)

    def item_text(self, items):
        """(n, d): each item's text as the LLM reads it, the mean of its title tokens' (frozen) input embeddings."""
        embedding = self.llm.get_input_embeddings()
        device = execution_device(embedding)
        with torch.no_grad():
            return torch.stack([embedding(torch.tensor(self.prompts.title_ids(int(i)), device=device)).mean(dim=0)
                                for i in items.tolist()])

    def id_text_loss(self, projected, items):
        """InfoNCE of each distinct item's projected ID embedding against its own text (``item_text``), the batch's
        other distinct items as negatives."""
        unique, first = unique_first(items)
        text = self.item_text(unique).to(projected)
        targets = torch.arange(len(unique), device=projected.device)
        return info_nce(projected[first], text.unsqueeze(0).expand(len(unique), -1, -1), targets,
                        self.temperatures["id_text"])

    def forward(self, interaction, return_loss=False):
        if not return_loss:
            raise ValueError("RSLLM scores candidate lists (candidate_scores), not single rows.")
        terms = self.loss_terms(interaction)  # the loss goes through forward so that a DDP-wrapped model syncs gradients
        loss = terms["lm"] + self.weights["user_item"] * terms["user_item"]
        if "id_text" in terms:
            loss = loss + self.weights["id_text"] * terms["id_text"]
        return loss

    def calculate_loss(self, interaction):
        return self.forward(interaction, return_loss=True)

    # ---------------------------------------------------------------- candidate lists
    @torch.inference_mode()
    def candidate_scores(self, interaction, lists):
        """(rows, candidates): the log-likelihood of each candidate's answer after the row's prompt (the sum, or the
        mean per token: ``candidate_score``), the prompt's key/value cache shared by its candidates; or with
        ``candidate_score: user_item`` the user-item cosine of one pass over the prompt (``user_item_scores``)."""
        history, lists = interaction[self.ITEM_SEQ].cpu(), lists.cpu()
        prompts = self.build_prompts(history, lists)
        embeds, mask, _, _ = self.embed(prompts, history=history)
        if self.candidate_score == "user_item":
            return self.user_item_scores(interaction, lists, embeds, mask, prompts)
        answers = [[self.prompts.answer_ids(i) for i in row] for row in lists.tolist()]
        sums, counts = continuation_logprobs(self.llm, embeds, mask, answers, pad_id=self.prompts.pad_id)
        return sums / counts if self.candidate_score == "mean" else sums

    def user_item_scores(self, interaction, lists, embeds, mask, prompts):
        """(rows, candidates): the logits the user-item term trains (``user_item_logits``), plus the encoder's score
        of each candidate with ``encoder_residual``."""
        logits = self.user_item_logits(embeds, mask, prompts)
        return logits if self.residual is None else self.residual(self.encoder_list_scores(interaction, lists), logits)

    def user_item_logits(self, embeds, mask, prompts):
        """(rows, candidates): the cosine of each row's user (the prompt's last hidden state) with each candidate (its
        state in the same prompt: ``candidate_states``), as ``compared`` maps them, over ``user_item_temperature``."""
        users, candidates = self.compared(*self.user_and_candidate_states(embeds, mask, prompts))
        return cosines(users, candidates) / self.temperatures["user_item"]

    def user_and_candidate_states(self, embeds, mask, prompts):
        """(rows, d) and (rows, candidates, d): the user's state (the prompt's last position) and each candidate's
        (``candidate_states``), in the states ``user_item_layer`` names, from one pass over the prompts."""
        return self.states_in(decoder_states(self.llm, embeds, mask, self.user_item_layer)[1], prompts)

    def states_in(self, hidden, prompts):
        """(rows, d) and (rows, candidates, d) of the prompts' last hidden states ``hidden``: each user's (the prompt's
        last position) and each candidate's (``candidate_states``)."""
        last = torch.tensor([len(p.ids) - 1 for p in prompts], device=hidden.device)
        return hidden[torch.arange(len(prompts), device=hidden.device), last], self.candidate_states(hidden, prompts)

    @torch.inference_mode()
    def residual_parts(self, interaction, lists):
        """For fitting ``encoder_residual``'s gate: (encoder scores, LLM scores, target column), (rows, candidates)."""
        history, lists = interaction[self.ITEM_SEQ].cpu(), lists.cpu()
        prompts = self.build_prompts(history, lists)
        embeds, mask, _, _ = self.embed(prompts, history=history)
        llm = self.user_item_logits(embeds, mask, prompts)
        target = interaction[self.ITEM_ID].cpu().view(-1, 1)
        return self.encoder_list_scores(interaction, lists).to(llm), llm, (lists == target).float().argmax(dim=1)

    @torch.inference_mode()
    def answer_candidates(self, interaction, lists):
        """Per row the column of the one candidate its greedy answer names, or -1 (``parse_choice``)."""
        texts = self.answers(interaction, lists)
        return [parse_choice(text, [self.prompts.raw_titles[i] for i in row]) for text, row in zip(texts, lists.tolist())]

    @torch.inference_mode()
    def answers(self, interaction, lists):
        """The greedy answer of each row's prompt, as text (at most ``max_answer_tokens`` tokens)."""
        history = interaction[self.ITEM_SEQ].cpu()
        prompts = self.build_prompts(history, lists.cpu())
        embeds, mask, _, _ = self.embed(prompts, history=history)
        ids = greedy_answers(self.llm, embeds, mask, self.max_answer_tokens, self.prompts.eos_id)
        return [self.tokenizer.decode(row, skip_special_tokens=True) for row in ids]

