"""Training loop, device resolution and image-folder data shared by the torchvision models."""
