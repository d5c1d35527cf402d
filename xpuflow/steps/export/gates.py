"""Quality figures of an exported model against its reference, and the gates that fail the step.

- parity: fp32 ONNX vs torch, max |logit difference| <= ``max_parity_diff``;
- INT8 (CPU EP) and the target's own run (e.g. the QNN HTP simulator) vs fp32 ONNX:
  top-1 agreement >= ``min_agreement`` and accuracy drop <= ``max_accuracy_drop`` points.
"""

from __future__ import annotations

from typing import Any

from ..io import StepError

__all__ = ["GateError", "compare", "check_parity", "check_quality"]


class GateError(StepError):
    """A quality gate failed; ``figures`` holds the measured numbers."""

    def __init__(self, message: str, figures: dict[str, Any]) -> None:
        super().__init__(message)
        self.figures = figures

    def __reduce__(self) -> tuple[Any, ...]:  # picklable, e.g. across a process pool
        return type(self), (str(self), self.figures)


def compare(reference: Any, logits: Any, labels: Any) -> dict[str, Any]:
    """Top-1 agreement, accuracies and logit differences of ``logits`` against ``reference``."""
    import numpy as np

    ref_top, top = reference.argmax(1), logits.argmax(1)
    diff = np.abs(reference.astype(np.float64) - logits.astype(np.float64))
    acc_ref, acc = float((ref_top == labels).mean()), float((top == labels).mean())
    return {
        "rows": int(len(labels)),
        "agreement": float((ref_top == top).mean()),
        "disagreeing_rows": int((ref_top != top).sum()),
        "accuracy_reference": acc_ref,
        "accuracy": acc,
        "accuracy_drop_points": round((acc_ref - acc) * 100, 4),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
    }


def check_parity(figures: dict[str, Any], tolerance: float) -> None:
    if not figures["max_abs_diff"] <= tolerance:  # NaN fails too
        raise GateError(f"export: fp32 parity gate failed: ONNX Runtime and torch logits differ by up to "
                        f"{figures['max_abs_diff']:.3g} on the validation split (tolerance {tolerance:g}). Fix: check "
                        "the model for ops the ONNX exporter translates approximately.", figures)


def check_quality(what: str, figures: dict[str, Any], min_agreement: float, max_accuracy_drop: float) -> None:
    """Fail when ``figures`` (from :func:`compare`) break either gate; the message names both numbers."""
    failed = []
    if not figures["agreement"] >= min_agreement:
        failed.append(f"top-1 agreement with fp32 is {figures['agreement']:.2%} ({figures['disagreeing_rows']} of "
                      f"{figures['rows']} rows differ), below min_agreement={min_agreement:.2%}")
    if not figures["accuracy_drop_points"] <= max_accuracy_drop:
        failed.append(f"accuracy drops {figures['accuracy_drop_points']:.2f} points "
                      f"({figures['accuracy_reference']:.2%} -> {figures['accuracy']:.2%}), more than "
                      f"max_accuracy_drop={max_accuracy_drop:g}")
    if failed:
        raise GateError(f"export: quality gate failed for {what}: {'; '.join(failed)}. Nothing was exported. Fix: "
                        "calibrate on data like the serving data (calibration_split, calibration_batches), try "
                        "activations='uint16' where the target offers it or per_channel=true, or relax the gates "
                        "knowingly.", figures)
