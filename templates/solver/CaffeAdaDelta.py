class CaffeAdaDelta(CaffeSolver):
    """Caffe's "AdaDelta" rule (AdaDeltaSolver::ComputeUpdateValue), momentum being rho:

        gradients = momentum * gradients + (1 - momentum) * gradient ** 2
        step = gradient * sqrt((updates + delta) / (gradients + delta))
        updates = momentum * updates + (1 - momentum) * step ** 2
        param -= lr * lr_mult * step

    delta sits inside both square roots, as in Caffe (and torch.optim.Adadelta's eps).
    """

    def __init__(
        self,
        params: Any,
        *,
        lr: float,
        momentum: float = 0.0,
        delta: float = 1e-8,
        weight_decay: float = 0.0,
        regularization_type: str = "L2",
        iter_size: int = 1,
        clip_gradients: float = -1.0,
    ) -> None:
        super().__init__(
            params,
            {
                "lr": lr,
                "momentum": momentum,
                "delta": delta,
                "weight_decay": weight_decay,
            },
            regularization_type=regularization_type,
            iter_size=iter_size,
            clip_gradients=clip_gradients,
        )

    def update(
        self,
        param: torch.Tensor,
        diff: torch.Tensor,
        group: dict[str, Any],
        local_rate: float,
    ) -> torch.Tensor:
        state = self.state[param]
        if "gradients" not in state:
            state["gradients"] = torch.zeros_like(param)
            state["updates"] = torch.zeros_like(param)
        gradients: torch.Tensor = state["gradients"]
        updates: torch.Tensor = state["updates"]
        momentum, delta = group["momentum"], group["delta"]
        gradients.mul_(momentum).addcmul_(diff, diff, value=1 - momentum)
        step = diff * ((updates + delta) / (gradients + delta)).sqrt()
        updates.mul_(momentum).addcmul_(step, step, value=1 - momentum)
        return step * local_rate
