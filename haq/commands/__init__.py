"""Sub-commands of the ``haq`` CLI; each module has ``register(subparsers)``."""
