"""The training step as the reference code runs it, kept as the yardstick for
:meth:`edge_sdk.training.trainer.Trainer.train_step`: the teacher on the image and its
jittered copy at every step, three student passes that each compute all 768 channels.

It draws exactly what ``Trainer.train_step`` draws at the same step, so the two give the same
losses up to rounding; ``benchmarks/train_step.py`` times both and compares their loss curves,
and the tests hold them equal.
"""

from __future__ import annotations

import torch

from edge_sdk.training.losses import efficientad_losses
from edge_sdk.training.networks import TEACHER_CHANNELS
from edge_sdk.training.trainer import Trainer


def reference_train_step(run: Trainer, mean: torch.Tensor, std: torch.Tensor) -> dict[str, float]:
    """One step of ``run`` the reference's way; leaves ``run.step`` to the caller."""
    _, image_st, image_ae, image_penalty = run.step_inputs()
    batch, c = image_st.shape[0], TEACHER_CHANNELS
    with run.autocast():
        with torch.no_grad():
            teacher_out = (run.teacher(torch.cat([image_st, image_ae])).float() - mean) / std
        student_st = run.student(image_st)
        student_penalty = run.student(image_penalty) if image_penalty is not None else None
        ae_out = run.autoencoder(image_ae)
        student_ae = run.student(image_ae)
    losses = efficientad_losses(
        teacher_st=teacher_out[:batch],
        student_st=student_st[:, :c],
        teacher_ae=teacher_out[batch:],
        autoencoder_ae=ae_out,
        student_ae=student_ae[:, c:],
        student_penalty=student_penalty[:, :c] if student_penalty is not None else None,
    )
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(losses.total).backward()
    return losses.values()
