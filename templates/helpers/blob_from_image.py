import numpy
import torch


def blob_from_image(
    image: numpy.ndarray,
    size: tuple[int, int],
    scale: float,
    mean: tuple[float, ...],
    swap_rb: bool,
    crop: bool,
    gray: bool,
) -> torch.Tensor:
    """The (1, C, H, W) float32 blob that cv2.dnn.blobFromImage(image, scale, size,
    mean, swap_rb, crop) makes (OpenCV 4.x) of an H x W x C (or H x W) uint8 or float
    image.

    Resize bilinearly to `size` (width, height); with `crop`, resize to cover it keeping
    the aspect ratio and take the centre. Subtract `mean` (one value per channel of the
    blob), multiply by `scale`; `swap_rb` makes BGR RGB. A uint8 image is resized in
    OpenCV's 8-bit fixed point (a few upscaled pixels may differ by one). With `gray`
    the blob has one channel: a BGR image is first made gray as cv2.cvtColor does.
    """
    pixels = torch.from_numpy(numpy.ascontiguousarray(image))
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    channels = pixels.shape[2] if pixels.ndim == 3 else 0
    if channels not in ((1, 3) if gray else (3,)):
        wanted = "H x W (x 1) gray or H x W x 3 BGR" if gray else "H x W x 3 BGR"
        raise ValueError(f"expected an {wanted} image, got shape {tuple(image.shape)}")
    whole = pixels.dtype == torch.uint8
    x = pixels.to(torch.float32)
    if channels == 3 and gray:
        x = _bgr_to_gray(x, whole)
    width, height = size
    if (x.shape[1], x.shape[0]) != (width, height):
        if crop:
            # blobFromImage computes the factor in float32; cv::resize rounds the size.
            factor = float(
                max(
                    numpy.float32(width) / numpy.float32(x.shape[1]),
                    numpy.float32(height) / numpy.float32(x.shape[0]),
                )
            )
            resized = (round(x.shape[1] * factor), round(x.shape[0] * factor))
            x = _resize(x, resized, (1.0 / factor, 1.0 / factor), whole)
            left = int(0.5 * (resized[0] - width))
            top = int(0.5 * (resized[1] - height))
            x = x[top : top + height, left : left + width]
        else:
            steps = (1.0 / (width / x.shape[1]), 1.0 / (height / x.shape[0]))
            x = _resize(x, (width, height), steps, whole)
    if swap_rb:
        x = x.flip(2)
    x = x - torch.tensor(mean, dtype=torch.float32)
    x = x * torch.tensor(scale, dtype=torch.float32)
    return x.permute(2, 0, 1).unsqueeze(0).contiguous()


def _bgr_to_gray(x: torch.Tensor, whole: bool) -> torch.Tensor:
    """cv2.cvtColor(COLOR_BGR2GRAY): 0.299 R + 0.587 G + 0.114 B, in OpenCV's 15-bit
    fixed point for uint8 images."""
    b, g, r = x[:, :, 0:1], x[:, :, 1:2], x[:, :, 2:3]
    if whole:
        b, g, r = b.to(torch.int32), g.to(torch.int32), r.to(torch.int32)
        return ((b * 3735 + g * 19235 + r * 9798 + 16384) >> 15).to(torch.float32)
    return b * 0.114 + g * 0.587 + r * 0.299


def _resize(
    x: torch.Tensor, size: tuple[int, int], steps: tuple[float, float], whole: bool
) -> torch.Tensor:
    """cv::resize with INTER_LINEAR to `size` (width, height), rows first; `steps` are
    the source pixels per output pixel. A uint8 image is resized in OpenCV's 8-bit
    arithmetic: weights in 2048ths, rounded as its vector code rounds."""
    columns = _taps(x.shape[1], size[0], steps[0])
    rows = _taps(x.shape[0], size[1], steps[1])
    if not whole:
        return _interpolate(_interpolate(x, 1, *columns), 0, *rows)
    a0, a1 = _fixed(columns[2])
    pixels = x.to(torch.int64)
    across = pixels[:, columns[0]] * a0[:, None] + pixels[:, columns[1]] * a1[:, None]
    b0, b1 = _fixed(rows[2])
    top = (b0.view(-1, 1, 1) * (across[rows[0]] >> 4)) >> 16
    bottom = (b1.view(-1, 1, 1) * (across[rows[1]] >> 4)) >> 16
    return ((top + bottom + 2) >> 2).clamp(0, 255).to(torch.float32)


def _taps(
    length: int, size: int, step: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where each of `size` output pixels reads: source pixels (first, second) and the
    second's weight. Output pixel i is at source position (i + 0.5) * step - 0.5 (its
    fraction rounded to float32, as OpenCV does); beyond the edges, the edge pixel."""
    position = (torch.arange(size, dtype=torch.float64) + 0.5) * step - 0.5
    first = torch.floor(position)
    weight = (position - first).float()
    first = first.long()
    outside = (first < 0) | (first >= length - 1)
    weight = torch.where(outside, torch.zeros_like(weight), weight)
    first = first.clamp(0, length - 1)
    return first, (first + 1).clamp(max=length - 1), weight


def _fixed(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights (1 - w, w) in OpenCV's fixed point: whole 2048ths."""
    return ((1 - weight) * 2048).round().long(), (weight * 2048).round().long()


def _interpolate(
    x: torch.Tensor,
    dim: int,
    first: torch.Tensor,
    second: torch.Tensor,
    weight: torch.Tensor,
) -> torch.Tensor:
    shape = [1] * x.ndim
    shape[dim] = -1
    weight = weight.view(shape)
    return (
        x.index_select(dim, first) * (1 - weight) + x.index_select(dim, second) * weight
    )
