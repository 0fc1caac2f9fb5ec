"""Training: datasets, augmentation, losses, and the train / evaluate command-line tools."""
