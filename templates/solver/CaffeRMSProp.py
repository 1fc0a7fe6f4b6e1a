class CaffeRMSProp(CaffeSolver):
    """Caffe's "RMSProp" rule (RMSPropSolver::ComputeUpdateValue):

        history = rms_decay * history + (1 - rms_decay) * gradient ** 2
        param -= lr * lr_mult * gradient / (sqrt(history) + delta)

    rms_decay is torch.optim.RMSprop's alpha and delta its eps; no momentum in Caffe.
    """

    def __init__(
        self,
        params: Any,
        *,
        lr: float,
        rms_decay: float = 0.99,
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
                "rms_decay": rms_decay,
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
        if "history" not in state:
            state["history"] = torch.zeros_like(param)
        history: torch.Tensor = state["history"]
        rms_decay = group["rms_decay"]
        history.mul_(rms_decay).addcmul_(diff, diff, value=1 - rms_decay)
        return diff / (history.sqrt() + group["delta"]) * local_rate
