"""Image preparation: segmentation, masks, crop, split, augmentation."""
