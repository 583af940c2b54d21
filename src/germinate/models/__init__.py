"""Models: backbones, their pretrained weights, and the classifier head."""
