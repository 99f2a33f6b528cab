"""Your application's tasks: this package is the conventional place for them.

It is built by ``sam build`` into its own layer (AppLayer, next to the core one, so editing a
task does not rebuild the dependencies), copied into the Celery worker image, and found by
``tasklane dev`` and ``tasklane invoke``. Name its task modules in the stack's ``TaskModules``
parameter (``myapp.tasks``). Rename the package to your application's name, and list any
libraries your tasks need in ``layers/app/requirements.txt``.
"""
