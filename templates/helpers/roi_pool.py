import torch


def roi_pool(
    features: torch.Tensor, rois: torch.Tensor, pooled: tuple[int, int], spatial_scale: float
) -> torch.Tensor:
    """Faster R-CNN's ROIPooling: each region, rounded to the feature grid, split into bins
    (floor/ceil bounds); each bin's maximum, or 0 for an empty bin."""
    height, width = features.shape[2], features.shape[3]
    regions = rois.reshape(rois.shape[0], -1)
    out = features.new_zeros(regions.shape[0], features.shape[1], pooled[0], pooled[1])
    for r, roi in enumerate(regions.tolist()):
        image = int(roi[0])
        # C's round(): halves away from zero.
        start_w, start_h, end_w, end_h = (
            int(abs(v * spatial_scale) + 0.5) * (1 if v >= 0 else -1) for v in roi[1:5]
        )
        bin_h = torch.tensor(float(max(end_h - start_h + 1, 1))) / pooled[0]
        bin_w = torch.tensor(float(max(end_w - start_w + 1, 1))) / pooled[1]
        for ph in range(pooled[0]):
            h0 = min(max(int(torch.floor(ph * bin_h)) + start_h, 0), height)
            h1 = min(max(int(torch.ceil((ph + 1) * bin_h)) + start_h, 0), height)
            for pw in range(pooled[1]):
                w0 = min(max(int(torch.floor(pw * bin_w)) + start_w, 0), width)
                w1 = min(max(int(torch.ceil((pw + 1) * bin_w)) + start_w, 0), width)
                if h1 > h0 and w1 > w0:
                    out[r, :, ph, pw] = features[image, :, h0:h1, w0:w1].amax(dim=(1, 2))
    return out
