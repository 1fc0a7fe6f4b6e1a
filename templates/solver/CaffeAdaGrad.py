class CaffeAdaGrad(CaffeSolver):
    """Caffe's "AdaGrad" rule (AdaGradSolver::ComputeUpdateValue):

        history += gradient ** 2
        param -= lr * lr_mult * gradient / (sqrt(history) + delta)

    This is torch.optim.Adagrad's rule with eps=delta, written out so that it follows
    Caffe's clipping, iter_size normalisation and L1/L2 weight decay (CaffeSolver).
    """

    def __init__(
        self,
        params: Any,
        *,
        lr: float,
        delta: float = 1e-8,
        weight_decay: float = 0.0,
        regularization_type: str = "L2",
        iter_size: int = 1,
        clip_gradients: float = -1.0,
    ) -> None:
        super().__init__(
            params,
            {"lr": lr, "delta": delta, "weight_decay": weight_decay},
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
        history.addcmul_(diff, diff)
        return diff / (history.sqrt() + group["delta"]) * local_rate
