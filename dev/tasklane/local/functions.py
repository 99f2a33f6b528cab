"""Loading a function's handler the way Lambda does: CodeUri + ``module.function``."""

from __future__ import annotations

import importlib.util
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tasklane.errors import ConfigurationError

Handler = Callable[[dict, Any], Any]
#: A module is in ``sys.modules`` before it has run: a second thread must wait for it.
_loading = threading.Lock()


def load_handler(code_uri: Path, handler: str, name: str | None = None) -> Handler:
    """Import ``handler`` ("app.lambda_handler") from the directory ``code_uri``.

    Each function gets its own module name, so several ``app.py`` files live side by side in one
    process as they would in separate Lambda containers.
    """
    module_path, _, attribute = handler.rpartition(".")
    if not module_path or not attribute:
        raise ConfigurationError(f"handler {handler!r} is not 'module.function'")
    source = code_uri / (module_path.replace(".", "/") + ".py")
    if not source.exists():
        raise ConfigurationError(f"handler module not found: {source}")
    module_name = f"tasklane_function_{name or code_uri.name}_{module_path.replace('.', '_')}"
    with _loading:
        module = sys.modules.get(module_name)
        if module is None:
            spec = importlib.util.spec_from_file_location(module_name, source)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[module_name]  # not half a module for the next caller
                raise
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ConfigurationError(f"{source} has no function {attribute!r}") from None
