"""What every backend is: the primitive names of the protocol (see backend/__init__.py for their
formulas) and a base class that turns a missing one into a clear BackendError.

A backend subclasses `Backend`. Asking it for a protocol name it does not define raises
BackendError naming the backend and the primitive, never a bare AttributeError deep inside the
model's math. `graph_blockers` is the backend's half of the path decision (`epoch_path`).
"""

from __future__ import annotations

from mlptrain.errors import BackendError

PRIMITIVES = (
    "asarray", "to_host", "to_float", "empty", "zeros", "take_rows", "matmul", "sum_rows",
    "row_norms_squared", "bias_activation", "add_bias", "activation_backward", "loss_forward",
    "loss_backward", "sgd_update", "adam_update",
)
# asked for only when graph_blockers(step) is empty: a backend without a graph never needs it
CAPABILITIES = ("epoch_runner",)


class Backend:
    name = "backend"
    device = "none"

    def graph_blockers(self, step) -> list[str]:
        """The reasons this backend cannot replay `step`'s epochs as one captured graph; empty
        when it can. A backend without an epoch graph runs eagerly and says where."""
        return [self.device]

    capture_failure: str | None = None  # why the last capture() returned None, where it tried

    def capture(self, launch, prepare=None):
        """A callable that replays what `launch()` enqueues on the device (a captured graph),
        or None when this backend cannot capture: then the caller runs launch itself. What
        launch touches must stay allocated, in place, between replays. `prepare()`, called
        only when a capture will be tried, runs first (and eagerly): it makes what the
        launches need exist, and undoes what it changed."""
        return None

    def loss_and_grad(self, loss, logits, targets, cache, scale: float, out, sums=None):
        """The loss's forward and its gradient dL/dlogits * scale into `out`, as loss_forward
        and loss_backward compute them; returns (summed loss, correct), or with `sums` (..., 2)
        float64 adds them there (a group's running sums, per member). A backend overrides it
        where one kernel does both."""
        loss_sum, correct = self.loss_forward(loss, logits, targets, cache)
        self.loss_backward(loss, cache, targets, scale, out=out)
        if sums is None:
            return loss_sum, correct
        self.xp.add(sums[..., 0], loss_sum, out=sums[..., 0])
        self.xp.add(sums[..., 1], correct, out=sums[..., 1])
        return None

    def __getattr__(self, name: str):
        # only reached when normal lookup fails: a primitive this backend does not implement
        if name in PRIMITIVES or name in CAPABILITIES:
            raise BackendError(f"the {self.name} backend ({self.device}) has no {name!r} "
                               "primitive, which this training step needs. Choose another "
                               "train.device, or implement it in the backend.")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
