class Scale(nn.Module):
    """Caffe's Scale layer: x * weight (+ bias), broadcast over `trailing` axes after them."""

    bias: Optional[torch.Tensor]

    def __init__(self, shape: tuple[int, ...], trailing: int, bias: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(shape))
        self.bias = nn.Parameter(torch.zeros(shape)) if bias else None
        self.trailing = trailing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        for _ in range(self.trailing):
            weight = weight.unsqueeze(-1)
        if self.bias is None:
            return x * weight
        bias = self.bias
        for _ in range(self.trailing):
            bias = bias.unsqueeze(-1)
        return x * weight + bias
