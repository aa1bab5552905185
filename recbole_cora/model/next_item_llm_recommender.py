"""The next-item task's head, shared by the LLM models that rank every item (Laser): a user vector read from the
LLM's hidden state, scored against every item's vector."""

import torch
import torch.nn.functional as F
from recbole.utils import ModelType

from recbole_cora.model.abstract_llm_recommender import LLMRecommender, encoder_residual


class NextItemLLMRecommender(LLMRecommender):
    """The next-item task's head: a user vector read from the LLM's hidden state (``user_vectors``) is scored
    against every item's vector (``item_vectors``), kept as an item matrix that the trainer computes with
    ``compute_item_matrix`` (items split between processes) and the model keeps with its trained state.

    Score: cos(h_u, h_i) / ``temperature``; loss: cross-entropy over all items (InfoNCE with every other item as
    a negative). RecBole's sequential rows: ``item_id_list`` (the ID history, oldest first) and the next item.

    The cached matrix and the weights that trained against it (``benchmarks/QUALITY.md``, Laser):

    * ``item_matrix_ready`` (``has_item_matrix``) says whether the matrix was computed with the current weights; a training step that
      may change the item side clears it (``weights_changed``), and the trainer recomputes a stale matrix before it
      evaluates, so no evaluation and no saved model pairs weights with a matrix of other weights;
    * ``item_gradient: batch``: the batch's target items are encoded again with gradient inside the step and their
      fresh vectors replace their cached rows in the logits (and are written back to the cache), so the item side
      learns too; the cache serves every other item;
    * ``center_vectors``: user and item vectors minus the mean item vector (of the cached matrix) before the
      cosine: LLM hidden states are anisotropic (SmolLM2's item vectors have pairwise cosine about 0.9), and a
      cosine over a small temperature of nearly parallel vectors barely separates them;
    * ``item_head`` (Laser's ``item_projection: separate``): the matrix caches item states and a trainable map turns
      them into vectors in every step, so the item side's map learns from every item's logit;
    * ``freeze_item_matrix()`` (Laser's stage 2): the matrix stays as it is and the item side gets no gradient;
    * ``encoder_residual`` (ours): the score is the frozen sequential recommender's own score plus a learned gate
      (from 0) times the cosine, so the model starts as its encoder and the gate says what the LLM added.
    """

    type = ModelType.SEQUENTIAL
    tasks = ("next_item", "candidates")  # on the candidate task its cosine ranks each user's list
    ranks_all_items = True  # trained with cross-entropy over all items: no sampled negatives (config.Config)

    def __init__(self, config, dataset, vector_size):
        super().__init__(config, dataset)
        self.ITEM_SEQ = self.ITEM_ID + config["LIST_SUFFIX"]
        self.n_items = dataset.item_num
        self.vector_size = int(vector_size)
        self.temperature = float(config["temperature"])
        self.item_gradient = (config["item_gradient"] or "none") == "batch"
        self.center_vectors = bool(config["center_vectors"])
        self.item_refresh_steps = int(config["item_refresh_steps"] or 0)
        self.item_matrix_frozen = False
        self.register_buffer("item_matrix", torch.zeros(self.n_items, self.vector_size))
        # "ready": the matrix was computed with the weights the model holds now (saved with them: a best model and
        # its matrix come back together); cleared by a training step that may change the item side
        self.register_buffer("item_matrix_ready", torch.tensor(False))
        self.register_buffer("item_center", torch.zeros(self.vector_size))
        self.residual = encoder_residual(config)

    def user_vectors(self, interaction):
        """(batch, vector_size) user vectors, and an auxiliary loss term (0 if none)."""
        raise NotImplementedError

    def item_vectors(self, item_ids):
        """(len(item_ids), width of the item matrix): what the item matrix caches of each item (its vector, or what
        ``item_head`` turns into one)."""
        raise NotImplementedError

    def item_head(self, cached):
        """The item vectors scored, from rows of the cached item matrix: the rows themselves, or (a model with a
        trainable map over cached item states, e.g. Laser's ``item_projection: separate``) that map's output, with
        gradient in every step."""
        return cached

    @property
    def has_item_matrix(self):
        """The item matrix exists and belongs to the current weights (else the trainer computes it again)."""
        return bool(self.item_matrix_ready)

    def set_item_matrix(self, matrix):
        self.item_matrix.copy_(matrix.to(self.item_matrix))
        self.item_matrix_ready.fill_(True)
        if self.center_vectors:  # the mean over real items (row 0 is the padding item)
            self.item_center.copy_(self.item_matrix[1:].mean(dim=0))

    def freeze_item_matrix(self, frozen=True):
        """Keep the item matrix as it is while the user side trains on (Laser's stage 2): no item gradient, and
        training steps leave it current."""
        self.item_matrix_frozen = frozen

    @property
    def item_side_trains(self):
        return not self.item_matrix_frozen

    def weights_changed(self):
        """A training step changed the weights: a matrix they did not compute is stale (not in a frozen stage)."""
        if self.item_side_trains:
            self.item_matrix_ready.fill_(False)

    def _normalized(self, vectors):
        vectors = vectors.float()
        if self.center_vectors:
            vectors = vectors - self.item_center.to(vectors.device)
        return F.normalize(vectors, dim=-1)

    def logits(self, users, fresh_items=None, fresh_vectors=None):
        """cos(h_u, h_i) / tau for every item (column 0, the padding item, included: ``without_padding`` masks it);
        ``fresh_vectors`` (with gradient) replace the cached rows of ``fresh_items``."""
        items = self._normalized(self.item_head(self.item_matrix))
        users = self._normalized(users).to(items.device)
        logits = users @ items.t() / self.temperature
        if fresh_items is not None:
            fresh = users @ self._normalized(self.item_head(fresh_vectors)).to(items.device).t() / self.temperature
            logits = logits.index_copy(1, fresh_items.to(items.device), fresh)
        return logits

    @staticmethod
    def without_padding(logits):
        """``logits`` with the padding item 0 at -inf: it never ranks."""
        padding = torch.zeros_like(logits, dtype=torch.bool)
        padding[:, 0] = True
        return logits.masked_fill(padding, -float("inf"))

    def forward(self, interaction, return_loss=False):
        """Every item's score (the cosine over tau; with ``encoder_residual`` the encoder's score plus the gate times
        it), or with ``return_loss`` the loss: cross-entropy of the cosine over tau over all items (the paper's)."""
        users, auxiliary = self.user_vectors(interaction)
        fresh_items = fresh_vectors = None
        if return_loss and self.training and self.item_gradient and self.item_side_trains:
            fresh_items = torch.unique(interaction[self.ITEM_ID])
            fresh_vectors = self.item_vectors(fresh_items)
            with torch.no_grad():  # the cache takes the fresh rows (the other items keep theirs)
                self.item_matrix[fresh_items.to(self.item_matrix.device)] = fresh_vectors.detach().to(self.item_matrix)
        logits = self.logits(users, fresh_items, fresh_vectors)
        if not return_loss:
            if self.residual is not None:
                logits = self.residual(self.encoder_scores(interaction, logits.shape[1]), logits)
            return self.without_padding(logits)
        # the loss goes through forward so that a DDP-wrapped model syncs gradients
        target = interaction[self.ITEM_ID].to(logits.device)
        return F.cross_entropy(self.without_padding(logits), target) + auxiliary

    def encoder_scores(self, interaction, n_items):
        """(rows, n_items): the frozen sequential recommender's own score of every item (``encoder_residual``)."""
        return self.reference_encoder().full_sort_predict(interaction)[:, :n_items]

    @torch.no_grad()
    def residual_parts(self, interaction, lists=None):
        """For fitting ``encoder_residual``'s gate: (encoder scores, LLM scores, target column), each row over every
        item (the padding item's encoder score -inf: it never counts), or over ``lists`` (rows, candidates)."""
        users, _ = self.user_vectors(interaction)
        llm = self.logits(users)
        encoder = self.encoder_scores(interaction, llm.shape[1]).to(llm)
        target = interaction[self.ITEM_ID].to(llm.device)
        encoder[:, 0] = -float("inf")
        if lists is None:
            return encoder, llm, target
        lists = lists.to(llm.device)
        return encoder.gather(1, lists), llm.gather(1, lists), (lists == target.view(-1, 1)).float().argmax(dim=1)

    def calculate_loss(self, interaction):
        return self.forward(interaction, return_loss=True)

    def full_sort_predict(self, interaction):
        return self.forward(interaction)

    def predict(self, interaction):
        logits = self.forward(interaction)
        return logits.gather(1, interaction[self.ITEM_ID].to(logits.device).view(-1, 1)).squeeze(1)

    def trainable_state_dict(self):
        """The trainable parameters and the item matrix they were scored against (stage 2 keeps it fixed)."""
        state = super().trainable_state_dict()
        state.update({"item_matrix": self.item_matrix, "item_matrix_ready": self.item_matrix_ready})
        if self.center_vectors:
            state["item_center"] = self.item_center
        return state
