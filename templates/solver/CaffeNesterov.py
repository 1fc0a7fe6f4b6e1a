class CaffeNesterov(CaffeSolver):
    """Caffe's "Nesterov" rule (NesterovSolver::ComputeUpdateValue):

        history' = momentum * history + lr * lr_mult * gradient
        param -= (1 + momentum) * history' - momentum * history

    As in Caffe's SGD, the learning rate is folded into the momentum history
    (torch.optim.SGD with nesterov=True keeps it out: it differs once the rate changes).
    """

    def __init__(
        self,
        params: Any,
        *,
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        regularization_type: str = "L2",
        iter_size: int = 1,
        clip_gradients: float = -1.0,
    ) -> None:
        super().__init__(
            params,
            {"lr": lr, "momentum": momentum, "weight_decay": weight_decay},
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
        if "history" not in state:
            state["history"] = torch.zeros_like(param)
        history: torch.Tensor = state["history"]
        momentum = group["momentum"]
        previous = history.clone()
        history.mul_(momentum).add_(diff, alpha=local_rate)
        return history * (1 + momentum) - previous * momentum
