"""RecBole's Collector, plus the per-row user ids that UAUC needs and the warm flags for breakdowns."""

from recbole.evaluator.collector import Collector


class LabeledCollector(Collector):
    def eval_batch_collect(self, scores_tensor, interaction, positive_u, positive_i):
        super().eval_batch_collect(scores_tensor, interaction, positive_u, positive_i)
        if self.register.need("data.uid"):
            self.data_struct.update_tensor("data.uid", interaction[self.config["USER_ID_FIELD"]].to(self.device))
        warm_field = self.config["WARM_FIELD"] or "warm"
        if warm_field in interaction:
            self.data_struct.update_tensor("data.warm", interaction[warm_field].to(self.device))

    def get_data_struct(self):
        struct = super().get_data_struct()
        # RecBole's Collector only resets its own keys; ours must not leak into the next evaluation.
        for key in ("data.uid", "data.warm"):
            if key in self.data_struct:
                del self.data_struct[key]
        return struct
