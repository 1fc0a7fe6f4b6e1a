class CaffeAdam(CaffeSolver):
    """Caffe's "Adam" rule (AdamSolver::ComputeUpdateValue), momentum and momentum2
    being beta1 and beta2, t the iteration counted from 1:

        m = momentum * m + (1 - momentum) * gradient
        v = momentum2 * v + (1 - momentum2) * gradient ** 2
        param -= lr * lr_mult * sqrt(1 - momentum2 ** t) / (1 - momentum ** t)
                 * m / (sqrt(v) + delta)

    delta is added to the uncorrected sqrt(v), as in Caffe (torch.optim.Adam adds eps
    after the bias correction of v, so the two differ slightly).
    """

    def __init__(
        self,
        params: Any,
        *,
        lr: float,
        momentum: float = 0.0,
        momentum2: float = 0.999,
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
                "momentum2": momentum2,
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
        if "iteration" not in state:
            state["iteration"] = 0
            state["m"] = torch.zeros_like(param)
            state["v"] = torch.zeros_like(param)
        state["iteration"] += 1
        t = state["iteration"]
        beta1, beta2 = group["momentum"], group["momentum2"]
        m: torch.Tensor = state["m"]
        v: torch.Tensor = state["v"]
        m.mul_(beta1).add_(diff, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(diff, diff, value=1 - beta2)
        correction = (1 - beta2**t) ** 0.5 / (1 - beta1**t)
        return m / (v.sqrt() + group["delta"]) * (local_rate * correction)
