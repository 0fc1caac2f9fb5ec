"""Training: datasets, augmentation, losses, the stage kinds, and the training API.

``recipe.load_recipe`` gives a typed :class:`~.recipe_types.Recipe`;
``api.train(recipe, stage)`` trains it in this process; ``python -m
xmodelkd_ros.training.train`` is its CLI.
"""
