"""training.save_on_each_node, made true of the model weights too.

transformers 5's save_pretrained writes only on global rank 0 (PreTrainedModel.should_save_on_this_rank), so
with node-local disks every node but the first got checkpoints with optimizer, scheduler, RNG and state but no
model: not resumable there, and no final model either.
"""

from __future__ import annotations


class EachNodeSave:
    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        args = self.args
        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        if not (args.save_on_each_node and args.should_save and args.process_index != 0 and hasattr(model, "should_save_on_this_rank")):
            return super()._save(output_dir, state_dict)
        # This node's first process writes as rank 0 does, for this save only (an instance attribute over the method).
        model.should_save_on_this_rank = lambda is_main_process: is_main_process
        try:
            return super()._save(output_dir, state_dict)
        finally:
            del model.should_save_on_this_rank
