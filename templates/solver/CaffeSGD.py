class CaffeSGD(CaffeSolver):
    """Caffe's "SGD" rule (SGDSolver::ComputeUpdateValue):

        history = momentum * history + lr * lr_mult * gradient
        param -= history

    Caffe folds the learning rate into the momentum history; torch.optim.SGD does not
    (buf = momentum * buf + gradient; param -= lr * buf). The two agree while the rate
    is constant and part as soon as it changes, so this class reproduces Caffe instead.
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
        history.mul_(group["momentum"]).add_(diff, alpha=local_rate)
        return history
