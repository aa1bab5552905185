"""The resume state of an LLM run, and its format (nothing in it is unpickled).

A run saves ``<model folder>.resume/state-e<epoch>-b<batches>[-final]/`` after every epoch's validation, every
``checkpoint_steps`` and at the end; ``LATEST`` names the newest, and the older one is removed once the new one is
published (written into a temporary folder and renamed: ``recbole_cora.checkpoint``). A state folder holds:

* ``trainable.safetensors``: the trainable parameters (the same file as a saved model folder's);
* ``optimizer.safetensors``: the optimizer's tensors, their layout in ``state.json``;
* ``rng-<process>.safetensors`` and ``rng-<process>.json``: every process's random generators;
* ``state.json``: the position (epoch, batches done, their summed loss, finished), early stopping's counters, the
  scheduler's state, the number of processes, the model folder, the run's options and the split's fingerprint.
"""

import json
import shutil
from pathlib import Path

from recbole_cora import checkpoint as ckpt


def plain_number(value):
    value = float(value)
    return value if value == value and abs(value) != float("inf") else str(value)


def plain_result(result):
    return None if result is None else {k: float(v) for k, v in dict(result).items()}


class ResumeStore:
    """Writes and reads resume states under one ``Accelerator`` (every process writes its own generators; the main
    process the rest, and publishes)."""

    def __init__(self, accelerator):
        self.accelerator = accelerator

    def save(self, resume_dir, name, model, optimizer, fields):
        """A state named ``name`` in ``resume_dir``: ``model``'s trainable parameters, ``optimizer``, the RNG of
        every process, and ``fields`` (the position and counters: see the module's docstring) in ``state.json``."""
        from accelerate.utils import broadcast_object_list

        accelerator = self.accelerator
        folder = resume_dir / name
        tmp = None
        if accelerator.is_main_process:
            resume_dir.mkdir(parents=True, exist_ok=True)
            tmp = ckpt.temporary_dir(folder)
        tmp = Path(broadcast_object_list([str(tmp) if tmp else None])[0])
        rng_tensors, rng_meta = ckpt.rng_to_files()
        rank = accelerator.process_index
        ckpt.save_tensors(rng_tensors, tmp / f"rng-{rank}.safetensors")
        (tmp / f"rng-{rank}.json").write_text(json.dumps(rng_meta))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            opt_tensors, opt_meta = ckpt.optimizer_to_files(optimizer)
            ckpt.save_tensors(model.trainable_state_dict(), tmp / "trainable.safetensors")
            ckpt.save_tensors(opt_tensors, tmp / "optimizer.safetensors")
            state = {**fields, "optimizer": opt_meta, "processes": accelerator.num_processes}
            (tmp / "state.json").write_text(json.dumps(state, indent=1, default=str))
            ckpt.publish_dir(tmp, folder)
            previous = resume_dir / "LATEST"
            old = previous.read_text().strip() if previous.is_file() else None
            ckpt.write_pointer(resume_dir, name)
            if old and old != name and (resume_dir / old).exists():
                shutil.rmtree(resume_dir / old)
        accelerator.wait_for_everyone()

    def load(self, resume_file, model, optimizer, config):
        """The newest state of ``resume_file`` (a run's ``.resume`` folder or one of its states), checked against this
        run (its options, its number of processes, its own model folder), with the trainable parameters and the
        optimizer loaded. Returns (state folder, state.json's fields, this process's RNG state to restore)."""
        resume_file = Path(resume_file)
        state_dir = resume_file if (resume_file / "state.json").is_file() else ckpt.latest_state(resume_file)
        state = ckpt.read_state(state_dir)
        diff = ckpt.config_differences(state["config"], ckpt.plain_config(config))
        if diff:
            raise ckpt.CheckpointError(
                f"resume state '{state_dir}' was made with other options ({diff}): resume with the options "
                "it was started with, or start a new run without --resume."
            )
        processes = self.accelerator.num_processes
        if state["processes"] != processes:
            raise ckpt.CheckpointError(
                f"resume state '{state_dir}' was saved by {state['processes']} process(es); this run has "
                f"{processes}. Resume with the same number of processes."
            )
        if Path(state["model_file"]).name != state_dir.parent.name[: -len(".resume")]:  # it saves where the run did
            raise ckpt.CheckpointError(
                f"resume state '{state_dir}' names the model folder '{state['model_file']}', not its own run's: it was "
                "edited or copied from another run; resume that run, or start again without --resume.")
        ckpt.load_trainable(model, state_dir)  # a state folder holds trainable.safetensors like a model folder
        optimizer.load_state_dict(ckpt.optimizer_from_files(
            ckpt.load_tensors(state_dir / "optimizer.safetensors", "the resume state is unusable"), state["optimizer"]
        ))
        rank = self.accelerator.process_index
        rng = (
            ckpt.load_tensors(state_dir / f"rng-{rank}.safetensors", "the resume state is unusable"),
            json.loads((state_dir / f"rng-{rank}.json").read_text()),
        )
        return state_dir, state, rng


class ResumableMixin:
    """What ``LLMTrainer`` saves and reads back through its ``ResumeStore`` (``resume_store``): its position, early
    stopping's counters and the schedule, beside the weights and the optimizer."""

    @property
    def resume_dir(self):
        return ckpt.resume_dir_of(self.saved_model_file)

    def save_resume_state(self, epoch, batches, total_loss, finished=False):
        """Everything a killed run needs to go on exactly from here (``training.resume``)."""
        name = f"state-e{epoch}-b{batches}" + ("-final" if finished else "")
        fields = {
            "epoch": epoch, "batches": batches, "total_loss": total_loss, "finished": finished,
            "cur_step": self.cur_step, "best_valid_score": plain_number(self.best_valid_score),
            "best_valid_result": plain_result(self.best_valid_result),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "model_file": str(self.saved_model_file), "config": ckpt.plain_config(self.config),
            "split_fingerprint": self._fingerprint,
        }
        self.resume_store.save(self.resume_dir, name, self.model, self.optimizer, fields)

    def resume_from(self, resume_file):
        """Load the newest state of ``resume_file`` (a run's ``.resume`` folder or one of its states): the
        trainable parameters, optimizer, scheduler, RNG of every process and the position in the data."""
        state_dir, state, rng = self.resume_store.load(resume_file, self.model, self.optimizer, self.config)
        self.cur_step = state["cur_step"]
        self.best_valid_score = float(state["best_valid_score"])
        self.best_valid_result = state["best_valid_result"]
        self.saved_model_file = state["model_file"]
        self.start_epoch = state["epoch"]
        self._pending_scheduler = state["scheduler"]
        self._resumed, self._resumed_finished = True, state["finished"]
        self._resumed_fingerprint = state.get("split_fingerprint")
        if state["batches"]:  # mid-epoch: the RNG is restored once that epoch's loader exists
            self._resume_position = (state["epoch"], state["batches"], state["total_loss"])
            self._resume_rng = rng
        else:
            ckpt.restore_rng(*rng)
        self.logger.info(
            f"Resumed from {state_dir}: epoch {state['epoch']}, {state['batches']} batch(es) done"
            + (" (training had finished)" if state["finished"] else "")
        )
