"""Networks: the backbone registry (image and text tables), building backbones, the transfer models, offline weights."""
