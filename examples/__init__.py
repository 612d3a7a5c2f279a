"""The how-to's tasks (``examples.tasks``) and its task middleware (``examples.middleware``)."""
